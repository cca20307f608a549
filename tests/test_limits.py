"""Limits (pipeline/limits.py, docs/reliability.md "Limits"): frame size, aspect ratio, length, file
size and pixel budget checked before decoding with a clear error_type; frames over the maximum
side downscaled at decode (aspect kept, masks and the videos row at the downscaled size); the
model's resize never gives a side of 0; the length cap stops a stream whose header says nothing."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from daq_model.preprocess import preprocess_frames, resized_size
from jobs.cli import main as cli_main
from pipeline.decode import StreamingDecoder, VideoError, classify_decode
from pipeline.inputs import make_ref
from pipeline.isolation import load_predictor
from pipeline.labeler import LabelSettings, label_video
from pipeline.limits import (ASPECT_RATIO, FILE_TOO_LARGE, FRAME_TOO_LARGE, FRAME_TOO_SMALL, PIXEL_BUDGET, TOO_LONG,
                             VideoLimits, parse_size, scaled_size)
from pipeline.model_source import resolve_model
from schemas.validate import validate_output
from tests.made_videos import make_video

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "tests" / "data" / "reference_case1" / "online"
MODEL = ["--checkpoint", str(CASE / "weights.pt"), "--config", str(CASE / "config.yaml")]


def flat_video(path: Path, size: tuple[int, int], frames: int = 3, fmt: str | None = None,
               rate: int = 25) -> Path:
    """Frames of one colour each (fast to encode at any size), ``size`` = (width, height)."""
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            image = np.full((size[1], size[0], 3), (40 * i) % 256, dtype=np.uint8)
            image[: size[1] // 2, : size[0] // 2] = 200  # a square object, for the model
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _open(path: Path, limits: VideoLimits, chunked: bool = False) -> StreamingDecoder:
    return StreamingDecoder(str(path), 4, limits=limits, chunked=chunked).__enter__()


# ---------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("size", [(4000, 1), (1, 4000), (4000, 2), (3, 5), (1, 1), (100000, 7)])
def test_scaled_and_model_sizes_never_reach_zero(size: tuple[int, int]) -> None:
    width, height = size
    for side in (1, 16, 1920):
        w, h = scaled_size(width, height, side)
        assert w >= 1 and h >= 1 and max(w, h) == min(side, max(width, height))
    h, w = resized_size(height, width, 480, 1333)
    assert h >= 1 and w >= 1  # detectron2's rounding alone gives 0 for 4000x1
    cfg = resolve_model(str(CASE / "weights.pt"), str(CASE / "config.yaml")).config
    pre = preprocess_frames(np.zeros((1, height, width, 3), np.uint8) if width * height < 10 ** 6
                            else np.zeros((1, 1, 4000, 3), np.uint8), cfg)
    assert min(pre.image_size) >= 1 and min(pre.padded_size) >= 1


def test_scaled_size_keeps_the_aspect_and_repeats_from_the_longer_side() -> None:
    assert scaled_size(3840, 2160, 1920) == (1920, 1080)
    assert scaled_size(2160, 3840, 1920) == (1080, 1920)
    assert scaled_size(1280, 720, 1920) == (1280, 720)  # never upscaled
    assert scaled_size(4001, 3, 1920) == (1920, 1)
    rng = np.random.default_rng(0)
    for width, height in rng.integers(1, 9000, (200, 2)):
        w, h = scaled_size(int(width), int(height), 1920)
        assert max(w, h) == min(1920, max(width, height))
        scale = max(w, h) / max(width, height)  # the shorter side is the source's x scale, rounded
        assert abs(min(w, h) - min(width, height) * scale) <= 0.5 + 1e-9 or min(w, h) == 1
        # the export of frames repeats the size from the labelled longer side alone
        assert scaled_size(int(width), int(height), max(w, h)) == (w, h)


def test_limits_are_validated_and_sizes_parse() -> None:
    with pytest.raises(ValueError, match="at least min frame side x max aspect ratio"):
        VideoLimits(max_side=100)  # 16 x 10 > 100: a downscale could break the minimum side
    for bad in ({"min_side": 0}, {"max_aspect": 0.5}, {"pixel_budget": float("nan")}, {"max_frames": 0}):
        with pytest.raises(ValueError):
            VideoLimits(**bad)
    assert parse_size("64G") == 64 << 30 and parse_size("500M") == 500 << 20
    assert parse_size("2.5GiB") == int(2.5 * (1 << 30)) and parse_size("1000") == 1000
    for bad in ("", "-1", "abc", "0"):
        with pytest.raises(ValueError):
            parse_size(bad)


# ---------------------------------------------------------------------------- rejections


@pytest.mark.parametrize("size, kind", [((4000, 16), ASPECT_RATIO), ((16, 4000), ASPECT_RATIO),
                                        ((2, 2), FRAME_TOO_SMALL), ((4000, 2), FRAME_TOO_SMALL)])
def test_extreme_frames_are_rejected_before_decoding(tmp_path: Path, size: tuple[int, int], kind: str) -> None:
    video = make_video(tmp_path / f"v_{size[0]}x{size[1]}.mp4", frames=3, size=size, gop=3)
    with pytest.raises(VideoError) as caught:
        _open(video, VideoLimits())
    assert caught.value.kind == kind
    assert str(video) in str(caught.value) and f"{size[0]}x{size[1]}" in str(caught.value)
    # without limits the same file decodes (the limit, not the file, refused it)
    with StreamingDecoder(str(video), 4) as plain:
        assert sum(len(b.frames) for b in plain.batches()) == 3


def test_frames_too_large_to_decode_are_rejected_and_ffmpeg_is_told(tmp_path: Path) -> None:
    video = flat_video(tmp_path / "big.mp4", (640, 360), frames=2)
    with pytest.raises(VideoError) as caught:
        _open(video, VideoLimits(max_source_pixels=640 * 360 - 1))
    assert caught.value.kind == FRAME_TOO_LARGE and "--max-source-pixels" in str(caught.value)
    # a header that understates the size: FFmpeg's own max_pixels refuses to decode the frames
    decoder = _open(video, VideoLimits(max_source_pixels=640 * 360))
    decoder._container.streams.video[0].codec_context.options = {"max_pixels": str(640 * 360 - 1)}
    assert sum(len(b.frames) for b in decoder.batches()) == 0
    decoder.close()
    assert classify_decode(decoder.stats, decoder.info)[0] == "failed"


def test_a_lying_header_is_caught_on_the_first_frame(tmp_path: Path) -> None:
    video = make_video(tmp_path / "tiny.mp4", frames=3, size=(8, 8), gop=3)
    decoder = _open(video, VideoLimits(min_side=4, max_side=40))  # the header passes: 8 >= 4
    # as if the header had said another size: the decoded frames are checked again
    decoder.limits = VideoLimits(min_side=10, max_side=100)
    assert list(decoder.batches()) == []
    assert decoder.stats.rejected and decoder.stats.rejected[0] == FRAME_TOO_SMALL
    assert classify_decode(decoder.stats, decoder.info)[:2] == ("failed", FRAME_TOO_SMALL)
    decoder.close()


def test_file_size_duration_and_pixel_budget_are_checked_on_the_header(tmp_path: Path) -> None:
    video = flat_video(tmp_path / "v.mp4", (64, 48), frames=50)  # 2 s at 25 fps
    size = video.stat().st_size
    with pytest.raises(VideoError) as caught:
        _open(video, VideoLimits(max_file_bytes=size - 1))
    assert caught.value.kind == FILE_TOO_LARGE and "--max-file-size" in str(caught.value)
    with pytest.raises(VideoError) as caught:
        _open(video, VideoLimits(max_duration_s=1.5))
    assert caught.value.kind == TOO_LONG and "--chunk-frames" in str(caught.value)
    with pytest.raises(VideoError) as caught:
        _open(video, VideoLimits(max_frames=49))
    assert caught.value.kind == TOO_LONG and "--chunk-frames" in str(caught.value)
    _open(video, VideoLimits(max_frames=49, max_duration_s=1.5), chunked=True).close()  # chunks take it
    with pytest.raises(VideoError) as caught:
        _open(video, VideoLimits(pixel_budget=64 * 48 * 49), chunked=True)
    assert caught.value.kind == PIXEL_BUDGET
    _open(video, VideoLimits(pixel_budget=64 * 48 * 50, max_frames=50)).close()
    # a header claiming more frames than the file has bytes is called damaged
    damaged = VideoLimits().check_length(524296, None, 25.0, 64, 48, file_bytes=30000)
    assert damaged.kind == TOO_LONG and "header is probably damaged" in damaged.message
    assert "damaged" not in VideoLimits().check_length(524296, None, 25.0, 64, 48, file_bytes=10 ** 7).message


def test_a_stream_without_length_stops_at_the_cap_and_is_partial(tmp_path: Path) -> None:
    video = make_video(tmp_path / "raw.h264", frames=60, size=(32, 24), fmt="h264")  # no count, no duration
    decoder = _open(video, VideoLimits(max_frames=25))
    assert decoder.info.frames_expected is None
    frames = sum(len(b.frames) for b in decoder.batches())
    decoder.close()
    status, kind, message = classify_decode(decoder.stats, decoder.info)
    assert (frames, status, kind) == (25, "partial", TOO_LONG) and "--max-frames" in message
    decoder = _open(video, VideoLimits(pixel_budget=32 * 24 * 30), chunked=True)
    assert sum(len(b.frames) for b in decoder.batches()) == 30
    assert classify_decode(decoder.stats, decoder.info)[:2] == ("partial", PIXEL_BUDGET)
    decoder.close()


# ---------------------------------------------------------------------------- downscale


def test_large_frames_are_downscaled_at_decode_keeping_the_aspect(tmp_path: Path) -> None:
    video = flat_video(tmp_path / "big.mp4", (2400, 1350), frames=2)
    with StreamingDecoder(str(video), 4, limits=VideoLimits()) as decoder:  # default max side 1920
        batch = next(decoder.batches())
    assert batch.frames.shape[1:] == (1080, 1920, 3)
    assert (decoder.stats.width, decoder.stats.height) == (1920, 1080)
    assert (decoder.stats.source_width, decoder.stats.source_height) == (2400, 1350)
    # rotation: the longer side is bounded whatever the display rotation
    rotated = ROOT / "tests" / "data" / "videos_edge" / "rotated_90.mp4"  # 320x180 coded, 90 degrees
    with StreamingDecoder(str(rotated), 4, limits=VideoLimits(min_side=8, max_side=160)) as decoder:
        batch = next(decoder.batches())
    assert batch.frames.shape[1:3] == (160, 90)
    assert (decoder.stats.source_width, decoder.stats.source_height) == (180, 320)


def test_a_downscaled_video_is_labelled_at_its_stored_size(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    video = flat_video(tmp_path / "v.mp4", (640, 360), frames=4)
    spec = resolve_model(str(CASE / "weights.pt"), str(CASE / "config.yaml"))
    loaded = load_predictor(spec, "cpu")
    settings = LabelSettings(frames_per_push=2, limits=VideoLimits(min_side=8, max_side=320))
    labels = label_video(make_ref(str(video)), loaded.predictor, loaded.config, spec.provenance(), settings)
    row = labels.video_row
    assert row["status"] == "ok", row["error_message"]
    assert (row["width"], row["height"], row["source_width"], row["source_height"]) == (320, 180, 640, 360)
    masks = labels.tracks.column("mask").to_pylist()
    assert masks and all(m["size"] == [180, 320] for m in masks)
    assert all(0 <= b[0] and b[0] + b[2] <= 320 and b[1] + b[3] <= 180 for b in labels.tracks.column("bbox").to_pylist())
    # an extreme frame through the model path: rejected by the limits, and without them the
    # model still never sees a side of 0
    thin = make_video(tmp_path / "thin.mp4", frames=2, size=(4000, 2), gop=2)
    rejected = label_video(make_ref(str(thin)), loaded.predictor, loaded.config, spec.provenance(), LabelSettings())
    assert (rejected.status, rejected.video_row["error_type"]) == ("failed", FRAME_TOO_SMALL)
    loose = LabelSettings(limits=VideoLimits(min_side=1, max_side=4000, max_aspect=4000))
    labelled = label_video(make_ref(str(thin)), loaded.predictor, loaded.config, spec.provenance(), loose)
    assert labelled.status == "ok", labelled.video_row["error_message"]
    assert (labelled.video_row["width"], labelled.video_row["height"]) == (4000, 2)


# ---------------------------------------------------------------------------- the job


def test_bad_limit_options_exit_2(tmp_path: Path) -> None:
    video = flat_video(tmp_path / "v.mp4", (64, 48))
    assert cli_main(["label", str(video), str(tmp_path / "out"), *MODEL, "--max-frame-side", "100"]) == 2
    assert cli_main(["label", str(video), str(tmp_path / "out"), *MODEL, "--min-frame-side", "0"]) == 2
    assert not (tmp_path / "out" / "videos").exists()


@pytest.mark.slow
def test_job_rejects_downscales_and_chunks_by_the_limits(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    videos = {
        "wide": make_video(tmp_path / "wide_4000x16.mp4", frames=3, size=(4000, 16), gop=3),
        "tall": make_video(tmp_path / "tall_16x4000.mp4", frames=3, size=(16, 4000), gop=3),
        "tiny": make_video(tmp_path / "tiny_2x2.mp4", frames=3, size=(2, 2), gop=3),
        "long": make_video(tmp_path / "long_32x24.mp4", frames=150, size=(32, 24), gop=25),  # 6 s
        "big": flat_video(tmp_path / "big_640x360.mp4", (640, 360), frames=3),
    }
    listing = tmp_path / "videos.txt"
    listing.write_text("".join(f"{v}\n" for v in videos.values()))
    out = tmp_path / "out"
    common = [*MODEL, "--workers", "1", "--torch-threads", "1", "--max-duration", "4",
              "--max-frame-side", "320", "--min-frame-side", "16", "--max-aspect-ratio", "20"]
    assert cli_main(["label", str(listing), str(out), *common]) == 0
    assert "too_long 1" in capsys.readouterr().out
    rows = {Path(r["source_url"]).name: r for r in pq.read_table(out / "videos").to_pylist()}
    assert len(rows) == len(videos)
    expect = {"wide": ("failed", ASPECT_RATIO), "tall": ("failed", ASPECT_RATIO),
              "tiny": ("failed", FRAME_TOO_SMALL), "long": ("failed", TOO_LONG), "big": ("ok", None)}
    for key, (status, kind) in expect.items():
        row = rows[videos[key].name]
        assert (row["status"], row["error_type"]) == (status, kind), row
        if kind:
            assert videos[key].name in row["error_message"]
    assert "--chunk-frames" in rows[videos["long"].name]["error_message"]
    assert rows[videos["long"].name]["duration_s"] == pytest.approx(6.0, abs=0.1)  # recorded anyway
    big = rows[videos["big"].name]
    assert (big["width"], big["height"], big["source_width"], big["source_height"]) == (320, 180, 640, 360)
    sizes = {tuple(m["size"]) for m in pq.read_table(out / "tracks").column("mask").to_pylist()}
    assert sizes <= {(180, 320), (24, 32)}
    assert validate_output(str(out)).ok
    # the frames export repeats the downscale, so its images match the masks
    dest = tmp_path / "export"
    assert cli_main(["export", str(out), str(dest), "--format", "ytvis", "--with-frames",
                     "--video", big["video_id"]]) == 0
    images = sorted((dest / "images" / big["video_id"]).glob("*.jpg"))
    assert len(images) == 3
    from PIL import Image
    assert {Image.open(p).size for p in images} == {(320, 180)}

    # with --chunk-frames the long video is labelled (in chunks) instead of rejected
    out2 = tmp_path / "out2"
    assert cli_main(["label", str(videos["long"]), str(out2), *common, "--chunk-frames", "60",
                     "--chunk-overlap", "8"]) == 0
    row = pq.read_table(out2 / "videos").to_pylist()[0]
    assert (row["status"], row["frames_decoded"]) == ("ok", 150), row


def test_a_header_claiming_more_frames_than_bytes_plans_no_chunks(tmp_path: Path) -> None:
    """A damaged Matroska duration (found by the fuzzer's header flips) would fan a small file
    out into thousands of chunks; a file with fewer bytes than frames is labelled whole."""
    import struct

    from pipeline.chunked import _SplitFn
    from pipeline.chunking import ChunkSettings
    from tests.fuzz_videos import copy_packets

    source = copy_packets(ROOT / "samples" / "videos" / "05_default_juggle.mp4", tmp_path / "j.mkv",
                          fmt="matroska")
    data = bytearray(source.read_bytes())
    at = data.find(b"\x44\x89\x88")  # Segment Info's Duration, an 8-byte float in milliseconds
    data[at + 3:at + 11] = struct.pack(">d", 1e7)  # 10,000 s: 240,000 frames at 24 fps
    lying = tmp_path / "lying.mkv"
    lying.write_bytes(data)
    with StreamingDecoder(str(lying), 4, limits=VideoLimits(), chunked=True) as decoder:
        assert decoder.info.frames_expected == 240_000 > decoder.info.file_bytes
    split = _SplitFn(ChunkSettings(3000, 16), {}, VideoLimits())
    out = list(split.process(make_ref(str(lying))))
    assert len(out) == 1 and out[0].url.endswith("lying.mkv")  # the VideoRef itself: labelled whole
    honest = list(split.process(make_ref(str(source))))
    assert len(honest) == 1  # 8 frames: one chunk either way

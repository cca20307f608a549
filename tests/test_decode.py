"""Streaming decode against the edge-case manifest's expected outcomes (status, frames, errors)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import fsspec
import numpy as np
import pytest

from pipeline import decode
from pipeline.decode import StreamingDecoder, VideoError, classify_decode, prefetch

EDGE = Path(__file__).resolve().parent / "data" / "videos_edge"
SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "videos"

# manifest error_kind -> what our decoder reports (same names; kept explicit so a rename shows)
KIND = {"empty_file": decode.EMPTY_FILE, "not_a_video": decode.NOT_A_VIDEO,
        "no_video_stream": decode.NO_VIDEO_STREAM, "truncated": decode.TRUNCATED}


def _manifest(directory: Path) -> list[dict]:
    return json.loads((directory / "manifest.json").read_text())["files"]


def decode_all(url: str, batch_size: int = 7) -> tuple[str, str | None, str | None, StreamingDecoder, list]:
    """(status, kind, message, decoder, batch shapes) the way the labeler classifies a video."""
    with StreamingDecoder(url, batch_size) as decoder:
        shapes = [b.frames.shape for b in decoder.batches()]
    status, kind, message = classify_decode(decoder.stats, decoder.info)
    return status, kind, message, decoder, shapes


@pytest.mark.parametrize("entry", _manifest(EDGE), ids=lambda e: e["name"])
def test_edge_file_matches_manifest(entry: dict) -> None:
    expected = entry["expected"]
    url = str(EDGE / entry["name"])
    try:
        status, kind, message, decoder, shapes = decode_all(url)
    except VideoError as exc:
        assert expected["status"] == "failed", f"{entry['name']}: unexpected open error {exc}"
        assert exc.kind == KIND[expected["error_kind"]]
        assert entry["name"] in str(exc)  # the message names the file
        return
    assert status in expected["accept_status"], (entry["name"], status, message)
    frames = decoder.stats.frames
    assert expected["frames_min"] <= frames <= expected["frames_max"]
    assert frames == expected["frames"]  # the tolerant decoder gets every decodable frame
    assert sum(s[0] for s in shapes) == frames
    if status != "ok":
        assert kind == KIND[expected["error_kind"]] and message
    else:
        assert kind is None
        # ok: displayed size = manifest display size (rotation honoured)
        assert {s[1:] for s in shapes} == {(entry["display_height"], entry["display_width"], 3)}
        assert decoder.stats.rotation == entry["rotation"]


def test_truncated_reports_expected_count_and_first_error() -> None:
    status, kind, message, decoder, _ = decode_all(str(EDGE / "truncated_60pct.mp4"))
    assert (status, kind) == ("partial", decode.TRUNCATED)
    assert decoder.info.frames_expected == 120 and decoder.info.frames_expected_source == "header"
    assert decoder.stats.bad_packets == 1
    assert "68 of 120" in message


def test_rotated_frames_are_displayed_upright() -> None:
    """rotated_90.mp4 is 05_default_juggle.mp4 coded 320x180 with a 90 deg display matrix: its
    decoded frames must match the source turned counter-clockwise, not clockwise."""
    from PIL import Image

    with StreamingDecoder(str(EDGE / "rotated_90.mp4"), 1) as rotated:
        first = next(iter(rotated.batches())).frames[0].astype(np.float32)
    with StreamingDecoder(str(SAMPLES / "05_default_juggle.mp4"), 1) as source:
        original = next(iter(source.batches())).frames[0]
    small = np.asarray(Image.fromarray(original).resize((320, 180))).astype(np.float32)
    ccw = np.abs(np.rot90(small, 1) - first).mean()
    cw = np.abs(np.rot90(small, 3) - first).mean()
    assert first.shape == (320, 180, 3)
    assert ccw < 10 < cw


@pytest.mark.parametrize("entry", _manifest(SAMPLES), ids=lambda e: e["name"])
def test_sample_corpus_decodes_fully(entry: dict) -> None:
    status, _, _, decoder, shapes = decode_all(str(SAMPLES / entry["name"]), batch_size=16)
    assert status == "ok" and decoder.stats.frames == entry["frames"]
    assert all(s[0] <= 16 for s in shapes)
    assert decoder.info.fps == pytest.approx(entry["fps_float"], rel=1e-4)


def test_timestamps_are_presentation_times_including_flushed_frames() -> None:
    with StreamingDecoder(str(SAMPLES / "02_cups.mp4"), 8) as decoder:
        times = [t for b in decoder.batches() for t in b.timestamps]
    assert len(times) == 60 and np.isfinite(times).all()
    assert times[-1] == pytest.approx(1.9686333, abs=1e-6)  # manifest last_pts_s
    assert np.all(np.diff(times) > 0)


def test_missing_file_is_unreadable() -> None:
    with pytest.raises(VideoError) as info:
        with StreamingDecoder(str(EDGE / "does_not_exist.mp4")):
            pass
    assert info.value.kind == decode.UNREADABLE and "does_not_exist.mp4" in str(info.value)


def test_decodes_through_a_non_local_fsspec_filesystem() -> None:
    data = (EDGE / "odd_321x183.webm").read_bytes()
    with fsspec.open("memory://corpus/odd.webm", "wb") as handle:
        handle.write(data)
    status, _, _, decoder, shapes = decode_all("memory://corpus/odd.webm")
    assert status == "ok" and decoder.stats.frames == 30
    assert shapes[0][1:] == (183, 321, 3)


def test_truncated_copy_of_a_sample_is_partial_not_an_error(tmp_path: Path) -> None:
    """Cut a sample clip ourselves (not a manifest file): frames that are there get decoded."""
    data = (SAMPLES / "03_blocks.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    status, kind, _, decoder, _ = decode_all(str(cut))
    assert status == "partial" and kind == decode.TRUNCATED
    assert 0 < decoder.stats.frames < 60


def test_prefetch_keeps_order_bounds_queue_and_reraises() -> None:
    produced: list[int] = []

    def items():
        for i in range(10):
            produced.append(i)
            yield i
        raise RuntimeError("boom")

    out = []
    with pytest.raises(RuntimeError, match="boom"):
        for item in prefetch(items(), depth=2):
            out.append(item)
            assert len(produced) - len(out) <= 3  # at most depth items (+1 in hand) ahead
    assert out == list(range(10))


def test_prefetch_stops_its_thread_when_the_consumer_stops() -> None:
    before = threading.active_count()
    gen = prefetch(iter(range(1000)), depth=2)
    assert next(gen) == 0
    gen.close()
    assert threading.active_count() == before

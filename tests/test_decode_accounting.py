"""Frame accounting (issue 27, item 5): frames_expected is what a player shows, and partial
means frames were really lost. Videos are made in the test with PyAV."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.made_videos import keyframe_frame_indices, make_video, stream_copy_cut

from pipeline import decode
from pipeline.decode import StreamingDecoder, classify_decode

VFR_MS = (10, 10, 90)  # a cycle of frame intervals: average 36.7 ms, nothing like 1/rate


def _decode(path: Path) -> tuple[str, str | None, str | None, StreamingDecoder, list[float]]:
    with StreamingDecoder(str(path), 4) as decoder:
        times = [t for b in decoder.batches() for t in b.timestamps]
    status, kind, message = classify_decode(decoder.stats, decoder.info)
    return status, kind, message, decoder, times


def test_stream_copy_cut_after_a_keyframe_is_ok_and_counts_the_frames_shown(tmp_path: Path) -> None:
    source = make_video(tmp_path / "gop.mp4", frames=60, gop=12)
    _, keys = keyframe_frame_indices(source)
    cut_at = keys[2] + 6  # six frames after a keyframe: they are needed, but not shown
    cut, key = stream_copy_cut(source, tmp_path / "cut.mp4", cut_at)
    status, kind, message, decoder, times = _decode(cut)
    shown = 60 - cut_at
    assert decoder.info.frames_header == 60 - key  # the samples in the file include the hidden ones
    assert decoder.stats.frames == shown
    assert (decoder.info.frames_expected, decoder.info.frames_expected_source) == (shown, "edit_list")
    assert (status, kind, message) == ("ok", None, None)
    assert times[0] == pytest.approx(0.0) and min(times) >= 0


def test_a_truncated_stream_copy_cut_is_still_partial(tmp_path: Path) -> None:
    source = make_video(tmp_path / "gop.mp4", frames=60, gop=12)
    _, keys = keyframe_frame_indices(source)
    cut, _ = stream_copy_cut(source, tmp_path / "cut.mp4", keys[1] + 3)
    data = cut.read_bytes()
    short = tmp_path / "short.mp4"
    short.write_bytes(data[: int(len(data) * 0.6)])
    status, kind, message, decoder, _ = _decode(short)
    assert (status, kind) == ("partial", decode.TRUNCATED)
    assert decoder.info.frames_expected_source == "edit_list"
    assert decoder.stats.frames < decoder.info.frames_expected and "edit_list" in message


@pytest.mark.parametrize("fmt,codec,ext,source", [
    ("mp4", "libx264", "mp4", "header"),
    ("matroska", "libx264", "mkv", "packets"),
    ("webm", "libvpx-vp9", "webm", "packets"),
])
def test_variable_frame_rate_is_ok_and_counted_exactly(tmp_path: Path, fmt: str, codec: str, ext: str,
                                                       source: str) -> None:
    video = make_video(tmp_path / f"vfr.{ext}", frames=45, fmt=fmt, codec=codec, intervals_ms=VFR_MS)
    status, kind, message, decoder, times = _decode(video)
    assert decoder.stats.frames == 45
    assert (decoder.info.frames_expected, decoder.info.frames_expected_source) == (45, source)
    assert (status, kind, message) == ("ok", None, None)
    # duration x rate is off for such a stream: it was the old estimate and said partial
    assert abs(decoder.info.frames_estimate - 45) > 1 or source == "header"


@pytest.mark.parametrize("ext,fmt", [("mkv", "matroska"), ("webm", "webm")])
def test_truncated_matroska_is_partial_against_the_duration_estimate(tmp_path: Path, ext: str, fmt: str) -> None:
    codec = "libvpx-vp9" if ext == "webm" else "libx264"
    video = make_video(tmp_path / f"cfr.{ext}", frames=60, fmt=fmt, codec=codec)
    data = video.read_bytes()
    short = tmp_path / f"short.{ext}"
    short.write_bytes(data[: len(data) // 2])
    status, kind, _, decoder, _ = _decode(short)
    assert status == "partial" and kind in (decode.TRUNCATED, decode.CORRUPT)
    assert decoder.info.frames_expected_source == "duration"
    assert 0 < decoder.stats.frames < 60


def test_frames_expected_before_decoding_is_the_announcement(tmp_path: Path) -> None:
    video = make_video(tmp_path / "cfr.mkv", frames=30, fmt="matroska")
    with StreamingDecoder(str(video), 4) as decoder:
        assert decoder.info.frames_expected_source == "duration"
        assert decoder.info.frames_expected == 30
        for _ in decoder.batches():
            pass
    assert decoder.info.frames_expected_source == "packets"

"""The decoder's fast paths give exactly what plain PyAV gives: one reused swscale context gives
the pixels of ``frame.to_ndarray(format="rgb24")`` (and of ``frame.reformat`` when downscaling),
the in-place batch copy keeps rotation, and integer timestamps equal ``float(pts * time_base)``.
And the decode-speed table in docs/results/decode_speed is what its JSON files say."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.decode import StreamingDecoder
from pipeline.limits import scaled_size

ROOT = Path(__file__).resolve().parents[1]
EDGE = ROOT / "tests" / "data" / "videos_edge"
VIDEOS = [ROOT / "samples" / "videos" / "01_dog.mp4", EDGE / "rotated_90.mp4", EDGE / "odd_321x183.webm",
          EDGE / "hevc.mkv", EDGE / "truncated_60pct.mp4"]
RESULTS = ROOT / "docs" / "results" / "decode_speed"


def _plain(path: Path, max_side: int | None) -> tuple[list[np.ndarray], list[float | None]]:
    """Every frame as plain PyAV converts it (a new swscale context per frame), rotated as shown;
    a packet whose decode fails is skipped (the truncated file has one), as our decoder does."""
    frames, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = []
        for packet in container.demux(stream):
            try:
                decoded.extend(packet.decode())
            except av.error.InvalidDataError:
                continue
        for frame in decoded:
            if max_side is None:
                rgb = frame.to_ndarray(format="rgb24")
            else:
                width, height = scaled_size(frame.width, frame.height, max_side)
                rgb = frame.reformat(width=width, height=height, format="rgb24",
                                     interpolation="AREA").to_ndarray()
            rotation = int(round((frame.rotation or 0) / 90.0)) % 4
            frames.append(np.rot90(rgb, k=rotation))
            times.append(None if frame.pts is None else float(frame.pts * stream.time_base))
    return frames, times


@pytest.mark.parametrize("path", VIDEOS, ids=lambda p: p.name)
@pytest.mark.parametrize("max_side", [None, 160])
def test_frames_and_times_are_plain_pyavs(path: Path, max_side: int | None) -> None:
    expected, times = _plain(path, max_side)
    with StreamingDecoder(str(path), batch_size=4, max_side=max_side) as decoder:
        batches = list(decoder.batches())
    frames = [frame for batch in batches for frame in batch.frames]
    assert len(frames) == len(expected) > 0
    for i, (ours, theirs) in enumerate(zip(frames, expected)):
        assert ours.shape == theirs.shape and np.array_equal(ours, theirs), (path.name, i)
    assert all(batch.frames.flags.c_contiguous and batch.frames.dtype == np.uint8 for batch in batches)
    assert [len(b.frames) for b in batches[:-1]] == [4] * (len(batches) - 1)
    assert [t for batch in batches for t in batch.timestamps] == [t for t in times]
    if path.name == "rotated_90.mp4":  # coded 320x180, shown portrait
        assert frames[0].shape[:2] == ((320, 180) if max_side is None else (160, 90))


def test_a_batch_is_not_overwritten_by_the_next() -> None:
    """Each batch owns its array: holding one while decoding on leaves it unchanged."""
    with StreamingDecoder(str(VIDEOS[0]), batch_size=4) as decoder:
        batches = decoder.batches()
        first = next(batches)
        kept = first.frames.copy()
        for _ in batches:
            pass
    assert np.array_equal(first.frames, kept)


def test_results_table_is_the_json_files() -> None:
    table = (RESULTS / "README.md").read_text()
    runs = sorted(RESULTS.glob("*run*.json"))
    assert len(runs) == 8
    for path in runs:
        figures = json.loads(path.read_text())
        label = path.stem.replace("_run", " ").replace("run", "after ")
        ratio = f"{figures['decode_ours_over_pyav']:.3f}"
        row = (f"| {label} | {figures['decode_fps_ours']:.1f} | {figures['decode_fps_pyav']:.1f} | "
               f"{'**' + ratio + '**' if label.startswith('after') else ratio} | "
               f"{figures['decode_ours_over_pyav_median_round']:.3f} | "
               f"{figures['decode_fps_pyav_reused_reformatter']:.1f} | "
               f"{figures['decode_ours_over_pyav_reused_reformatter']:.3f} |")
        assert row in table, row
        if label.startswith("after"):
            assert figures["decode_ours_over_pyav"] >= 0.9

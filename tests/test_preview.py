"""``daq-label preview``: the MP4 decodes (PyAV) to the frames asked for at the labelled size, its
pixels carry the overlays where the masks are, the contact sheet has the documented grid; an
unknown or failed VIDEO_ID exits 2 with a message naming it. Overlay drawing on its own."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from daq_label import FrameMasks, open_output
from daq_label.overlay import OverlayStyle, draw_overlay, evenly_spaced, track_colour
from daq_label.preview import SHEET_BACKGROUND, SHEET_GAP, resolve_video
from jobs.cli import main as cli_main
from pipeline.decode import StreamingDecoder
from tests.conftest_outputs import labelled_output  # noqa: F401 - fixture

CLIP = "03_blocks.mp4"


def _video(out, name: str) -> dict:
    return next(r for r in out.videos().to_pylist() if r["source_url"].endswith("/" + name))


def _decode(path: Path) -> tuple[list[np.ndarray], str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream.codec_context.name


def _raw_frames(url: str, n: int) -> list[np.ndarray]:
    frames: list[np.ndarray] = []
    with StreamingDecoder(url) as decoder:
        for batch in decoder.batches():
            frames.extend(batch.frames)
    return frames[:n]


def _check_overlay_pixels(encoded: list[np.ndarray], out, row: dict) -> None:
    raw = _raw_frames(row["source_url"], len(encoded))
    masks = list(out.iter_frames(row["video_id"]))[: len(encoded)]
    inside, outside, mask_pixels = [], [], 0
    for picture, plain, frame in zip(encoded, raw, masks):
        diff = np.abs(picture.astype(np.int16) - plain.astype(np.int16)).mean(axis=2)
        union = frame.masks.any(axis=0) if len(frame.masks) else np.zeros(diff.shape, bool)
        mask_pixels += int(union.sum())
        if union.any():
            inside.append(diff[union].mean())
        outside.append(np.median(diff[~union]))
    assert mask_pixels > 200, "the fixture's clip should carry masks in the rendered frames"
    # blended colour inside the masks; outside only compression noise (median) and label boxes
    assert np.mean(inside) > 15, inside
    assert np.mean(inside) > 4 * max(np.mean(outside), 1.0), (inside, outside)


def test_preview_mp4_and_contact_sheet(labelled_output: Path, tmp_path: Path) -> None:  # noqa: F811
    out = open_output(str(labelled_output))
    row = _video(out, CLIP)
    rc = cli_main(["preview", str(labelled_output), CLIP, "--out", str(tmp_path), "--max-frames", "10",
                   "--sheet-frames", "6", "--columns", "4", "--tile-width", "200"])
    assert rc == 0
    video, sheet = tmp_path / f"{row['video_id']}.mp4", tmp_path / f"{row['video_id']}_sheet.png"
    frames, codec = _decode(video)
    assert codec == "h264"
    assert len(frames) == 10
    assert all(f.shape == (row["height"], row["width"], 3) for f in frames)  # 568x320: even already
    _check_overlay_pixels(frames, out, row)

    picture = np.asarray(Image.open(sheet).convert("RGB"))
    cols, rows, tile_w = 4, math.ceil(6 / 4), 200
    tile_h = round(row["height"] * tile_w / row["width"])
    assert picture.shape == (rows * tile_h + (rows + 1) * SHEET_GAP, cols * tile_w + (cols + 1) * SHEET_GAP, 3)
    background = np.array(SHEET_BACKGROUND, np.uint8)
    for k in range(cols * rows):
        r, c = divmod(k, cols)
        x, y = SHEET_GAP + c * (tile_w + SHEET_GAP), SHEET_GAP + r * (tile_h + SHEET_GAP)
        tile = picture[y:y + tile_h, x:x + tile_w]
        empty = bool((tile == background).all())
        assert empty == (k >= 6), f"tile {k}: {'empty' if empty else 'filled'}"
    # the sampled frames: tile k is (a thumbnail of) rendered frame evenly_spaced(10, 6)[k]
    picks = evenly_spaced(10, 6)
    assert picks[0] == 0 and picks[-1] == 9 and len(picks) == 6
    for k, index in enumerate(picks[:2]):
        expected = np.asarray(Image.fromarray(frames[index]).resize((tile_w, tile_h), Image.LANCZOS), np.int16)
        x = SHEET_GAP + k * (tile_w + SHEET_GAP)
        top = picture[SHEET_GAP:SHEET_GAP + tile_h - 20, x:x + tile_w].astype(np.int16)
        assert np.abs(top - expected[: tile_h - 20]).mean() < 6  # encode noise only


def test_preview_mpeg4_encoder(labelled_output: Path, tmp_path: Path) -> None:  # noqa: F811
    out = open_output(str(labelled_output))
    row = _video(out, CLIP)
    assert cli_main(["preview", str(labelled_output), row["video_id"][:8], "--out", str(tmp_path),
                     "--encoder", "mpeg4", "--sheet-frames", "3"]) == 0
    frames, codec = _decode(tmp_path / f"{row['video_id']}.mp4")
    assert codec == "mpeg4"
    assert len(frames) == row["frames_decoded"]
    assert row["width"] > 320  # default tile width 320: one row of three
    assert Image.open(tmp_path / f"{row['video_id']}_sheet.png").size == (
        3 * 320 + 4 * SHEET_GAP, round(row["height"] * 320 / row["width"]) + 2 * SHEET_GAP)


def test_preview_unknown_or_failed_video_exits_2(labelled_output: Path, tmp_path: Path,  # noqa: F811
                                                 caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert cli_main(["preview", str(labelled_output), "no_such_video", "--out", str(tmp_path)]) == 2
    assert "has no video 'no_such_video'" in caplog.text
    assert "03_blocks.mp4" in caplog.text  # the message lists videos that are there
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert cli_main(["preview", str(labelled_output), "not_a_video.mp4", "--out", str(tmp_path)]) == 2
    assert "failed to label, nothing to preview: not_a_video" in caplog.text
    assert not list(tmp_path.iterdir()), "nothing is written for an unusable VIDEO_ID"


def test_resolve_video_names(labelled_output: Path) -> None:  # noqa: F811
    out = open_output(str(labelled_output))
    row = _video(out, CLIP)
    for name in (row["video_id"], row["video_id"][:6], CLIP, row["source_url"]):
        assert resolve_video(out, name) == row["video_id"], name


def test_draw_overlay_touches_masks_and_labels_only() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    masks = np.zeros((2, 120, 200), bool)
    masks[0, 60:100, 20:80] = True
    masks[1, 70:110, 120:190] = True
    frame = FrameMasks("v", 0, np.array([3, 7], np.int32), np.array([1, 2], np.int32), ("disc", "star"),
                       np.array([0.9, 0.4], np.float32), masks)
    drawn = draw_overlay(image, frame)
    changed = (drawn != image).any(axis=2)
    assert changed[masks[0]].mean() > 0.95 and changed[masks[1]].mean() > 0.95
    # outline pixels are the track's own colour
    assert tuple(drawn[60, 50]) == track_colour(3) and tuple(drawn[109, 150]) == track_colour(7)
    # labels sit above each box; far from masks and labels nothing changes
    assert changed[45:60, 20:80].any() and changed[55:70, 120:190].any()
    assert not changed[:40].any() and not changed[:, 90:110].any()
    no_labels = draw_overlay(image, frame, OverlayStyle(labels=False))
    assert not ((no_labels != image).any(axis=2) & ~masks.any(axis=0)).any()
    with pytest.raises(ValueError):
        draw_overlay(image[:100], frame)


def test_odd_frame_sizes_are_padded_for_h264() -> None:
    from daq_label.preview import _even

    image = np.full((183, 321, 3), 200, np.uint8)
    padded = _even(image)
    assert padded.shape == (184, 322, 3)
    assert (padded[:183, :321] == image).all() and not padded[183].any() and not padded[:, 321].any()
    assert _even(padded) is padded

"""Masks to COCO RLE rows, the instance -> track mapping, summaries and label-health figures."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from daq_model.outputs import FrameMasks, FrameTracks, Instance
from pipeline.tables import LabelledInstance, health, summary_table, tracks_table
from pipeline.tracks import TrackStream, encode_masks, rows_from_frame_masks
from schemas.tables import TRACK_SUMMARY_V1, TRACKS_V1

H, W = 37, 53  # odd sizes on purpose


def _masks(rng: np.random.Generator, n: int) -> np.ndarray:
    masks = rng.random((n, H, W)) > 0.7
    masks[-1] = False  # one empty mask
    return masks


def test_encode_masks_round_trips_and_skips_empty() -> None:
    rng = np.random.default_rng(0)
    masks = _masks(rng, 4)
    encoded = encode_masks(masks)
    assert encoded[-1] is None
    for mask, item in zip(masks[:-1], encoded[:-1]):
        counts, area, bbox = item
        decoded = mask_utils.decode({"size": [H, W], "counts": counts.encode()})
        assert decoded.shape == (H, W) and np.array_equal(decoded.astype(bool), mask)
        ys, xs = np.nonzero(mask)
        assert area == mask.sum()
        assert bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def _frame(t: int, ids: list[int], masks: np.ndarray, valid: list[bool] | None = None) -> FrameTracks:
    n = len(ids)
    return FrameTracks(frame_index=t, track_ids=np.asarray(ids, np.int64),
                       valid=np.asarray(valid if valid else [True] * n, bool),
                       scores=np.linspace(0.9, 0.5, n).astype(np.float32),
                       labels=np.zeros(n, np.int64), masks=masks)


def test_online_instances_take_their_tracks_masks_from_the_stream() -> None:
    rng = np.random.default_rng(1)
    stream = TrackStream(encode_masks=True)
    frames = [_masks(rng, 3) for _ in range(4)]
    for t, masks in enumerate(frames):
        stream.add(_frame(t, [7, 8, 9], masks, valid=[True, t != 2, True]))
    # track 7 appears twice (two labels), track 9 always has an empty mask (last of each frame)
    instances = [Instance(0, 7, 2, 0.8), Instance(1, 8, 0, 0.6), Instance(2, 7, 1, 0.3),
                 Instance(3, 9, 0, 0.2)]
    rows = [stream.rows_for(inst) for inst in instances]
    assert [len(r) for r in rows] == [4, 4, 4, 0]
    assert rows[0][1].counts == rows[2][1].counts  # same track, same masks
    assert [r.tracker_valid for r in rows[1]] == [True, True, False, True]
    decoded = mask_utils.decode({"size": [H, W], "counts": rows[1][3].counts.encode()})
    assert np.array_equal(decoded.astype(bool), frames[3][1])


def test_offline_rows_come_from_frame_masks_with_tracker_scores() -> None:
    rng = np.random.default_rng(2)
    stream = TrackStream(encode_masks=False)
    for t in range(3):
        stream.add(_frame(t, [4], _masks(rng, 1)))
    assert stream.rows_for(Instance(0, 4, 0, 0.5)) == []  # offline: masks not kept
    instances = [Instance(0, 4, 0, 0.7), Instance(1, -1, 3, 0.4)]
    frame_masks = [FrameMasks(t, _masks(rng, 3)[:2]) for t in range(3)]
    rows = rows_from_frame_masks(instances, frame_masks, stream)
    assert [len(r) for r in rows] == [3, 3]
    assert rows[0][0].frame_score == pytest.approx(0.9) and rows[0][0].tracker_valid is True
    assert rows[1][0].frame_score is None and rows[1][0].tracker_valid is None


def _labelled(frames_by_instance: list[list[int]]) -> list[LabelledInstance]:
    rng = np.random.default_rng(3)
    out = []
    for i, frames in enumerate(frames_by_instance):
        stream = TrackStream(encode_masks=True)
        for t in frames:
            m = _masks(rng, 2)[:1]
            stream.add(_frame(t, [i], m))
        inst = Instance(i, i, i % 2, 0.9 - 0.1 * i)
        out.append(LabelledInstance(inst, inst.label + 1, f"class_{inst.label}", stream.rows_for(inst)))
    return out


def test_tables_and_health_figures() -> None:
    # 10 frames: a full track, a flickering one (two gaps), a late short one, one never present
    instances = _labelled([list(range(10)), [0, 1, 4, 5, 8, 9], [6, 7], []])
    times = [t / 10 for t in range(10)]
    tracks = tracks_table("vid", instances, times, 10.0, "pk", H, W)
    summary = summary_table("vid", instances, times, 10.0, "pk")
    assert tracks.schema.equals(TRACKS_V1, check_metadata=True)
    assert summary.schema.equals(TRACK_SUMMARY_V1, check_metadata=True)
    assert tracks.num_rows == 10 + 6 + 2
    assert tracks.column("mask").to_pylist()[0]["size"] == [H, W]
    assert tracks.column("category_id").to_pylist()[0] == 1
    assert summary.column("frames_present").to_pylist() == [10, 6, 2]
    assert summary.column("first_frame").to_pylist() == [0, 0, 6]
    assert summary.column("last_timestamp_s").to_pylist() == pytest.approx([0.9, 0.9, 0.7])
    figures = health(instances, frames_decoded=10)
    assert figures["num_tracks"] == 3
    assert figures["short_fragments"] == 1  # the 2-frame track
    assert figures["appear_events"] == 2 + 1  # two re-appearances + the late start
    assert figures["disappear_events"] == 2 + 1  # two gaps + the early end
    assert figures["mean_score"] == pytest.approx(np.mean([0.9, 0.8, 0.7]))


def test_one_frame_video_has_no_short_fragments() -> None:
    figures = health(_labelled([[0]]), frames_decoded=1)
    assert figures["short_fragments"] == 0 and figures["appear_events"] == 0

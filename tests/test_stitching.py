"""Stitching chunked labels (pipeline/stitching.py) on a long synthetic video whose true tracks are
known: per-chunk tracks derived from the ground truth with random ids per chunk, noisy masks, late
pick-ups at chunk starts, false positives, and objects that enter or leave inside the overlaps.
Ids must hold across the whole video; the stitch accuracy (fraction of boundary crossings
stitched right) is printed and checked."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest

from daq_model.outputs import Instance
from pipeline.chunking import ChunkSettings, plan_chunks, shared_frames
from pipeline.stitching import ChunkTracks, StitchSettings, crossing_accuracy, stitch
from pipeline.tables import LabelledInstance, summary_table, tracks_table
from pipeline.tracks import MaskRow, encode_masks
from schemas.tables import TRACK_SUMMARY_V1, TRACKS_V1

logger = logging.getLogger(__name__)

H = W = 64
CATEGORIES = ("disc", "square")


@dataclass
class TrueObject:
    key: int
    category: int  # 1-based category id
    first: int
    last: int  # inclusive
    x0: float
    y0: float
    vx: float
    vy: float
    radius: float

    def mask(self, t: int) -> np.ndarray | None:
        if not self.first <= t <= self.last:
            return None
        cx, cy = self.x0 + self.vx * t, self.y0 + self.vy * t
        cx = W - 1 - abs((cx % (2 * (W - 1))) - (W - 1))  # bounce off the borders
        cy = H - 1 - abs((cy % (2 * (H - 1))) - (H - 1))
        yy, xx = np.mgrid[:H, :W]
        if self.category == 1:
            m = (xx - cx) ** 2 + (yy - cy) ** 2 <= self.radius ** 2
        else:
            m = (np.abs(xx - cx) <= self.radius) & (np.abs(yy - cy) <= self.radius)
        return m if m.any() else None


def make_objects(rng: np.random.Generator, frames: int, boundaries: list[range]) -> list[TrueObject]:
    objects = []
    for key in range(14):
        first, last = 0, frames - 1
        if key % 3 == 1:
            first = int(rng.integers(0, frames - 30))
        if key % 4 == 2:
            last = int(rng.integers(first + 20, frames))
        objects.append(TrueObject(key, 1 + key % 2, first, last, float(rng.uniform(8, W - 8)),
                                  float(rng.uniform(8, H - 8)), float(rng.uniform(-0.8, 0.8)),
                                  float(rng.uniform(-0.8, 0.8)), float(rng.uniform(4, 8))))
    # objects that enter and leave inside shared frames
    for n, shared in enumerate(boundaries[:4]):
        middle = shared.start + len(shared) // 2
        objects.append(TrueObject(100 + n, 1, middle, min(frames - 1, middle + 40), 20.0 + 5 * n, 30.0,
                                  0.4, -0.3, 6.0))
        objects.append(TrueObject(200 + n, 2, max(0, middle - 40), middle + 1, 40.0, 12.0 + 6 * n,
                                  -0.3, 0.5, 5.0))
    return objects


def noisy(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mask shifted by up to one pixel, with a few boundary pixels flipped."""
    dy, dx = rng.integers(-1, 2, size=2)
    out = np.roll(np.roll(mask, int(dy), axis=0), int(dx), axis=1)
    edge = out ^ np.roll(out, 1, axis=0)
    flip = edge & (rng.random(out.shape) < 0.3)
    return out ^ flip


def chunk_labels(objects: list[TrueObject], chunk, rng: np.random.Generator, late_pickup: int,
                 false_positives: int) -> tuple[pa.Table, dict[int, int | None]]:
    """A chunk's tracks as a model session would give them: random ids, noisy masks, objects
    picked up up to ``late_pickup`` frames late at the chunk's start, short false positives.
    Returns the table and local id -> true object key (None: false positive)."""
    local_ids = rng.permutation(len(objects) + false_positives)
    truth: dict[int, int] = {}
    items = []
    for n, obj in enumerate(objects):
        delay = int(rng.integers(0, late_pickup + 1)) if obj.first <= chunk.start else 0
        rows = []
        for t in range(max(chunk.start + delay, obj.first), min(chunk.end, obj.last + 1)):
            mask = obj.mask(t)
            if mask is None:
                continue
            (enc,) = encode_masks(noisy(mask, rng)[None])
            if enc is not None:
                rows.append(MaskRow(t, enc[0], enc[1], enc[2], 0.9, True))
        if rows:
            lid = int(local_ids[n])
            truth[lid] = obj.key
            items.append(LabelledInstance(Instance(lid, lid, obj.category - 1, float(rng.uniform(0.5, 1))),
                                          obj.category, CATEGORIES[obj.category - 1], rows))
    for n in range(false_positives):  # a blob of a few frames somewhere
        lid = int(local_ids[len(objects) + n])
        t0 = int(rng.integers(chunk.start, chunk.end - 3))
        blob = np.zeros((H, W), dtype=bool)
        y, x = rng.integers(0, H - 6, size=2)
        blob[y:y + 5, x:x + 5] = True
        rows = [MaskRow(t, *encode_masks(blob[None])[0], 0.2, True) for t in range(t0, t0 + 3)]
        truth[lid] = None  # follows no true object
        items.append(LabelledInstance(Instance(lid, lid, 0, 0.2), 1, CATEGORIES[0], rows))
    return tracks_table("v", items, [], 25.0, "key", H, W), truth


def synthetic_case(seed: int, frames: int = 240, length: int = 48, overlap: int = 12,
                   late_pickup: int = 3, false_positives: int = 2):
    rng = np.random.default_rng(seed)
    chunks = plan_chunks(frames, ChunkSettings(length, overlap))
    boundaries = [shared_frames(a, b) for a, b in zip(chunks, chunks[1:])]
    objects = make_objects(rng, frames, boundaries)
    labelled, truth = [], {}
    for chunk in chunks:
        table, local = chunk_labels(objects, chunk, rng, late_pickup, false_positives)
        labelled.append(ChunkTracks(chunk, table))
        truth.update({(chunk.index, lid): key for lid, key in local.items()})
    crossings = []
    for k, shared in enumerate(boundaries):
        for lid_a, key in ((lid, key) for (c, lid), key in truth.items() if c == k and key is not None):
            piece_a = _frames_of(labelled[k].tracks, lid_a)
            for (c, lid_b), key_b in truth.items():
                if c == k + 1 and key_b == key and piece_a & set(shared) and \
                        _frames_of(labelled[k + 1].tracks, lid_b) & set(shared):
                    crossings.append(((k, lid_a), (k + 1, lid_b)))
    return chunks, objects, labelled, truth, crossings


def _frames_of(table: pa.Table, track_id: int) -> set[int]:
    d = table.select(["track_id", "frame_index"]).to_pydict()
    return {f for t, f in zip(d["track_id"], d["frame_index"]) if t == track_id}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ids_hold_across_a_long_synthetic_video(seed: int) -> None:
    chunks, objects, labelled, truth, crossings = synthetic_case(seed)
    assert len(chunks) >= 5 and len(crossings) >= 40
    result = stitch(labelled)
    figures = crossing_accuracy(truth, result, crossings)
    logger.warning("seed %d: stitch accuracy %s; %s", seed, figures, result.report.as_dict())
    print(f"seed {seed}: {figures} {result.report.as_dict()}")
    assert figures["accuracy"] >= 0.95 and figures["false_joins"] == 0
    # one global id per true object that crosses the boundaries (no gap spans an overlap here)
    ids_of: dict[int, set[int]] = {}
    for key, gid in result.global_ids.items():
        if truth[key] is not None:
            ids_of.setdefault(truth[key], set()).add(gid)
    continuous = sum(1 for ids in ids_of.values() if len(ids) == 1)
    assert continuous >= len(ids_of) - 1
    # every (track, frame) written once, from the chunk that keeps the frame
    seen = set()
    for item in result.instances:
        for row in item.rows:
            assert (item.instance.instance_id, row.frame_index) not in seen
            seen.add((item.instance.instance_id, row.frame_index))
    # the rows of each true object in each frame: exactly what the keeping chunk had
    for chunk_tracks in labelled:
        d = chunk_tracks.tracks.select(["track_id", "frame_index"]).to_pydict()
        for lid, frame in zip(d["track_id"], d["frame_index"]):
            if chunk_tracks.chunk.keeps(frame):
                assert (result.global_ids[(chunk_tracks.chunk.index, lid)], frame) in seen
    assert len(seen) == sum(sum(1 for f in c.tracks.column("frame_index").to_pylist() if c.chunk.keeps(f))
                            for c in labelled)
    # ids are numbered by score, and the stitched instances make valid tables
    scores = [item.instance.score for item in result.instances]
    assert scores == sorted(scores, reverse=True)
    assert [item.instance.instance_id for item in result.instances] == list(range(len(scores)))
    tracks = tracks_table("v", result.instances, [], 25.0, "key", H, W)
    summary = summary_table("v", result.instances, [], 25.0, "key")
    assert tracks.schema.equals(TRACKS_V1, check_metadata=True)
    assert summary.schema.equals(TRACK_SUMMARY_V1, check_metadata=True)
    assert summary.num_rows == len(result.instances)


def test_accuracy_can_fail_a_threshold_that_matches_nothing() -> None:
    _chunks, _objects, labelled, truth, crossings = synthetic_case(5)
    result = stitch(labelled, StitchSettings(min_iou=1.0))
    figures = crossing_accuracy(truth, result, crossings)
    assert figures["accuracy"] == 0.0 and result.report.matched == 0
    assert result.report.rejected_below_threshold > 0


def test_harder_noise_is_reported_not_hidden() -> None:
    """Late pick-ups of most of the overlap: matches fall below the threshold and show up in the
    figures (accuracy below 1) rather than as wrong joins."""
    _chunks, _objects, labelled, truth, crossings = synthetic_case(7, late_pickup=11, overlap=12)
    result = stitch(labelled)
    figures = crossing_accuracy(truth, result, crossings)
    print(f"hard case: {figures}")
    assert figures["false_joins"] == 0
    assert figures["accuracy"] < 1.0


def test_one_chunk_passes_through_and_bad_input_is_refused() -> None:
    chunks, _objects, labelled, _truth, _crossings = synthetic_case(3, frames=40, length=48)
    assert len(chunks) == 1
    result = stitch(labelled)
    assert sum(len(i.rows) for i in result.instances) == labelled[0].tracks.num_rows
    _c, _o, many, _t, _x = synthetic_case(3)
    with pytest.raises(ValueError, match="every chunk"):
        stitch(many[:2] + many[3:])
    moved = ChunkTracks(many[1].chunk, many[0].tracks)  # rows of frames chunk 1 does not label
    with pytest.raises(ValueError, match="outside it"):
        stitch([many[0], moved] + many[2:])
    with pytest.raises(ValueError, match="min_iou"):
        StitchSettings(min_iou=0.0)

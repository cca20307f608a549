"""From the model's streaming results to per-instance mask rows (COCO RLE), frame by frame.

Mapping (documented in README "Outputs"): every entry of ``VideoResult.instances`` (the official
top-k (track, class) pairs) becomes one output track whose ``track_id`` is its ``instance_id``;
the tracker's id goes to ``tracker_track_id`` (one tracker track may appear under two labels).

* Online models (``mask_source == "tracker"``): an instance's mask in frame t is its tracker
  track's mask in that frame's :class:`FrameTracks`. We RLE-encode every track's mask as frames
  stream (full-resolution masks are never kept) and keep only the instances ``finish`` returns.
* Offline models (``mask_source == "refiner"``): masks come from
  :meth:`VideoResult.iter_frame_masks`; the FrameTracks stream only contributes per-frame scores.

Rows exist only where a mask is non-empty. With ``test.merge_fragments_iou`` set (the shipped
model), instances that follow one object in turn are merged (:func:`merge_fragment_rows`).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
from pycocotools import mask as mask_utils

from daq_model.config import TestConfig
from daq_model.fragment_merge import merge_fragments
from daq_model.outputs import FrameMasks, FrameTracks, Instance


@dataclass
class MaskRow:
    """One frame of one track or instance where its mask is non-empty."""

    frame_index: int
    counts: str
    area: int
    bbox: tuple[float, float, float, float]
    frame_score: float | None = None
    tracker_valid: bool | None = None


def encode_masks(masks: np.ndarray) -> list[tuple[str, int, tuple[float, float, float, float]] | None]:
    """COCO RLE of each (H, W) boolean mask of ``masks`` (N, H, W): (counts, area, bbox xywh),
    or None for an empty mask."""
    n = int(masks.shape[0])
    if n == 0:
        return []
    flat = masks.reshape(n, -1)
    nonempty = np.flatnonzero(flat.any(axis=1))
    out: list[tuple[str, int, tuple[float, float, float, float]] | None] = [None] * n
    if nonempty.size == 0:
        return out
    chosen = masks if nonempty.size == n else masks[nonempty]
    if chosen.dtype != np.bool_:
        chosen = chosen.astype(bool)
    # Encoding runs in the model's thread on purpose: pycocotools holds the GIL, and a background
    # encoder would stall the thread that launches the model's kernels (GIL convoy).
    rles = mask_utils.encode(np.asfortranarray(chosen.view(np.uint8).transpose(1, 2, 0)))
    areas = mask_utils.area(rles)
    boxes = mask_utils.toBbox(rles)
    for j, i in enumerate(nonempty):
        counts = rles[j]["counts"]
        out[int(i)] = (
            counts.decode("ascii") if isinstance(counts, bytes) else str(counts),
            int(areas[j]),
            (float(boxes[j][0]), float(boxes[j][1]), float(boxes[j][2]), float(boxes[j][3])),
        )
    return out


@dataclass
class TrackEntries:
    """What the FrameTracks stream said about one tracker track: its frames (increasing), score
    and validity there, compactly (9 bytes a frame), and its non-empty masks (online models)."""

    frames: array = field(default_factory=lambda: array("i"))
    scores: array = field(default_factory=lambda: array("f"))
    valid: bytearray = field(default_factory=bytearray)
    rows: list[MaskRow] = field(default_factory=list)

    def at(self, frame_index: int) -> tuple[float, bool] | None:
        i = bisect_left(self.frames, frame_index)
        if i < len(self.frames) and self.frames[i] == frame_index:
            return float(self.scores[i]), bool(self.valid[i])
        return None


class TrackStream:
    """Collects the FrameTracks stream of one video.

    ``encode_masks=True`` (online models) RLE-encodes every track's mask as its frame arrives;
    otherwise only the per-frame scores are kept.
    """

    def __init__(self, encode_masks: bool) -> None:
        self.encode = encode_masks
        self.tracks: dict[int, TrackEntries] = {}
        self.frames_seen = 0

    def add(self, frame: FrameTracks) -> None:
        self.frames_seen += 1
        if len(frame) == 0:
            return
        encoded = encode_masks(frame.masks) if self.encode else [None] * len(frame)
        t = int(frame.frame_index)
        for k in range(len(frame)):
            tid = int(frame.track_ids[k])
            score, valid = float(frame.scores[k]), bool(frame.valid[k])
            entry = self.tracks.setdefault(tid, TrackEntries())
            entry.frames.append(t)
            entry.scores.append(score)
            entry.valid.append(valid)
            rle = encoded[k]
            if rle is not None:
                entry.rows.append(MaskRow(t, rle[0], rle[1], rle[2], score, valid))

    def add_all(self, frames: Iterable[FrameTracks]) -> int:
        count = 0
        for frame in frames:
            self.add(frame)
            count += 1
        return count

    def rows_for(self, instance: Instance) -> list[MaskRow]:
        """Mask rows of an instance of an online (tracker-mask) result."""
        entry = self.tracks.get(int(instance.track_id))
        return list(entry.rows) if entry else []

    def score_at(self, track_id: int, frame_index: int) -> tuple[float, bool] | None:
        entry = self.tracks.get(int(track_id))
        return entry.at(frame_index) if entry else None


def rows_from_frame_masks(instances: list[Instance], frames: Iterable[FrameMasks],
                          stream: TrackStream) -> list[list[MaskRow]]:
    """Mask rows of every instance of an offline (refiner-mask) result, frame by frame; per-frame
    scores come from the tracker stream where the instance has a tracker track."""
    rows: list[list[MaskRow]] = [[] for _ in instances]
    for frame in frames:
        t = int(frame.frame_index)
        encoded = encode_masks(frame.masks)
        for i, rle in enumerate(encoded):
            if rle is None:
                continue
            scored = stream.score_at(instances[i].track_id, t) if instances[i].track_id >= 0 else None
            rows[i].append(MaskRow(t, rle[0], rle[1], rle[2],
                                   scored[0] if scored else None, scored[1] if scored else None))
    return rows


def merge_fragment_rows(instances: list[Instance], rows: list[list[MaskRow]], size: tuple[int, int],
                        test: TestConfig) -> tuple[list[Instance], list[list[MaskRow]]]:
    """Instances and their rows after :mod:`daq_model.fragment_merge`: a merged instance keeps its
    highest-scoring member's entry (id, tracker track, label, score) and takes each frame's row
    from the highest-scoring member that has one. ``size``: the masks' (height, width)."""
    merged = merge_fragments(
        instances, [int(i.label) for i in instances], [float(i.score) for i in instances],
        [{r.frame_index: r for r in inst_rows} for inst_rows in rows],
        lambda r: {"size": list(size), "counts": r.counts.encode("ascii")},
        test.merge_fragments_iou, test.merge_fragments_agree)
    return [inst for inst, _ in merged], [list(frames.values()) for _, frames in merged]

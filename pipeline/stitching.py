"""Stitch the labels of a long video's chunks (:mod:`pipeline.chunking`) into one set of tracks
whose ids hold across the whole video.

Input: every chunk's ``tracks`` rows (schema ``tracks`` v1, frame indices of the whole video),
from independent model sessions, so ids of different chunks are unrelated. For each pair of
consecutive chunks:

1. every track of chunk ``k`` and every track of chunk ``k + 1`` with a mask in the frames both
   chunks label gets a score: the mean mask IoU over the shared frames where *either* has a mask
   (a frame where only one of them has a mask counts 0), computed on the RLEs (pycocotools);
   tracks of different categories score 0;
2. Hungarian assignment (``scipy.optimize.linear_sum_assignment``) maximises the total score;
   pairs scoring at least ``min_iou`` are the same object: the track of chunk ``k + 1`` takes the
   global id of the track of chunk ``k``; every other track starts a new global id.

Rows: each frame's rows come from the one chunk that keeps it (:meth:`Chunk.keeps`), so a shared
frame is written once. A stitched track's ``score`` is the mean of its pieces' scores weighted by
their kept frames; global ids are numbered by descending score (0 = best, as in one session).
Tracker ids: the tracker tracks of matched pieces are joined (one id for the chain), every other
(chunk, tracker id) gets its own id; -1 stays -1.

The result is a list of :class:`pipeline.tables.LabelledInstance`, so the tables of a chunked
video are built by the same functions as those of a whole one.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from daq_model.outputs import Instance
from pipeline.chunking import Chunk, shared_frames
from pipeline.tables import LabelledInstance
from pipeline.tracks import MaskRow

logger = logging.getLogger(__name__)

#: Pieces whose mean IoU over the shared frames is below this are different objects.
DEFAULT_MIN_IOU = 0.3


@dataclass(frozen=True)
class StitchSettings:
    min_iou: float = DEFAULT_MIN_IOU

    def __post_init__(self) -> None:
        if not 0.0 < self.min_iou <= 1.0:
            raise ValueError(f"stitch min_iou must be in (0, 1], got {self.min_iou}")


@dataclass
class ChunkTracks:
    """One chunk's labels: its ``tracks`` rows (frame indices of the whole video)."""

    chunk: Chunk
    tracks: pa.Table


@dataclass
class Piece:
    """One track of one chunk."""

    chunk_index: int
    track_id: int
    tracker_track_id: int
    category_id: int
    category_name: str
    score: float
    rows: dict[int, MaskRow]  # frame_index -> row
    size: tuple[int, int]

    def rle(self, frame: int) -> dict[str, Any] | None:
        row = self.rows.get(frame)
        if row is None:
            return None
        return {"size": list(self.size), "counts": row.counts.encode("ascii")}


@dataclass(frozen=True)
class BoundaryMatch:
    """Track ``left_id`` of chunk ``chunk_index`` continues as ``right_id`` of the next chunk."""

    chunk_index: int
    left_id: int
    right_id: int
    iou: float


@dataclass
class StitchReport:
    """What stitching did: per boundary, tracks seen in the shared frames on each side, matches,
    and the tracks that ended or started there."""

    chunks: int = 0
    matches: list[BoundaryMatch] = field(default_factory=list)
    left_in_overlap: int = 0
    right_in_overlap: int = 0
    rejected_below_threshold: int = 0

    @property
    def matched(self) -> int:
        return len(self.matches)

    @property
    def mean_matched_iou(self) -> float | None:
        return float(np.mean([m.iou for m in self.matches])) if self.matches else None

    def as_dict(self) -> dict[str, Any]:
        return {"chunks": self.chunks, "boundaries": max(0, self.chunks - 1), "matched": self.matched,
                "left_in_overlap": self.left_in_overlap, "right_in_overlap": self.right_in_overlap,
                "ended_in_overlap": self.left_in_overlap - self.matched,
                "started_in_overlap": self.right_in_overlap - self.matched,
                "rejected_below_threshold": self.rejected_below_threshold,
                "mean_matched_iou": self.mean_matched_iou}


@dataclass
class StitchResult:
    instances: list[LabelledInstance]
    #: (chunk index, chunk-local track id) -> global track id (pieces with no kept row: absent)
    global_ids: dict[tuple[int, int], int]
    report: StitchReport


def pieces_of(chunk_tracks: ChunkTracks) -> list[Piece]:
    """The tracks of one chunk's rows, in track id order."""
    table = chunk_tracks.tracks
    if table.num_rows == 0:
        return []
    cols = table.select(["track_id", "tracker_track_id", "frame_index", "category_id", "category_name",
                         "score", "frame_score", "tracker_valid", "bbox", "area", "mask"]).to_pydict()
    pieces: dict[int, Piece] = {}
    for i, tid in enumerate(cols["track_id"]):
        mask = cols["mask"][i]
        piece = pieces.get(tid)
        if piece is None:
            piece = pieces[tid] = Piece(chunk_tracks.chunk.index, int(tid), int(cols["tracker_track_id"][i]),
                                        int(cols["category_id"][i]), str(cols["category_name"][i]),
                                        float(cols["score"][i]), {},
                                        (int(mask["size"][0]), int(mask["size"][1])))
        frame = int(cols["frame_index"][i])
        if not chunk_tracks.chunk.holds(frame):
            raise ValueError(f"chunk {chunk_tracks.chunk.index} ({chunk_tracks.chunk.start}-"
                             f"{chunk_tracks.chunk.end}) has a row of frame {frame} outside it")
        piece.rows[frame] = MaskRow(frame, str(mask["counts"]), int(cols["area"][i]),
                                    tuple(float(v) for v in cols["bbox"][i]),  # type: ignore[arg-type]
                                    cols["frame_score"][i], cols["tracker_valid"][i])
    return [pieces[k] for k in sorted(pieces)]


def overlap_scores(left: Sequence[Piece], right: Sequence[Piece], frames: range) -> np.ndarray:
    """(len(left), len(right)) mean mask IoU over ``frames`` where either piece has a mask;
    0 between pieces of different categories or with no mask there."""
    sums = np.zeros((len(left), len(right)))
    present_l = np.zeros((len(left), len(frames)), dtype=bool)
    present_r = np.zeros((len(right), len(frames)), dtype=bool)
    for j, frame in enumerate(frames):
        lrles = [(i, p.rle(frame)) for i, p in enumerate(left)]
        rrles = [(i, p.rle(frame)) for i, p in enumerate(right)]
        lrles = [(i, r) for i, r in lrles if r is not None]
        rrles = [(i, r) for i, r in rrles if r is not None]
        for i, _ in lrles:
            present_l[i, j] = True
        for i, _ in rrles:
            present_r[i, j] = True
        if not lrles or not rrles:
            continue
        ious = np.asarray(mask_utils.iou([r for _, r in lrles], [r for _, r in rrles],
                                         [0] * len(rrles)), dtype=np.float64).reshape(len(lrles), len(rrles))
        rows = [i for i, _ in lrles]
        cols = [i for i, _ in rrles]
        sums[np.ix_(rows, cols)] += ious
    union = (present_l[:, None, :] | present_r[None, :, :]).sum(axis=2)
    scores = np.divide(sums, union, out=np.zeros_like(sums), where=union > 0)
    cats_l = np.array([p.category_id for p in left])[:, None]
    cats_r = np.array([p.category_id for p in right])[None, :]
    if scores.size:
        scores[cats_l != cats_r] = 0.0
    return scores


def match_boundary(left: Sequence[Piece], right: Sequence[Piece], frames: range,
                   settings: StitchSettings, report: StitchReport) -> list[BoundaryMatch]:
    """Hungarian matching of the pieces of two consecutive chunks seen in their shared frames."""
    seen_l = [p for p in left if any(f in p.rows for f in frames)]
    seen_r = [p for p in right if any(f in p.rows for f in frames)]
    report.left_in_overlap += len(seen_l)
    report.right_in_overlap += len(seen_r)
    if not seen_l or not seen_r:
        return []
    scores = overlap_scores(seen_l, seen_r, frames)
    rows, cols = linear_sum_assignment(scores, maximize=True)
    matches = []
    for i, j in zip(rows, cols):
        if scores[i, j] >= settings.min_iou:
            matches.append(BoundaryMatch(seen_l[i].chunk_index, seen_l[i].track_id, seen_r[j].track_id,
                                         float(scores[i, j])))
        elif scores[i, j] > 0:
            report.rejected_below_threshold += 1
    return matches


class _Joiner:
    """Union-find over hashable keys."""

    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, key: Any) -> Any:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def join(self, a: Any, b: Any) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def stitch(chunks: Sequence[ChunkTracks], settings: StitchSettings = StitchSettings()) -> StitchResult:
    """One video's instances from its chunks' tracks (chunks in order, as planned)."""
    ordered = sorted(chunks, key=lambda c: c.chunk.index)
    if [c.chunk.index for c in ordered] != list(range(len(ordered))) or \
            any(c.chunk.count != len(ordered) for c in ordered):
        raise ValueError(f"stitch needs every chunk of the video once, got indices "
                         f"{[c.chunk.index for c in ordered]} of {[c.chunk.count for c in ordered][:1]}")
    report = StitchReport(chunks=len(ordered))
    pieces = [pieces_of(c) for c in ordered]
    chains = _Joiner()  # (chunk, track id) keys: one root per stitched track
    trackers = _Joiner()  # (chunk, tracker id) keys
    for k in range(len(ordered) - 1):
        frames = shared_frames(ordered[k].chunk, ordered[k + 1].chunk)
        matches = match_boundary(pieces[k], pieces[k + 1], frames, settings, report)
        report.matches.extend(matches)
        by_id = {p.track_id: p for p in pieces[k]}
        by_id_next = {p.track_id: p for p in pieces[k + 1]}
        for m in matches:
            chains.join((k, m.left_id), (k + 1, m.right_id))
            left_t, right_t = by_id[m.left_id].tracker_track_id, by_id_next[m.right_id].tracker_track_id
            if left_t >= 0 and right_t >= 0:
                trackers.join((k, left_t), (k + 1, right_t))
    # kept rows of every stitched track
    members: dict[Any, list[Piece]] = defaultdict(list)
    kept: dict[Any, list[MaskRow]] = defaultdict(list)
    for chunk_tracks, chunk_pieces in zip(ordered, pieces):
        for piece in chunk_pieces:
            rows = [r for f, r in piece.rows.items() if chunk_tracks.chunk.keeps(f)]
            if rows:
                root = chains.find((piece.chunk_index, piece.track_id))
                members[root].append(piece)
                kept[root].extend(rows)
    tracker_ids: dict[Any, int] = {}
    stitched: list[tuple[float, int, Any, int, Piece, list[MaskRow]]] = []
    for root, group in members.items():
        weights = [sum(1 for f in p.rows if ordered[p.chunk_index].chunk.keeps(f)) for p in group]
        score = float(np.average([p.score for p in group], weights=weights))
        first = group[0]
        tracker = -1
        backed = [p for p in group if p.tracker_track_id >= 0]
        if backed:  # the tracker track of the piece with most kept frames
            best = max(backed, key=lambda p: sum(1 for f in p.rows if ordered[p.chunk_index].chunk.keeps(f)))
            tracker = tracker_ids.setdefault(trackers.find((best.chunk_index, best.tracker_track_id)),
                                             len(tracker_ids))
        rows = sorted(kept[root], key=lambda r: r.frame_index)
        stitched.append((score, rows[0].frame_index, root, tracker, first, rows))
    stitched.sort(key=lambda item: (-item[0], item[1], item[2]))
    instances: list[LabelledInstance] = []
    root_to_global: dict[Any, int] = {}
    for gid, (score, _first, root, tracker, first, rows) in enumerate(stitched):
        root_to_global[root] = gid
        inst = Instance(instance_id=gid, track_id=tracker, label=first.category_id - 1, score=score)
        instances.append(LabelledInstance(inst, first.category_id, first.category_name, rows))
    global_ids = {}
    for chunk_pieces in pieces:  # also pieces with no kept row whose chain has some
        for p in chunk_pieces:
            root = chains.find((p.chunk_index, p.track_id))
            if root in root_to_global:
                global_ids[(p.chunk_index, p.track_id)] = root_to_global[root]
    logger.info("stitched %d chunk(s): %s", len(ordered), report.as_dict())
    return StitchResult(instances, global_ids, report)


def crossing_accuracy(truth: dict[tuple[int, int], Any], result: StitchResult,
                      crossings: Sequence[tuple[tuple[int, int], tuple[int, int]]]) -> dict[str, Any]:
    """How well ``result`` stitched, against ground truth.

    ``truth``: (chunk, local track id) -> the true object of that piece (None: follows no true
    object, e.g. a false positive; such pieces are not judged); ``crossings``: pairs of pieces of
    one true object in consecutive chunks that both have masks in the shared frames. A *crossing*
    is one true object at one chunk boundary (several pairs when a chunk holds the object in more
    than one piece); it is stitched right when at least one of its pairs got one global id.
    ``accuracy``: crossings stitched right / crossings; ``false_joins``: for each global id, the
    true objects among its pieces beyond the first.
    """
    groups: dict[tuple[int, Any], bool] = {}
    for a, b in crossings:
        key = (a[0], truth.get(a))
        joined = a in result.global_ids and result.global_ids.get(a) == result.global_ids.get(b)
        groups[key] = groups.get(key, False) or joined
    right = sum(groups.values())
    by_global: dict[int, set[Any]] = defaultdict(set)
    for key, gid in result.global_ids.items():
        if truth.get(key) is not None:
            by_global[gid].add(truth[key])
    false_joins = sum(len(objs) - 1 for objs in by_global.values())
    return {"crossings": len(groups), "stitched_right": right,
            "accuracy": right / len(groups) if groups else None, "false_joins": false_joins}

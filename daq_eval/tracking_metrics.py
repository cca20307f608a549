"""Tracking metrics for objects that appear, disappear and come back.

Video AP scores whole tracks; these numbers say *where* tracking goes wrong. Definitions:

- An object (non-crowd ground-truth annotation) is **present** at frame t when its segmentation
  there is not null and its mask is not empty. Crowd annotations are left out. A prediction takes
  part if its score is >= ``score_threshold`` and is present where its mask is not empty.
- **Per-frame matching** (CLEAR-MOT style), one-to-one, at mask IoU >= ``iou_threshold`` (0.5):
  first every present object keeps the prediction it was last matched to (at any earlier frame)
  if that prediction still overlaps it enough; then the remaining objects and predictions are
  paired by a maximum-IoU assignment, keeping pairs at or above the threshold. With
  ``class_aware`` only predictions of the object's category can match.
- **ID switch**: a frame where an object is matched to a prediction different from the last one
  it was matched to (however long ago). Switches where the object was absent (left the frame or
  was fully occluded) on some frame between the two matches are also counted as
  ``at_reappearance``.
- **Pickup latency** of an object: first matched frame minus first present frame (0 = found on
  the frame it appears). Reported separately for objects present in frame 0 and for objects that
  appear later ("new" objects); objects never matched are counted as ``never_picked_up`` and left
  out of the latency statistics.
- **Re-appearance**: a present frame that follows one or more absent frames after an earlier
  present frame. ``recovered``: the object is matched on some frame from then on; latency as
  above, from the re-appearance frame; ``same_identity``: the first match after the gap is the
  prediction the object was last matched to before the gap (counted over events that had one).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from daq_eval.video_ap import track_areas
from daq_eval.ytvis_format import Dataset, Prediction, segmentation_to_rle

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackingParams:
    iou_threshold: float = 0.5
    score_threshold: float = 0.5
    class_aware: bool = False


@dataclass(frozen=True)
class ObjectTrackRecord:
    """What happened to one ground-truth object."""

    video_id: int
    annotation_id: int
    first_frame: int
    present: np.ndarray  # [T] bool
    partner: np.ndarray  # [T] index of the matched prediction in its video, -1 if none
    id_switches: int
    id_switches_at_reappearance: int
    pickup_latency: int | None  # None: never matched
    reappearances: tuple[tuple[int, int | None, bool | None], ...]  # (frame, latency, same identity)


def presence(rles: Sequence[dict | None]) -> np.ndarray:
    """[T] bool: frame has a non-empty mask."""
    return track_areas(rles) > 0


def presence_runs(present: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs ``[start, end)`` of consecutive present frames."""
    p = np.concatenate([[False], np.asarray(present, dtype=bool), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(p))
    return [(int(s), int(e)) for s, e in zip(edges[0::2], edges[1::2])]


def _frame_ious(g_rles: list, p_rles: list) -> np.ndarray:
    if not g_rles or not p_rles:
        return np.zeros((len(g_rles), len(p_rles)))
    return np.asarray(mask_utils.iou(g_rles, p_rles, [0] * len(p_rles)),
                      dtype=np.float64).reshape(len(g_rles), len(p_rles))


def match_frames(g_rles: list[list], p_rles: list[list], allowed: np.ndarray,
                 iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame one-to-one matching for one video.

    g_rles[i][t] / p_rles[j][t]: RLE or None. ``allowed`` [G, P] restricts pairs (categories).
    Returns ``present`` [G, T] and ``partner`` [G, T] (-1 where unmatched).
    """
    G, P = len(g_rles), len(p_rles)
    T = len(g_rles[0]) if G else 0
    g_present = np.stack([presence(r) for r in g_rles]) if G else np.zeros((0, T), bool)
    p_present = np.stack([presence(r) for r in p_rles]) if P else np.zeros((0, T), bool)
    partner = -np.ones((G, T), dtype=np.int64)
    last = -np.ones(G, dtype=np.int64)
    for t in range(T):
        gi = np.flatnonzero(g_present[:, t])
        pj = np.flatnonzero(p_present[:, t])
        if len(gi) == 0 or len(pj) == 0:
            continue
        iou = _frame_ious([g_rles[i][t] for i in gi], [p_rles[j][t] for j in pj])
        iou = np.where(allowed[np.ix_(gi, pj)], iou, 0.0)
        ok = iou >= iou_threshold
        g_done = np.zeros(len(gi), bool)
        p_done = np.zeros(len(pj), bool)
        # 1) keep last partners that still overlap enough (highest IoU first on conflicts)
        col = {int(j): c for c, j in enumerate(pj)}
        keep = [(iou[r, col[int(last[i])]], r, col[int(last[i])]) for r, i in enumerate(gi)
                if last[i] in col and ok[r, col[int(last[i])]]]
        for _, r, c in sorted(keep, reverse=True):
            if not p_done[c]:
                g_done[r] = p_done[c] = True
                partner[gi[r], t] = pj[c]
        # 2) maximum-IoU assignment for the rest
        rr, cc = np.flatnonzero(~g_done), np.flatnonzero(~p_done)
        if len(rr) and len(cc):
            sub = np.where(ok[np.ix_(rr, cc)], iou[np.ix_(rr, cc)], 0.0)
            a, b = linear_sum_assignment(sub, maximize=True)
            for x, y in zip(a, b):
                if ok[rr[x], cc[y]]:
                    partner[gi[rr[x]], t] = pj[cc[y]]
        matched = partner[:, t] >= 0
        last[matched] = partner[matched, t]
    return g_present, partner


def object_record(video_id: int, annotation_id: int, present: np.ndarray,
                  partner: np.ndarray) -> ObjectTrackRecord:
    """Events of one object from its presence and per-frame partners."""
    frames = np.flatnonzero(present)
    first = int(frames[0])
    matched = np.flatnonzero(partner >= 0)
    later = matched[matched >= first]
    pickup = int(later[0] - first) if len(later) else None
    switches = at_reappearance = 0
    prev, prev_t = -1, -1
    for t in matched:
        if prev >= 0 and partner[t] != prev:
            switches += 1
            if not present[prev_t + 1:t].all():  # the object was absent since its last match
                at_reappearance += 1
        prev, prev_t = int(partner[t]), int(t)
    events = []
    for start, _ in presence_runs(present)[1:]:
        after = matched[matched >= start]
        before = matched[matched < start]
        if len(after) == 0:
            events.append((start, None, None))
            continue
        same = None if len(before) == 0 else bool(partner[after[0]] == partner[before[-1]])
        events.append((start, int(after[0] - start), same))
    return ObjectTrackRecord(video_id, annotation_id, first, present, partner, switches,
                             at_reappearance, pickup, tuple(events))


def track_records(dataset: Dataset, predictions: Sequence[Prediction],
                  params: TrackingParams = TrackingParams()) -> list[ObjectTrackRecord]:
    """Per-object records for every non-crowd object of the ground truth."""
    if dataset.annotations is None:
        raise ValueError("the ground truth has no annotations (an unlabelled split?)")
    preds_by_video: dict[int, list[Prediction]] = {}
    for p in predictions:
        if p.score >= params.score_threshold:
            preds_by_video.setdefault(p.video_id, []).append(p)
    records = []
    for video in dataset.videos:
        anns = [a for a in dataset.annotations_by_video[video.id] if not a.iscrowd]
        preds = preds_by_video.get(video.id, [])
        g_rles = [[segmentation_to_rle(s, video.height, video.width) for s in a.segmentations] for a in anns]
        p_rles = [[segmentation_to_rle(s, video.height, video.width) for s in p.segmentations] for p in preds]
        allowed = np.ones((len(anns), len(preds)), dtype=bool)
        if params.class_aware:
            allowed = (np.array([a.category_id for a in anns])[:, None]
                       == np.array([p.category_id for p in preds])[None, :]).reshape(len(anns), len(preds))
        present, partner = match_frames(g_rles, p_rles, allowed, params.iou_threshold)
        for i, ann in enumerate(anns):
            if present[i].any():
                records.append(object_record(video.id, ann.id, present[i], partner[i]))
    return records


def _latency_stats(latencies: list[int | None]) -> dict[str, float | int | None]:
    found = [x for x in latencies if x is not None]
    return {
        "objects": len(latencies),
        "picked_up": len(found),
        "never_picked_up": len(latencies) - len(found),
        "picked_up_same_frame": sum(1 for x in found if x == 0),
        "mean_latency_frames": float(np.mean(found)) if found else None,
        "median_latency_frames": float(np.median(found)) if found else None,
        "max_latency_frames": int(max(found)) if found else None,
    }


def summarize_records(records: Sequence[ObjectTrackRecord], params: TrackingParams) -> dict:
    """JSON-ready summary of per-object records."""
    frames = int(sum(int(r.present.sum()) for r in records))
    matched = int(sum(int((r.partner[r.present] >= 0).sum()) for r in records))
    events = [e for r in records for e in r.reappearances]
    with_prior = [e for e in events if e[2] is not None]
    recovered = [e for e in events if e[1] is not None]
    return {
        "params": {"iou_threshold": params.iou_threshold, "score_threshold": params.score_threshold,
                   "class_aware": params.class_aware},
        "objects": len(records),
        "object_frames": frames,
        "matched_object_frames": matched,
        "matched_frame_fraction": matched / frames if frames else None,
        "id_switches": int(sum(r.id_switches for r in records)),
        "id_switches_at_reappearance": int(sum(r.id_switches_at_reappearance for r in records)),
        "objects_with_id_switch": int(sum(1 for r in records if r.id_switches)),
        "pickup_first_frame_objects": _latency_stats([r.pickup_latency for r in records if r.first_frame == 0]),
        "pickup_new_objects": _latency_stats([r.pickup_latency for r in records if r.first_frame > 0]),
        "reappearance": {
            "events": len(events),
            "recovered": len(recovered),
            "mean_latency_frames": float(np.mean([e[1] for e in recovered])) if recovered else None,
            "events_with_prior_match": len(with_prior),
            "same_identity": sum(1 for e in with_prior if e[2]),
            "same_identity_fraction": (sum(1 for e in with_prior if e[2]) / len(with_prior)
                                       if with_prior else None),
        },
    }


def evaluate_tracking(dataset: Dataset, predictions: Sequence[Prediction],
                      params: TrackingParams = TrackingParams()) -> dict:
    records = track_records(dataset, predictions, params)
    summary = summarize_records(records, params)
    logger.info("tracking: %d objects, %d ID switches", summary["objects"], summary["id_switches"])
    return summary

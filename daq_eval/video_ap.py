"""YouTube-VIS video AP / AR, with the semantics of the official YouTube-VIS evaluation API.

Definitions (all as the official ``YTVOSeval``; our own implementation):

- **Spatio-temporal IoU** of a prediction P and a ground truth G: ``sum_t |P_t & G_t| /
  sum_t |P_t | G_t|`` over the frames of the video. A frame where one side is absent (``null``)
  adds that side's area to the union only; a frame where both are absent adds nothing; IoU is 0 if
  the union is empty. iscrowd does *not* change the IoU (unlike COCO images).
- **Video-level area** of an object: the mean of its per-frame areas, skipping absent *and zero*
  entries (0 if none). Ground truth uses the ``areas`` field of the file; predictions use their
  mask areas. Ranges (inclusive at both ends): all [0, 1e10], small [0, 128^2], medium
  [128^2, 256^2], large [256^2, 1e10].
- Ground truth with ``iscrowd=1`` is ignored (as is ground truth outside the area range being
  evaluated); a crowd object may be matched by any number of predictions, and predictions matched
  to ignored objects count neither as true nor as false positives. Unmatched predictions outside
  the area range are ignored.
- Per (video, category): predictions sorted by score (stable, so ties keep file order), the top
  ``max(maxDets)`` = 100 kept; greedy matching at each IoU threshold in 0.50:0.05:0.95, each
  prediction taking the best-IoU (>= threshold) unmatched object, non-ignored objects first; on
  equal IoU the later object wins.
- Accumulation per (category, area range, maxDet): the top maxDet predictions of every video are
  pooled in video-id order and stably sorted by score; precision is made monotone and sampled at
  the 101 recall points 0:0.01:1 (0 past the highest recall reached); recall is the final recall.
  Categories without non-ignored ground truth are undefined (-1) and left out of the means.
- Metrics are fractions in [0, 1], -1 where undefined.

The one deliberate difference: the official code stores matched ids in float arrays where 0 means
"unmatched", so a ground-truth annotation with id 0 can never be matched there; we keep matches in
boolean arrays, so ids are only names.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from daq_eval.ytvis_format import Dataset, Prediction, segmentation_to_rle

logger = logging.getLogger(__name__)

METRIC_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                                 "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass(frozen=True)
class VideoAPParams:
    """Evaluation parameters; the defaults are the official YouTube-VIS ones."""

    iou_thresholds: tuple[float, ...] = tuple(np.linspace(0.5, 0.95, 10).tolist())
    recall_thresholds: tuple[float, ...] = tuple(np.linspace(0.0, 1.0, 101).tolist())
    max_dets: tuple[int, ...] = (1, 10, 100)
    area_ranges: tuple[tuple[str, float, float], ...] = (
        ("all", 0.0, 1e5 ** 2), ("small", 0.0, 128.0 ** 2),
        ("medium", 128.0 ** 2, 256.0 ** 2), ("large", 256.0 ** 2, 1e5 ** 2))


@dataclass(frozen=True)
class VideoAPResult:
    stats: dict[str, float]  # METRIC_NAMES -> value in [0, 1] or -1
    per_category_ap: dict[str, float]  # category name -> AP at maxDets 100 (-1 if undefined)
    precision: np.ndarray = field(repr=False)  # [T, R, K, A, M], -1 where undefined
    recall: np.ndarray = field(repr=False)  # [T, K, A, M], -1 where undefined
    num_videos: int = 0
    num_ground_truth: int = 0
    num_predictions: int = 0


@dataclass
class _Track:
    """One ground-truth object or prediction, its masks as compressed RLE."""

    rles: list[dict | None]
    areas: np.ndarray  # per-frame mask area (0 where absent)
    avg_area: float
    score: float = 0.0
    crowd: bool = False


def _video_area(areas: Iterable[float | None]) -> float:
    vals = [a for a in areas if a]  # skips None and 0, as the official code
    return float(np.mean(vals)) if vals else 0.0


def spatiotemporal_iou(dts: Sequence[_Track], gts: Sequence[_Track]) -> np.ndarray:
    """[D, G] matrix of sum-over-frames intersection / sum-over-frames union."""
    D, G = len(dts), len(gts)
    if D == 0 or G == 0:
        return np.zeros((D, G))
    a_d = np.stack([d.areas for d in dts])  # [D, T]
    a_g = np.stack([g.areas for g in gts])  # [G, T]
    union = a_d.sum(1)[:, None] + a_g.sum(1)[None, :]
    inter = np.zeros((D, G))
    for t in range(a_d.shape[1]):
        di = [i for i, d in enumerate(dts) if d.rles[t] is not None and a_d[i, t] > 0]
        gi = [j for j, g in enumerate(gts) if g.rles[t] is not None and a_g[j, t] > 0]
        if not di or not gi:
            continue
        iou = np.asarray(mask_utils.iou([dts[i].rles[t] for i in di], [gts[j].rles[t] for j in gi],
                                        [0] * len(gi)), dtype=np.float64).reshape(len(di), len(gi))
        # pycocotools gives i/u with integer i and u; i + u = a + b, so i is recovered exactly.
        s = a_d[di, t][:, None] + a_g[gi, t][None, :]
        inter[np.ix_(di, gi)] += np.rint(iou * s / (1.0 + iou))
    union -= inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_video(ious: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray,
                dt_out_of_range: np.ndarray, iou_thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of score-sorted predictions to objects of one (video, category).

    Returns ``matched`` and ``ignored``, both [T, D] booleans. Objects are expected in the order
    non-ignored first (stable), which is how the official code visits them.
    """
    T, (D, G) = len(iou_thresholds), ious.shape
    matched = np.zeros((T, D), dtype=bool)
    ignored = np.zeros((T, D), dtype=bool)
    gt_taken = np.zeros((T, G), dtype=bool)
    thr = np.minimum(iou_thresholds, 1 - 1e-10)[:, None]
    rows = np.arange(T)
    for d in range(D if G else 0):
        free = ~(gt_taken & ~gt_crowd[None, :])  # [T, G]
        ok = free & (ious[d][None, :] >= thr)
        # best IoU among eligible non-ignored objects; the later one on ties (reverse argmax)
        best = np.full((T,), -1)
        for group in (~gt_ignore, gt_ignore):
            cand = ok & group[None, :] & (best < 0)[:, None]
            vals = np.where(cand, ious[d][None, :], -np.inf)[:, ::-1]
            has = cand.any(1)
            best = np.where(has, G - 1 - np.argmax(vals, axis=1), best)
        hit = best >= 0
        matched[hit, d] = True
        ignored[hit, d] = gt_ignore[best[hit]]
        gt_taken[rows[hit], best[hit]] = True
    ignored |= ~matched & dt_out_of_range[None, :]
    return matched, ignored


def track_areas(rles: Sequence[dict | None]) -> np.ndarray:
    """Per-frame mask areas of one track (0 where absent), in one pycocotools call."""
    out = np.zeros(len(rles))
    idx = [t for t, r in enumerate(rles) if r is not None]
    if idx:
        out[idx] = mask_utils.area([rles[t] for t in idx])
    return out


def _prepare_tracks(dataset: Dataset, predictions: Sequence[Prediction], max_det: int
                    ) -> tuple[dict[tuple[int, int], list[_Track]], dict[tuple[int, int], list[_Track]]]:
    videos = dataset.videos_by_id
    gts: dict[tuple[int, int], list[_Track]] = defaultdict(list)
    for ann in dataset.annotations or ():
        v = videos[ann.video_id]
        rles = [segmentation_to_rle(s, v.height, v.width) for s in ann.segmentations]
        areas = track_areas(rles)
        gts[ann.video_id, ann.category_id].append(
            _Track(rles, areas, _video_area(ann.areas), crowd=bool(ann.iscrowd)))
    grouped: dict[tuple[int, int], list[Prediction]] = defaultdict(list)
    unknown = 0
    for p in predictions:
        if p.category_id in dataset.categories_by_id:
            grouped[p.video_id, p.category_id].append(p)
        else:
            unknown += 1
    if unknown:
        logger.warning("%d predictions have a category_id absent from the ground truth; ignored "
                       "(as the official evaluation does)", unknown)
    dts: dict[tuple[int, int], list[_Track]] = {}
    for key, preds in grouped.items():
        v = videos[key[0]]
        order = np.argsort([-p.score for p in preds], kind="mergesort")[:max_det]
        tracks = []
        for i in order:
            rles = [segmentation_to_rle(s, v.height, v.width) for s in preds[i].segmentations]
            areas = track_areas(rles)
            tracks.append(_Track(rles, areas, _video_area(areas), score=preds[i].score))
        dts[key] = tracks
    return gts, dts


def _interpolated_precision(tp: np.ndarray, fp: np.ndarray, npig: int,
                            rec_thrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """tp, fp: [T, N] cumulative counts -> precision [T, R], recall [T]."""
    T, N = tp.shape
    if N == 0:
        return np.zeros((T, len(rec_thrs))), np.zeros(T)
    rc = tp / npig
    pr = tp / (fp + tp + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # monotone non-increasing
    q = np.zeros((T, len(rec_thrs)))
    for t in range(T):
        idx = np.searchsorted(rc[t], rec_thrs, side="left")
        ok = idx < N
        q[t, ok] = pr[t, idx[ok]]
    return q, rc[:, -1]


def evaluate_video_ap(dataset: Dataset, predictions: Sequence[Prediction],
                      params: VideoAPParams = VideoAPParams()) -> VideoAPResult:
    """Video AP/AR of ``predictions`` against the annotations of ``dataset``."""
    if dataset.annotations is None:
        raise ValueError("the ground truth has no annotations (an unlabelled split?)")
    iou_thrs = np.asarray(params.iou_thresholds)
    rec_thrs = np.asarray(params.recall_thresholds)
    max_dets = sorted(params.max_dets)
    cat_ids = sorted(dataset.categories_by_id)
    vid_ids = sorted(dataset.videos_by_id)
    T, R, K, A, M = len(iou_thrs), len(rec_thrs), len(cat_ids), len(params.area_ranges), len(max_dets)
    gts, dts = _prepare_tracks(dataset, predictions, max_dets[-1])

    # per (category, area): per-video (scores, matched [T, D], ignored [T, D], n non-ignored gt)
    per_ka: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]] = defaultdict(list)
    for k, cat in enumerate(cat_ids):
        for vid in vid_ids:
            g, d = gts.get((vid, cat), []), dts.get((vid, cat), [])
            if not g and not d:
                continue
            ious = spatiotemporal_iou(d, g)
            crowd = np.array([x.crowd for x in g], dtype=bool)
            g_area = np.array([x.avg_area for x in g])
            d_area = np.array([x.avg_area for x in d])
            scores = np.array([x.score for x in d])
            for a, (_, lo, hi) in enumerate(params.area_ranges):
                ignore = crowd | (g_area < lo) | (g_area > hi)
                order = np.argsort(ignore, kind="mergesort")
                matched, ignored = match_video(ious[:, order], ignore[order], crowd[order],
                                               (d_area < lo) | (d_area > hi), iou_thrs)
                per_ka[k, a].append((scores, matched, ignored, int((~ignore).sum())))

    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    for (k, a), entries in per_ka.items():
        npig = sum(e[3] for e in entries)
        if npig == 0:
            continue
        for m, max_det in enumerate(max_dets):
            scores = np.concatenate([e[0][:max_det] for e in entries])
            order = np.argsort(-scores, kind="mergesort")
            matched = np.concatenate([e[1][:, :max_det] for e in entries], axis=1)[:, order]
            ignored = np.concatenate([e[2][:, :max_det] for e in entries], axis=1)[:, order]
            tp = np.cumsum(matched & ~ignored, axis=1).astype(np.float64)
            fp = np.cumsum(~matched & ~ignored, axis=1).astype(np.float64)
            precision[:, :, k, a, m], recall[:, k, a, m] = _interpolated_precision(tp, fp, npig, rec_thrs)

    stats = summarize(precision, recall, params)
    names = dataset.categories_by_id
    counts = defaultdict(int)
    for c in cat_ids:
        counts[names[c].name] += 1
    # keyed by name; by "name (id)" where names repeat
    per_cat = {(names[c].name if counts[names[c].name] == 1 else f"{names[c].name} ({c})"):
               _mean_defined(precision[:, :, k, 0, len(max_dets) - 1]) for k, c in enumerate(cat_ids)}
    n_dt = sum(len(v) for v in dts.values())
    logger.info("video AP over %d videos, %d objects, %d predictions: AP=%.4f", len(vid_ids),
                len(dataset.annotations), n_dt, stats["AP"])
    return VideoAPResult(stats, per_cat, precision, recall, len(vid_ids), len(dataset.annotations), n_dt)


def _mean_defined(values: np.ndarray) -> float:
    ok = values > -1
    return float(np.mean(values[ok])) if ok.any() else -1.0


def summarize(precision: np.ndarray, recall: np.ndarray, params: VideoAPParams = VideoAPParams()
              ) -> dict[str, float]:
    """The 12 standard numbers from precision [T, R, K, A, M] and recall [T, K, A, M]."""
    iou_thrs = np.asarray(params.iou_thresholds)
    area = {name: i for i, (name, _, _) in enumerate(params.area_ranges)}
    md = sorted(params.max_dets)
    mi = {d: i for i, d in enumerate(md)}

    def ap(iou: float | None = None, rng: str = "all", max_det: int = md[-1]) -> float:
        s = precision[..., area[rng], mi[max_det]]
        if iou is not None:
            s = s[np.where(iou_thrs == iou)[0]]
        return _mean_defined(s)

    def ar(rng: str = "all", max_det: int = md[-1]) -> float:
        return _mean_defined(recall[..., area[rng], mi[max_det]])

    return {
        "AP": ap(), "AP50": ap(0.5), "AP75": ap(0.75),
        "APs": ap(rng="small"), "APm": ap(rng="medium"), "APl": ap(rng="large"),
        "AR1": ar(max_det=md[0]), "AR10": ar(max_det=md[1]), "AR100": ar(max_det=md[2]),
        "ARs": ar("small"), "ARm": ar("medium"), "ARl": ar("large"),
    }

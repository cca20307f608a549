"""Why the objects no prediction finds are missed (issue #5 diagnostic).

An object is *missed* when no prediction of its class reaches spatio-temporal mask IoU 0.5 with it
(what video AP50 needs). For each missed object, every frame where it is visible is *covered* by
the prediction whose mask there has IoU >= 0.5 with it, if any; then the object is

* ``never covered``: covered in fewer than 20% of its frames;
* ``split``: covered by two or more predictions (each holds it for a part of its frames);
* ``hop``: covered by one prediction that, in other frames, covers another object (the track
  jumped between objects, typically to a new one of the same class when its own disappeared);
* ``partial``: covered by one prediction in 20-60% of its frames (picked up late or lost early);
* ``extra frames``: covered by one prediction in at least 60% of its frames, which still misses
  0.5 video IoU (masks in frames where the object is absent, or poor masks elsewhere).

``--oracle`` takes the prediction file ``research/oracle_association.py --out`` writes (the same
segmenter with perfect association) and splits each kind by whether the segmenter alone could
give the object: ``segmenter`` (its oracle track has video IoU < 0.5 too) or ``tracker``.
Last, every hop of every prediction (it covers one object, then, in a later frame, another) is
counted by whether the second object has the first one's class and whether the first was still
in view when the prediction moved.

    .venv/bin/python research/missed_objects.py PREDICTIONS.json GROUND_TRUTH.json [--oracle ORACLE.json]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daq_eval.video_ap import spatiotemporal_iou  # noqa: E402
from daq_eval.ytvis_format import (Annotation, Dataset, Prediction, is_present, read_dataset,  # noqa: E402
                                  read_predictions)
from research.ap_error_breakdown import _tracks  # noqa: E402

KINDS = ("never covered", "split", "hop", "partial", "extra frames")


def _frame_iou(a, b) -> float:
    from pycocotools import mask as mask_utils

    if a is None or b is None or mask_utils.area(a) == 0 or mask_utils.area(b) == 0:
        return 0.0
    return float(mask_utils.iou([a], [b], [0])[0][0])


def _videos(dataset: Dataset, predictions: tuple[Prediction, ...]):
    """Per video: its objects (no crowds), their tracks, its predictions and their tracks."""
    by_video: dict[int, list[Prediction]] = collections.defaultdict(list)
    for p in predictions:
        by_video[p.video_id].append(p)
    for video in dataset.videos:
        anns = [a for a in dataset.annotations_by_video[video.id] if not a.iscrowd]
        preds = by_video.get(video.id, [])
        yield (video, anns, _tracks([a.segmentations for a in anns], video.height, video.width),
               preds, _tracks([p.segmentations for p in preds], video.height, video.width))


def best_video_iou(dataset: Dataset, predictions: tuple[Prediction, ...]) -> dict[int, float]:
    """Annotation id -> the best spatio-temporal IoU a prediction of its class reaches."""
    best: dict[int, float] = {}
    for _, anns, gt_tracks, preds, dt_tracks in _videos(dataset, predictions):
        ious = spatiotemporal_iou(dt_tracks, gt_tracks) if preds and anns else np.zeros((len(preds), len(anns)))
        for j, a in enumerate(anns):
            same = [i for i, p in enumerate(preds) if p.category_id == a.category_id]
            best[a.id] = float(ious[same, j].max()) if same else 0.0
    return best


def _covers(length: int, anns: list[Annotation], gt_tracks, dt_tracks) -> list[list[int | None]]:
    """covers[i][t]: the annotation prediction i covers in frame t (mask IoU >= 0.5), or None."""
    out = []
    for d in dt_tracks:
        row = []
        for t in range(length):
            iou, aid = max(((_frame_iou(d.rles[t], g.rles[t]), a.id) for a, g in zip(anns, gt_tracks)),
                           default=(0.0, None))
            row.append(aid if iou >= 0.5 else None)
        out.append(row)
    return out


def hops(dataset: Dataset, predictions: tuple[Prediction, ...]) -> collections.Counter:
    """Every place where a prediction stops covering one object and next covers another:
    counted as ``(same class?, was the first object visible in the frame the second is covered?)``."""
    counts: collections.Counter = collections.Counter()
    for video, anns, gt_tracks, _, dt_tracks in _videos(dataset, predictions):
        areas = {a.id: g.areas for a, g in zip(anns, gt_tracks)}
        category = {a.id: a.category_id for a in anns}
        for row in _covers(video.length, anns, gt_tracks, dt_tracks):
            last = None
            for t, aid in enumerate(row):
                if aid is None:
                    continue
                if last is not None and aid != last:
                    counts[(category[aid] == category[last], bool(areas[last][t] > 0))] += 1
                last = aid
    return counts


def classify_missed(dataset: Dataset, predictions: tuple[Prediction, ...]) -> dict[int, str]:
    """Annotation id -> kind (see the module docstring), for every missed object."""
    best = best_video_iou(dataset, predictions)
    kinds: dict[int, str] = {}
    for video, anns, gt_tracks, _, dt_tracks in _videos(dataset, predictions):
        if all(best[a.id] >= 0.5 for a in anns):
            continue
        covers = _covers(video.length, anns, gt_tracks, dt_tracks)
        for a, track in zip(anns, gt_tracks):
            if best[a.id] >= 0.5:
                continue
            visible = np.flatnonzero(track.areas > 0).tolist()
            holders = {i for i, row in enumerate(covers) for t in visible if row[t] == a.id}
            covered = sum(1 for t in visible if any(row[t] == a.id for row in covers))
            share = covered / max(1, len(visible))
            if share < 0.2:
                kinds[a.id] = "never covered"
            elif len(holders) > 1:
                kinds[a.id] = "split"
            elif any(x not in (None, a.id) for x in covers[holders.pop()]):
                kinds[a.id] = "hop"
            else:
                kinds[a.id] = "partial" if share < 0.6 else "extra frames"
    return kinds


def _describe(annotations: list[Annotation], kinds: dict[int, str], oracle: dict[int, float] | None) -> list[str]:
    counts: collections.Counter = collections.Counter()
    frames: dict[str, list[int]] = collections.defaultdict(list)
    for a in annotations:
        if a.id not in kinds:
            continue
        cause = "" if oracle is None else ("segmenter" if oracle.get(a.id, 0.0) < 0.5 else "tracker")
        counts[(kinds[a.id], cause)] += 1
        frames[kinds[a.id]].append(sum(1 for s in a.segmentations if is_present(s)))
    lines = []
    for kind in KINDS:
        n = sum(v for (k, _), v in counts.items() if k == kind)
        if not n:
            continue
        detail = "" if oracle is None else (f"  (segmenter {counts[(kind, 'segmenter')]}, "
                                            f"tracker {counts[(kind, 'tracker')]})")
        lines.append(f"{kind:14s} {n:4d}  median {np.median(frames[kind]):.0f} frames visible{detail}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path)
    parser.add_argument("ground_truth", type=Path)
    parser.add_argument("--oracle", type=Path, default=None,
                        help="oracle_association.py --out predictions: split each kind by segmenter/tracker")
    args = parser.parse_args()
    dataset = read_dataset(args.ground_truth)
    predictions = read_predictions(args.predictions, dataset)
    kinds = classify_missed(dataset, predictions)
    oracle = best_video_iou(dataset, read_predictions(args.oracle, dataset)) if args.oracle else None
    annotations = [a for a in dataset.annotations or () if not a.iscrowd]
    print(f"{len(annotations)} objects, {len(kinds)} missed (no prediction of their class at video IoU >= 0.5)")
    if oracle is not None:
        found = sum(1 for a in annotations if oracle.get(a.id, 0.0) >= 0.5)
        print(f"perfect association on the segmenter finds {found}; of the missed, "
              f"{sum(1 for k in kinds if oracle.get(k, 0.0) < 0.5)} are beyond it")
    print("\n".join(_describe(annotations, kinds, oracle)))
    moves = hops(dataset, predictions)
    print(f"hops (a prediction covers one object, then another): {sum(moves.values())}; "
          f"to an object of the same class {sum(v for (same, _), v in moves.items() if same)}; "
          f"while the first was out of view {sum(v for (_, seen), v in moves.items() if not seen)}; "
          f"both {moves[(True, False)]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

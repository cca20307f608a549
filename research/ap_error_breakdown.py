"""Where a prediction file loses video AP: a TIDE-style error breakdown (issue #5 tool).

Every prediction of every video is compared, across classes, with every ground-truth object by
spatio-temporal mask IoU, and sorted by score; greedily (highest score first) it is one of

* ``correct``: IoU >= 0.5 with an object of its class that no higher-scoring prediction took;
* ``duplicate``: IoU >= 0.5 with an object of its class that a higher-scoring prediction took;
* ``class``: IoU >= 0.5 only with an object of another class;
* ``localization``: best same-class IoU in [0.1, 0.5): a fragment of a track (an id switch cuts
  an object's video in pieces) or a poor mask;
* ``both``: IoU in [0.1, 0.5) only with objects of other classes;
* ``background``: IoU < 0.1 with every object;

and an object no ``correct`` prediction took is ``missed``. Then each error kind is fixed on its
own and video AP recomputed (``daq_eval.video_ap``): duplicates, ``both`` and background removed;
class errors relabelled to the object's class (removed where that object is already taken);
localization errors given the object's own masks (removed where it is taken); the gain over the
file's AP says what each kind costs. Fixing localization is the upper bound of a perfect
association of the same detections.

    .venv/bin/python research/ap_error_breakdown.py PREDICTIONS.json GROUND_TRUTH.json
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daq_eval.video_ap import _Track, _video_area, evaluate_video_ap, spatiotemporal_iou, track_areas  # noqa: E402
from daq_eval.ytvis_format import Dataset, Prediction, read_dataset, read_predictions, segmentation_to_rle  # noqa: E402

KINDS = ("correct", "duplicate", "class", "localization", "both", "background")


def _tracks(segmentations_list, height: int, width: int) -> list[_Track]:
    out = []
    for segs in segmentations_list:
        rles = [segmentation_to_rle(s, height, width) for s in segs]
        areas = track_areas(rles)
        out.append(_Track(rles, areas, _video_area(areas)))
    return out


def classify(dataset: Dataset, predictions: tuple[Prediction, ...]
             ) -> tuple[list[tuple[Prediction, str, object]], int]:
    """[(prediction, kind, the object it is measured against or None)] and the missed count."""
    by_video: dict[int, list[Prediction]] = collections.defaultdict(list)
    for p in predictions:
        by_video[p.video_id].append(p)
    result, missed = [], 0
    for video in dataset.videos:
        anns = [a for a in dataset.annotations_by_video[video.id] if not a.iscrowd]
        preds = sorted(by_video.get(video.id, []), key=lambda p: -p.score)
        ious = spatiotemporal_iou(_tracks([p.segmentations for p in preds], video.height, video.width),
                                  _tracks([a.segmentations for a in anns], video.height, video.width))
        taken: set[int] = set()
        for i, p in enumerate(preds):
            same = [j for j, a in enumerate(anns) if a.category_id == p.category_id]
            other = [j for j, a in enumerate(anns) if a.category_id != p.category_id]
            best_same = max(same, key=lambda j: ious[i, j], default=None)
            free_same = [j for j in same if j not in taken and ious[i, j] >= 0.5]
            best_other = max(other, key=lambda j: ious[i, j], default=None)
            iou_same = ious[i, best_same] if best_same is not None else 0.0
            iou_other = ious[i, best_other] if best_other is not None else 0.0
            if free_same:
                j = max(free_same, key=lambda j: ious[i, j])
                taken.add(j)
                result.append((p, "correct", anns[j]))
            elif iou_same >= 0.5:
                result.append((p, "duplicate", anns[best_same]))
            elif iou_other >= 0.5:
                result.append((p, "class", anns[best_other]))
            elif iou_same >= 0.1:
                result.append((p, "localization", anns[best_same]))
            elif iou_other >= 0.1:
                result.append((p, "both", anns[best_other]))
            else:
                result.append((p, "background", None))
        missed += len(anns) - len(taken)
    return result, missed


def localization_split(dataset: Dataset, classified) -> collections.Counter:
    """Localization errors split into ``fragment`` (per-frame mask IoU >= 0.5 on average over the
    frames where both the prediction and the object have a mask: a track that holds the object for
    only part of its frames) and ``mask`` (poor masks where they overlap in time)."""
    from pycocotools import mask as mask_utils

    videos = dataset.videos_by_id
    split: collections.Counter = collections.Counter()
    for p, kind, obj in classified:
        if kind != "localization":
            continue
        v = videos[p.video_id]
        ious = []
        for seg_p, seg_o in zip(p.segmentations, obj.segmentations):
            a, b = segmentation_to_rle(seg_p, v.height, v.width), segmentation_to_rle(seg_o, v.height, v.width)
            if a is not None and b is not None and mask_utils.area(a) > 0 and mask_utils.area(b) > 0:
                ious.append(float(mask_utils.iou([a], [b], [0])[0][0]))
        split["fragment" if ious and np.mean(ious) >= 0.5 else "mask"] += 1
    return split


def fixed_predictions(classified, kind: str, only: str | None = None) -> list[Prediction]:
    """The predictions with every error of ``kind`` fixed (see the module docstring); ``only``
    ``"taken"`` / ``"free"`` fixes just the errors whose object a correct prediction did / did not
    take (the first are removed, the second repaired)."""
    correct = {id(obj) for _, k, obj in classified if k == "correct"}
    taken = set(correct)
    out = []
    for p, k, obj in classified:
        skip = only is not None and (id(obj) in correct) != (only == "taken")
        if k != kind or skip:
            out.append(p)
        elif kind == "class" and id(obj) not in taken:
            taken.add(id(obj))
            out.append(dataclasses.replace(p, category_id=obj.category_id))
        elif kind == "localization" and id(obj) not in taken:
            taken.add(id(obj))
            out.append(dataclasses.replace(p, segmentations=obj.segmentations))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path)
    parser.add_argument("ground_truth", type=Path)
    args = parser.parse_args()
    dataset = read_dataset(args.ground_truth)
    predictions = read_predictions(args.predictions, dataset)
    classified, missed = classify(dataset, predictions)
    base = evaluate_video_ap(dataset, predictions).stats["AP"]
    counts = collections.Counter(k for _, k, _ in classified)
    print(f"{len(predictions)} predictions, {len(dataset.annotations or ())} objects, "
          f"{missed} missed; video AP {100 * base:.2f}")
    print(f"{'kind':14s} {'count':>6s} {'score>=0.3':>10s} {'AP if fixed':>11s} {'gain':>6s}")
    for kind in KINDS:
        high = sum(1 for p, k, _ in classified if k == kind and p.score >= 0.3)
        if kind == "correct":
            print(f"{kind:14s} {counts[kind]:6d} {high:10d}")
            continue
        ap = evaluate_video_ap(dataset, fixed_predictions(classified, kind)).stats["AP"]
        print(f"{kind:14s} {counts[kind]:6d} {high:10d} {100 * ap:11.2f} {100 * (ap - base):+6.2f}")
    for only, what in (("taken", "removing those over an object already found"),
                       ("free", "repairing those over an object not found")):
        ap = evaluate_video_ap(dataset, fixed_predictions(classified, "localization", only)).stats["AP"]
        print(f"localization, only {what}: AP {100 * ap:.2f} ({100 * (ap - base):+.2f})")
    split = localization_split(dataset, classified)
    print(f"localization: {split['fragment']} fragments (per-frame IoU >= 0.5 where both have a mask), "
          f"{split['mask']} poor masks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Merge predictions that follow one object in turn into one track (issue #5 experiment).

A post-processing of a YouTube-VIS prediction file, not part of DVIS-DAQ. Within a video and a
category, two predictions are linked when, over the frames where both have a non-empty mask, at
least ``--min-agree`` of those frames (and at least two) have mask IoU >= ``--iou``; linked groups
(transitively) become one prediction with the highest-scoring member's score and, in each frame,
the mask of the highest-scoring member that has one there. So a track that ends or goes empty is
continued by the track that shadowed it (``docs/results/tracker_error_analysis/``).

    .venv/bin/python scripts/merge_track_fragments.py PREDICTIONS.json GROUND_TRUTH.json --out MERGED.json
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daq_eval.ytvis_format import (Dataset, Prediction, read_dataset, read_predictions,  # noqa: E402
                                   segmentation_to_rle, write_predictions)


def _linked(a: list, b: list, iou: float, min_agree: float) -> bool:
    from pycocotools import mask as mask_utils

    both = [t for t, (x, y) in enumerate(zip(a, b))
            if x is not None and y is not None and mask_utils.area(x) > 0 and mask_utils.area(y) > 0]
    if not both:
        return False
    agree = sum(float(mask_utils.iou([a[t]], [b[t]], [0])[0][0]) >= iou for t in both)
    return agree >= 2 and agree >= min_agree * len(both)


def merge(dataset: Dataset, predictions: tuple[Prediction, ...], iou: float = 0.5,
          min_agree: float = 0.5) -> list[Prediction]:
    groups: dict[tuple[int, int], list[Prediction]] = collections.defaultdict(list)
    for p in predictions:
        groups[p.video_id, p.category_id].append(p)
    out = []
    for (video_id, _), preds in groups.items():
        video = dataset.videos_by_id[video_id]
        preds = sorted(preds, key=lambda p: -p.score)
        rles = [[segmentation_to_rle(s, video.height, video.width) for s in p.segmentations] for p in preds]
        root = list(range(len(preds)))

        def find(i: int) -> int:
            while root[i] != i:
                i = root[i]
            return i

        for i in range(len(preds)):
            for j in range(i + 1, len(preds)):
                if find(i) != find(j) and _linked(rles[i], rles[j], iou, min_agree):
                    root[max(find(i), find(j))] = min(find(i), find(j))
        members: dict[int, list[int]] = collections.defaultdict(list)
        for i in range(len(preds)):
            members[find(i)].append(i)  # ascending: highest score first
        for head, group in members.items():
            segs = []
            for t in range(len(preds[head].segmentations)):
                have = [i for i in group if rles[i][t] is not None and _area(rles[i][t]) > 0]
                segs.append(preds[have[0]].segmentations[t] if have else None)
            out.append(dataclasses.replace(preds[head], segmentations=tuple(segs)))
    return out


def _area(rle: dict) -> int:
    from pycocotools import mask as mask_utils

    return int(mask_utils.area(rle))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path)
    parser.add_argument("ground_truth", type=Path, help="the dataset (its videos' sizes)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--min-agree", type=float, default=0.5)
    args = parser.parse_args()
    dataset = read_dataset(args.ground_truth)
    predictions = read_predictions(args.predictions, dataset)
    merged = merge(dataset, predictions, args.iou, args.min_agree)
    write_predictions(merged, args.out)
    print(f"{len(predictions)} predictions -> {len(merged)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

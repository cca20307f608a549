"""Apply ``daq_model.fragment_merge`` to an existing YouTube-VIS prediction file (issue #5 tool).

Same-class predictions of a video that follow one object in turn are merged into one, as
``daq-label predict`` / ``daq-label label`` do when the model config sets
``test.merge_fragments_iou`` (``docs/results/fragment_merge/``). For scoring a prediction file
made without it, or trying other thresholds without running the model again.

    .venv/bin/python research/merge_track_fragments.py PREDICTIONS.json GROUND_TRUTH.json --out MERGED.json \\
        [--iou 0.5] [--min-agree 0.5]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daq_eval.predict import merge_fragment_segmentations  # noqa: E402
from daq_eval.ytvis_format import Dataset, Prediction, read_dataset, read_predictions, write_predictions  # noqa: E402
from daq_model.config import TestConfig  # noqa: E402
from daq_model.outputs import Instance  # noqa: E402


def merge(dataset: Dataset, predictions: tuple[Prediction, ...], iou: float = 0.5,
          min_agree: float = 0.5) -> list[Prediction]:
    """The predictions, video by video, after merging (category ids stand in for labels)."""
    test = TestConfig(merge_fragments_iou=iou, merge_fragments_agree=min_agree)
    by_video: dict[int, list[Prediction]] = collections.defaultdict(list)
    for p in predictions:
        by_video[p.video_id].append(p)
    out = []
    for video_id, preds in by_video.items():
        instances = [Instance(i, i, p.category_id, p.score) for i, p in enumerate(preds)]
        kept, segs = merge_fragment_segmentations(instances, [list(p.segmentations) for p in preds], test)
        for inst, seg in zip(kept, segs):
            head = preds[inst.instance_id]
            out.append(Prediction(video_id, head.category_id, head.score, tuple(seg), head.extra))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path)
    parser.add_argument("ground_truth", type=Path, help="the dataset the predictions are of")
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

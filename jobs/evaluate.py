"""``daq-label evaluate``: YouTube-VIS video AP (and tracking metrics) of a prediction file."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from daq_eval.subsets import SUBSETS

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Evaluate YouTube-VIS-format predictions against YouTube-VIS-format ground truth.

Video AP follows the official YouTube-VIS evaluation: spatio-temporal mask IoU, IoU thresholds
0.50:0.05:0.95, 101-point interpolated precision, maxDets 1/10/100, video-level area ranges
small <= 128^2 <= medium <= 256^2 <= large (mean of the per-frame areas), iscrowd objects ignored.
Metrics are fractions in [0, 1]; -1 where undefined (no ground truth in that range).

Tracking metrics (ID switches, pickup latency of new objects, re-appearances) use per-frame
one-to-one matching at mask IoU >= --track-iou among predictions with score >= --track-score;
see daq_eval/tracking_metrics.py for the exact definitions.

--objects appear-disappear evaluates the objects whose presence changes inside the video (absent
in the first or last frame, or with a gap): the other objects become ignored (iscrowd), so
predictions of them count neither as true nor as false positives (daq_eval/subsets.py).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("predictions", type=Path, metavar="PREDICTIONS.json",
                        help="list of {video_id, category_id, score, segmentations}")
    parser.add_argument("ground_truth", type=Path, metavar="GROUND_TRUTH.json",
                        help="YouTube-VIS annotation file {videos, annotations, categories}")
    parser.add_argument("--out", type=Path, default=None, metavar="metrics.json",
                        help="write all metrics here as JSON (default: print only)")
    parser.add_argument("--track-iou", type=float, default=0.5,
                        help="per-frame mask IoU needed for a tracking match (default 0.5)")
    parser.add_argument("--track-score", type=float, default=0.5,
                        help="predictions below this score are left out of the tracking metrics "
                             "(default 0.5; video AP always uses every prediction)")
    parser.add_argument("--track-class-aware", action="store_true",
                        help="tracking matches need the prediction's category to equal the object's")
    parser.add_argument("--no-tracking", action="store_true", help="skip the tracking metrics")
    parser.add_argument("--objects", choices=SUBSETS, default="all",
                        help="evaluate these objects only, ignoring the others (default: all)")


def _fmt(x: object) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4f}"
    return str(x)


def format_table(metrics: dict) -> str:
    """Plain-text table of the metrics (what the command prints)."""
    from daq_eval.video_ap import METRIC_NAMES

    subset = metrics.get("objects", {}).get("subset", "all")
    title = "Video AP (YouTube-VIS)" + ("" if subset == "all" else
                                        f", objects: {subset} ({metrics['objects']['evaluated_objects']})")
    lines = [title, "  " + " ".join(f"{n:>7}" for n in METRIC_NAMES),
             "  " + " ".join(f"{metrics[n]:7.4f}" for n in METRIC_NAMES)]
    per_cat = metrics.get("per_category_AP", {})
    if per_cat:
        lines.append("Per-category AP")
        width = max(len(n) for n in per_cat)
        lines += [f"  {name:<{width}}  {ap:7.4f}" for name, ap in per_cat.items()]
    tr = metrics.get("tracking")
    if tr:
        lines.append(f"Tracking (IoU >= {tr['params']['iou_threshold']}, "
                     f"score >= {tr['params']['score_threshold']})")
        rows = [("objects", tr["objects"]), ("matched frame fraction", tr["matched_frame_fraction"]),
                ("ID switches", tr["id_switches"]),
                ("  of which at re-appearance", tr["id_switches_at_reappearance"])]
        for key, label in (("pickup_first_frame_objects", "objects in frame 0"),
                           ("pickup_new_objects", "new objects (appear later)")):
            s = tr[key]
            rows += [(f"{label}", s["objects"]), ("  never picked up", s["never_picked_up"]),
                     ("  mean / median pickup latency (frames)",
                      f"{_fmt(s['mean_latency_frames'])} / {_fmt(s['median_latency_frames'])}")]
        r = tr["reappearance"]
        rows += [("re-appearances", r["events"]), ("  recovered", r["recovered"]),
                 ("  same identity", f"{r['same_identity']} / {r['events_with_prior_match']}")]
        width = max(len(k) for k, _ in rows)
        lines += [f"  {k:<{width}}  {_fmt(v)}" for k, v in rows]
    return "\n".join(lines)


def compute_metrics(dataset, predictions: Sequence, tracking=None, objects: str = "all") -> dict:
    """Video AP (+ tracking metrics unless ``tracking`` is None) of ``predictions``, as printed
    by the command; ``objects``: a :data:`daq_eval.subsets.SUBSETS` name."""
    from daq_eval.subsets import object_subset
    from daq_eval.tracking_metrics import evaluate_tracking
    from daq_eval.video_ap import evaluate_video_ap

    dataset, kept = object_subset(dataset, objects)
    result = evaluate_video_ap(dataset, predictions)
    metrics: dict = dict(result.stats)
    metrics["per_category_AP"] = result.per_category_ap
    metrics["counts"] = {"videos": result.num_videos, "ground_truth_objects": result.num_ground_truth,
                         "predictions_evaluated": result.num_predictions,
                         "predictions_in_file": len(predictions)}
    metrics["objects"] = {"subset": objects, "evaluated_objects": kept}
    if tracking is not None:
        metrics["tracking"] = evaluate_tracking(dataset, predictions, tracking)
    return metrics


def run(args: argparse.Namespace) -> int:
    from daq_eval.tracking_metrics import TrackingParams
    from daq_eval.ytvis_format import YTVISFormatError, read_dataset, read_predictions

    try:
        dataset = read_dataset(args.ground_truth)
        predictions = read_predictions(args.predictions, dataset)
    except YTVISFormatError as exc:
        logger.error("%s", exc)
        return 2
    if dataset.annotations is None:
        logger.error("%s: 'annotations' is null (an unlabelled split); nothing to evaluate against",
                     args.ground_truth)
        return 2
    logger.info("evaluating %d predictions on %d videos", len(predictions), len(dataset.videos))
    params = None if args.no_tracking else TrackingParams(args.track_iou, args.track_score,
                                                          args.track_class_aware)
    metrics = compute_metrics(dataset, predictions, params, args.objects)
    metrics["inputs"] = {"predictions": str(args.predictions), "ground_truth": str(args.ground_truth)}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(metrics, indent=2) + "\n")
        logger.info("wrote %s", args.out)
    sys.stdout.write(format_table(metrics) + "\n")
    return 0

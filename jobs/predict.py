"""``daq-label predict``: run a model over a YouTube-VIS-format folder, write predictions JSON."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Run DVIS-DAQ (the streaming predictor of the label job) over every video of a YouTube-VIS-format
dataset and write the official prediction file: a JSON list of {video_id, category_id, score,
segmentations}, one entry per instance of the model's final result, one COCO RLE per frame at the
video's size (null where the instance has no mask). category_id is the dataset's id of the
instance's class (by class name, or by position with --category-map order).

Online models: an instance's masks are its track's masks from the per-frame stream. Offline
models: the refiner's masks. --mode online runs an offline checkpoint without its refiner.

Evaluate in the same command with --evaluate, or in two:
  daq-label predict --data runs/data/synth_heldout --out runs/pred.json
  daq-label evaluate runs/pred.json runs/data/synth_heldout/annotations.json --out metrics.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, metavar="ROOT",
                      help="dataset root: ROOT/annotations.json and frames under ROOT/JPEGImages")
    data.add_argument("--annotations", type=Path, metavar="JSON",
                      help="annotation file (instead of --data; ground truth may be null)")
    data.add_argument("--images", type=Path, metavar="DIR",
                      help="folder the annotation file's file_names are relative to")
    data.add_argument("--videos", type=int, default=None, metavar="N",
                      help="only the first N videos (quick checks; --evaluate then scores those)")
    model = parser.add_argument_group("model (default: the shipped model)")
    model.add_argument("--checkpoint", default=None, metavar="PATH",
                       help="checkpoint (ours or an official one); default: daq_model/pretrained")
    model.add_argument("--config", default=None, metavar="PRESET|YAML",
                       help="model config (default: the shipped card's, else the checkpoint's own)")
    model.add_argument("--mode", choices=("auto", "online", "offline"), default="auto",
                       help="online: tracker masks (an offline checkpoint without its refiner); "
                            "offline: refiner masks (needs an offline model); auto: the config's")
    model.add_argument("--category-map", choices=("auto", "name", "order"), default="auto",
                       help="model class -> dataset category: by name (auto when the names match) "
                            "or by position in id order")
    model.add_argument("--no-merge-fragments", action="store_true",
                       help="official post-processing: do not merge the instances that follow one "
                            "object in turn, even where the config does (the shipped model's does)")
    model.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    model.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, required=True, metavar="predictions.json")
    out.add_argument("--evaluate", action="store_true",
                     help="then evaluate against the dataset's annotations and print the metrics")
    out.add_argument("--metrics", type=Path, default=None, metavar="metrics.json",
                     help="with --evaluate: also write the metrics here")
    out.add_argument("--objects", default="all", choices=("all", "appear-disappear", "persistent"),
                     help="with --evaluate: the object subset (see daq-label evaluate --help)")


def _source(args: argparse.Namespace) -> tuple[Path, Path]:
    if args.data is not None:
        if args.annotations is not None or args.images is not None:
            raise ValueError("give --data ROOT or --annotations JSON --images DIR, not both")
        return args.data / "annotations.json", args.data / "JPEGImages"
    if args.annotations is None or args.images is None:
        raise ValueError("give --data ROOT, or --annotations JSON with --images DIR")
    return args.annotations, args.images


def load_predictor(checkpoint: str | None, config: str | None, mode: str, device: str,
                   merge_fragments: bool = True):
    """The predictor of ``--checkpoint/--config`` (or the shipped model), in ``mode``."""
    import dataclasses

    from daq_model.config import OFFLINE, ONLINE
    from daq_model.dvis_daq import create_model
    from daq_model.predictor import VideoPredictor
    from pipeline.model_source import resolve_model, without_fragment_merging

    spec = resolve_model(checkpoint, config)
    if not merge_fragments:
        spec = without_fragment_merging(spec)
    cfg = spec.config
    if mode == "offline" and not cfg.offline:
        raise ValueError(f"--mode offline: {spec.checkpoint} is an online model (no refiner)")
    drop_refiner = mode == "online" and cfg.offline
    if drop_refiner:
        cfg = dataclasses.replace(cfg, meta_architecture=ONLINE)
    model = create_model(cfg, spec.checkpoint, device=device)
    logger.info("model %s (%s, %s%s) from %s", spec.model_name, cfg.name,
                "offline" if cfg.meta_architecture == OFFLINE else "online",
                ", refiner dropped" if drop_refiner else "", spec.checkpoint)
    return VideoPredictor(model), spec


def run(args: argparse.Namespace) -> int:
    import torch

    from daq_eval.predict import PredictError, predict_dataset
    from daq_eval.ytvis_format import YTVISFormatError, read_dataset, write_predictions
    from daq_model.checkpoint import CheckpointError
    from pipeline.model_source import ModelSourceError

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        annotations, images = _source(args)
        dataset = read_dataset(annotations)
        if args.videos is not None:
            import dataclasses

            keep = dataset.videos[: max(0, args.videos)]
            ids = {v.id for v in keep}
            anns = None if dataset.annotations is None else tuple(
                a for a in dataset.annotations if a.video_id in ids)
            dataset = dataclasses.replace(dataset, videos=tuple(keep), annotations=anns)
        if args.evaluate and dataset.annotations is None:
            raise ValueError(f"--evaluate: {annotations} has no annotations")
        predictor, spec = load_predictor(args.checkpoint, args.config, args.mode, args.device,
                                         merge_fragments=not args.no_merge_fragments)
    except (ValueError, KeyError, FileNotFoundError, YTVISFormatError, ModelSourceError,
            CheckpointError) as exc:
        print(f"daq-label predict: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    frames = 0

    def progress(done: int, total: int, video) -> None:
        nonlocal frames
        frames += dataset.videos_by_id[video.video_id].length
        if done == total or done % max(1, total // 10) == 0:
            elapsed = time.perf_counter() - start
            logger.info("predict: %d/%d videos, %d frames, %.1f frames/s", done, total, frames,
                        frames / max(elapsed, 1e-9))

    try:
        predictions = predict_dataset(predictor, dataset, images, args.category_map,
                                      progress=progress)
    except (PredictError, ValueError) as exc:
        print(f"daq-label predict: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_predictions(predictions, args.out)
    print(f"daq-label predict: {len(predictions)} predictions for {len(dataset.videos)} videos "
          f"({frames} frames, {elapsed:.1f}s, {frames / max(elapsed, 1e-9):.1f} frames/s, "
          f"model {spec.model_name}, {'offline' if predictor.cfg.offline else 'online'}) -> {args.out}")
    if not args.evaluate:
        return 0
    from daq_eval.tracking_metrics import TrackingParams
    from jobs.evaluate import compute_metrics, format_table

    metrics = compute_metrics(dataset, predictions, TrackingParams(), args.objects)
    metrics["inputs"] = {"predictions": str(args.out), "ground_truth": str(annotations),
                         "checkpoint": spec.checkpoint, "model_name": spec.model_name,
                         "mode": "offline" if predictor.cfg.offline else "online",
                         "seconds": round(elapsed, 2), "frames": frames}
    if args.metrics is not None:
        args.metrics.parent.mkdir(parents=True, exist_ok=True)
        args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    sys.stdout.write(format_table(metrics) + "\n")
    return 0

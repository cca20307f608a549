"""Video AP a checkpoint's segmenter would give with perfect association (issue #5 diagnostic).

Separates the segmenter's share of the online video AP from the tracker's. Every frame of the
first ``--videos`` videos goes through the segmenter alone; in each frame the segmenter queries are
paired one-to-one with the visible ground-truth objects by mask IoU (Hungarian, pairs below
``--min-iou`` dropped), using the ground truth, which no real tracker has. Each object's "oracle
track" takes its paired query's mask in each frame (empty where unpaired) and the mean of the
paired queries' logits as its video logits; the VIS post-processing (top ``max_num`` (track,
class) pairs by softmax score) and daq_eval's video AP follow as for real predictions. The result
is an upper bound for any tracker on this segmenter, up to what a tracker could repair (masks,
classes) that the segmenter got wrong.

    .venv/bin/python research/oracle_association.py runs/data/synth_heldout --videos 30 \\
        [--checkpoint CKPT (default: the shipped model)] [--config PRESET|YAML] [--out ORACLE.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daq_eval.predict import category_map  # noqa: E402
from daq_eval.video_ap import evaluate_video_ap  # noqa: E402
from daq_eval.ytvis_format import Dataset, Prediction, encode_masks, read_dataset, write_predictions  # noqa: E402
from pipeline.model_source import shipped_model  # noqa: E402
from daq_model.checkpoint import read_checkpoint  # noqa: E402
from daq_model.config import ONLINE, DAQConfig, load_config  # noqa: E402
from daq_model.dvis_daq import DVISDAQ, create_model  # noqa: E402
from daq_model.outputs import SegmenterOutput  # noqa: E402
from daq_model.postprocess import MaskGeometry, masks_to_output, select_top_pairs  # noqa: E402

_SHIPPED = shipped_model()
DEFAULT_CHECKPOINT = _SHIPPED[0] if _SHIPPED else None


def decode(segmentation: dict | None, shape: tuple[int, int]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    if not segmentation:
        return np.zeros(shape, dtype=bool)
    rle = dict(segmentation)
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode()
    return mask_utils.decode(rle).astype(bool)


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``(P, N)`` boolean masks vs ``(G, N)`` -> ``(P, G)`` IoU."""
    p, g = pred.astype(np.float32), gt.astype(np.float32)
    inter = p @ g.T
    union = p.sum(1)[:, None] + g.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def prepare(checkpoint: str, config: str | None, root: Path, videos: int
            ) -> tuple[DAQConfig, DVISDAQ, Dataset, list[int | None], Dataset]:
    """The checkpoint's model (online meta-architecture; its own config or ``config``), the
    dataset under ``root``, the model-class -> category-id map and the first ``videos`` videos."""
    base = load_config(config) if config else read_checkpoint(checkpoint).daq_config()
    cfg = dataclasses.replace(base, meta_architecture=ONLINE)
    data = read_dataset(root / "annotations.json")
    return cfg, create_model(cfg, checkpoint), data, category_map(cfg, data), video_subset(data, videos)


def segment_frame(model: DVISDAQ, frame: np.ndarray) -> tuple[SegmenterOutput, np.ndarray]:
    """The segmenter's output for one RGB frame and its query masks ``(Q, H, W)`` at frame size."""
    with torch.inference_mode():
        pre = model.preprocess(frame[None])
        out = model.forward_features(pre.images, pre.image_size)
    geometry = MaskGeometry(tuple(pre.images.shape[-2:]), tuple(pre.image_size), frame.shape[:2])
    return out, masks_to_output(out.pred_masks[0], geometry).numpy()


def add_top_predictions(preds: list[Prediction], video_id: int, logits: torch.Tensor,
                        track_masks: Callable[[int], np.ndarray], max_num: int,
                        cats: list[int | None]) -> None:
    """The VIS post-processing: the top ``max_num`` (candidate, class) pairs of ``logits``
    ``(N, K+1)`` as predictions, candidate ``i``'s masks ``track_masks(i)`` ``(T, H, W)``."""
    top = select_top_pairs(logits, max_num)
    for score, label, index in zip(top.scores.tolist(), top.labels.tolist(), top.candidates.tolist()):
        if cats[label] is not None:
            preds.append(Prediction(video_id, cats[label], float(score), tuple(encode_masks(track_masks(index)))))


def video_subset(data: Dataset, videos: int) -> Dataset:
    """The first ``videos`` videos of ``data`` with their annotations."""
    chosen = data.videos[:videos]
    return Dataset(tuple(chosen), tuple(a for v in chosen for a in data.annotations_by_video[v.id]),
                   data.categories)


def script_arguments(description: str, out_help: str) -> argparse.ArgumentParser:
    """The arguments this script and ``minvis_baseline.py`` share."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="dataset root (annotations.json, JPEGImages/)")
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--config", default=None, help="model config (default: the checkpoint's own)")
    parser.add_argument("--videos", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help=out_help)
    return parser


def report(subset: Dataset, preds: list[Prediction], out: Path | None) -> None:
    """Print the video AP of ``preds`` on ``subset`` as one JSON line; write ``preds`` to ``out``."""
    stats = evaluate_video_ap(subset, preds).stats
    if out is not None:
        write_predictions(preds, out)
    print(json.dumps({"videos": len(subset.videos), "objects": len(subset.annotations),
                      **{k: round(v, 4) for k, v in stats.items()}}))


def oracle_predictions(checkpoint: str, root: Path, videos: int, min_iou: float,
                       config: str | None = None) -> tuple[Dataset, list[Prediction]]:
    cfg, model, data, cats, subset = prepare(checkpoint, config, root, videos)
    preds: list[Prediction] = []
    for video in subset.videos:
        anns = data.annotations_by_video[video.id]
        shape = (video.height, video.width)
        track_masks = np.zeros((len(anns), video.length, *shape), dtype=bool)
        track_logits: list[list[torch.Tensor]] = [[] for _ in anns]
        for t, name in enumerate(video.file_names):
            frame = np.asarray(Image.open(root / "JPEGImages" / name).convert("RGB"))
            out, masks = segment_frame(model, frame)
            gts = np.stack([decode(a.segmentations[t], shape) for a in anns])
            visible = np.nonzero(gts.reshape(len(anns), -1).any(1))[0]
            if visible.size == 0:
                continue
            iou = mask_iou(masks.reshape(len(masks), -1), gts[visible].reshape(visible.size, -1))
            rows, cols = linear_sum_assignment(-iou)
            for q, c in zip(rows.tolist(), cols.tolist()):
                if iou[q, c] >= min_iou:
                    g = int(visible[c])
                    track_masks[g, t] = masks[q]
                    track_logits[g].append(out.pred_logits[0, q].float())
        kept = [g for g in range(len(anns)) if track_logits[g]]
        if not kept:
            continue
        logits = torch.stack([torch.stack(track_logits[g]).mean(0) for g in kept])
        add_top_predictions(preds, video.id, logits, lambda i: track_masks[kept[i]], cfg.test.max_num, cats)
    return subset, preds


def main() -> int:
    parser = script_arguments(__doc__, "also write the oracle tracks as a prediction file "
                                       "(for missed_objects.py --oracle)")
    parser.add_argument("--min-iou", type=float, default=0.1, help="pairs below this mask IoU are dropped")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    subset, preds = oracle_predictions(args.checkpoint, args.data, args.videos, args.min_iou, args.config)
    report(subset, preds, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

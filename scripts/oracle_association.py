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

    .venv/bin/python scripts/oracle_association.py runs/data/synth_heldout --videos 30 \\
        [--checkpoint CKPT (default: the shipped model)] [--config PRESET|YAML] [--out ORACLE.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

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
from daq_model.config import ONLINE, load_config  # noqa: E402
from daq_model.dvis_daq import create_model  # noqa: E402
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


def oracle_predictions(checkpoint: str, root: Path, videos: int, min_iou: float,
                       config: str | None = None) -> tuple[Dataset, list[Prediction]]:
    base = load_config(config) if config else read_checkpoint(checkpoint).daq_config()
    cfg = dataclasses.replace(base, meta_architecture=ONLINE)
    model = create_model(cfg, checkpoint)
    data = read_dataset(root / "annotations.json")
    cats = category_map(cfg, data)
    chosen = data.videos[:videos]
    preds: list[Prediction] = []
    for video in chosen:
        anns = data.annotations_by_video[video.id]
        shape = (video.height, video.width)
        track_masks = np.zeros((len(anns), video.length, *shape), dtype=bool)
        track_logits: list[list[torch.Tensor]] = [[] for _ in anns]
        for t, name in enumerate(video.file_names):
            frame = np.asarray(Image.open(root / "JPEGImages" / name).convert("RGB"))
            with torch.inference_mode():
                pre = model.preprocess(frame[None])
                out = model.forward_features(pre.images, pre.image_size)
            geometry = MaskGeometry(tuple(pre.images.shape[-2:]), tuple(pre.image_size), shape)
            masks = masks_to_output(out.pred_masks[0], geometry).numpy()
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
        top = select_top_pairs(logits, cfg.test.max_num)
        for score, label, index in zip(top.scores.tolist(), top.labels.tolist(), top.candidates.tolist()):
            if cats[label] is None:
                continue
            preds.append(Prediction(video.id, cats[label], float(score),
                                    tuple(encode_masks(track_masks[kept[index]]))))
    subset = Dataset(tuple(chosen), tuple(a for v in chosen for a in data.annotations_by_video[v.id]),
                     data.categories)
    return subset, preds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="dataset root (annotations.json, JPEGImages/)")
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--config", default=None, help="model config (default: the checkpoint's own)")
    parser.add_argument("--videos", type=int, default=30)
    parser.add_argument("--min-iou", type=float, default=0.1, help="pairs below this mask IoU are dropped")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the oracle tracks as a prediction file (for missed_objects.py --oracle)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    subset, preds = oracle_predictions(args.checkpoint, args.data, args.videos, args.min_iou, args.config)
    stats = evaluate_video_ap(subset, preds).stats
    if args.out is not None:
        write_predictions(preds, args.out)
    print(json.dumps({"videos": len(subset.videos), "objects": len(subset.annotations),
                      **{k: round(v, 4) for k, v in stats.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

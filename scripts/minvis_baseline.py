"""Video AP of a checkpoint's segmenter with MinVIS association instead of the tracker (issue #5).

A parameter-free baseline between the real tracker and the perfect association of
``oracle_association.py``: every frame of the first ``--videos`` videos goes through the segmenter
alone, and the segmenter queries are linked from frame to frame by Hungarian matching on 1 - cosine
of their embeddings (``daq_model.offline.MinVISLinker``, the link the official offline model uses
to fill up the refiner's candidates). Each linked sequence takes its query's mask in every frame
and the mean of its logits as video logits; the VIS post-processing (top ``max_num`` (sequence,
class) pairs) and video AP follow as for real predictions. Where the trained tracker scores below
this, it has learned nothing about identity beyond embedding similarity.

    .venv/bin/python scripts/minvis_baseline.py runs/data/synth_dev_ad --videos 50 \\
        [--checkpoint CKPT (default: the shipped model)] [--config PRESET|YAML] [--out PRED.json]

``--out`` writes the predictions (e.g. for ``merge_track_fragments.py`` and ``daq-label evaluate``).
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daq_eval.predict import category_map  # noqa: E402
from daq_eval.video_ap import evaluate_video_ap  # noqa: E402
from daq_eval.ytvis_format import Dataset, Prediction, encode_masks, read_dataset, write_predictions  # noqa: E402
from daq_model.checkpoint import read_checkpoint  # noqa: E402
from daq_model.config import ONLINE, load_config  # noqa: E402
from daq_model.dvis_daq import create_model  # noqa: E402
from daq_model.offline import MinVISLink, MinVISLinker  # noqa: E402
from daq_model.postprocess import MaskGeometry, masks_to_output, select_top_pairs  # noqa: E402
from pipeline.model_source import shipped_model  # noqa: E402

_SHIPPED = shipped_model()
DEFAULT_CHECKPOINT = _SHIPPED[0] if _SHIPPED else None


def linked_masks(frame_masks: np.ndarray, link: MinVISLink, sequence: int) -> np.ndarray:
    """``(T, H, W)``: in each frame, the mask of the query that linked sequence ``sequence`` holds
    (``frame_masks``: ``(T, Q, H, W)``)."""
    perm = link.perm.numpy()  # (T, Q): frame t's query of linked sequence j
    return frame_masks[np.arange(len(perm)), perm[:, sequence]]


def minvis_predictions(checkpoint: str, root: Path, videos: int, config: str | None = None
                       ) -> tuple[Dataset, list[Prediction]]:
    """The first ``videos`` videos of ``root`` and the MinVIS-linked segmenter's predictions."""
    base = load_config(config) if config else read_checkpoint(checkpoint).daq_config()
    cfg = dataclasses.replace(base, meta_architecture=ONLINE)
    model = create_model(cfg, checkpoint)
    data = read_dataset(root / "annotations.json")
    cats = category_map(cfg, data)
    chosen = data.videos[:videos]
    preds: list[Prediction] = []
    for video in chosen:
        shape = (video.height, video.width)
        linker = MinVISLinker()
        frame_masks = []
        for name in video.file_names:
            frame = np.asarray(Image.open(root / "JPEGImages" / name).convert("RGB"))
            with torch.inference_mode():
                pre = model.preprocess(frame[None])
                out = model.forward_features(pre.images, pre.image_size)
            geometry = MaskGeometry(tuple(pre.images.shape[-2:]), tuple(pre.image_size), shape)
            frame_masks.append(masks_to_output(out.pred_masks[0], geometry).numpy())
            linker.add(out.pred_embds[0], out.pred_logits[0])
        link = linker.link()
        masks = np.stack(frame_masks)  # (T, Q, H, W)
        top = select_top_pairs(link.mean_logits, cfg.test.max_num)
        for score, label, index in zip(top.scores.tolist(), top.labels.tolist(), top.candidates.tolist()):
            if cats[label] is None:
                continue
            sequence = linked_masks(masks, link, index)
            preds.append(Prediction(video.id, cats[label], float(score), tuple(encode_masks(sequence))))
    subset = Dataset(tuple(chosen), tuple(a for v in chosen for a in data.annotations_by_video[v.id]),
                     data.categories)
    return subset, preds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="dataset root (annotations.json, JPEGImages/)")
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--config", default=None, help="model config (default: the checkpoint's own)")
    parser.add_argument("--videos", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="also write the predictions file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    subset, preds = minvis_predictions(args.checkpoint, args.data, args.videos, args.config)
    stats = evaluate_video_ap(subset, preds).stats
    if args.out is not None:
        write_predictions(preds, args.out)
    print(json.dumps({"videos": len(subset.videos), "objects": len(subset.annotations),
                      **{k: round(v, 4) for k, v in stats.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

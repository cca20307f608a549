"""Per-frame (image) mask AP of a checkpoint's segmenter on a YouTube-VIS-format set.

A tuning aid for stage 1: every ``--stride``-th frame of the first ``--videos`` videos becomes a
one-frame video; the segmenter's top ``max_num`` (query, class) pairs of that frame (the VIS
post-processing applied to one frame) are its predictions, scored with daq_eval's video AP, which
on one-frame videos is COCO-style mask AP with the YouTube-VIS area ranges.

    .venv/bin/python research/segmenter_ap.py runs/quick/segmenter/model.pt runs/data/synth_val
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daq_eval.predict import category_map  # noqa: E402
from daq_eval.video_ap import evaluate_video_ap  # noqa: E402
from daq_eval.ytvis_format import (Annotation, Dataset, Prediction, Video, encode_masks,  # noqa: E402
                                   read_dataset)
from daq_model.checkpoint import read_checkpoint  # noqa: E402
from daq_model.config import ONLINE, load_config  # noqa: E402
from daq_model.dvis_daq import create_model  # noqa: E402
from daq_model.postprocess import MaskGeometry, masks_to_output, select_top_pairs  # noqa: E402


def frame_ap(checkpoint: str, root: Path, videos: int, stride: int, config: str | None = None) -> dict:
    cfg = load_config(config) if config else read_checkpoint(checkpoint).daq_config()
    import dataclasses

    cfg = dataclasses.replace(cfg, meta_architecture=ONLINE)
    model = create_model(cfg, checkpoint)
    data = read_dataset(root / "annotations.json")
    cats = category_map(cfg, data)
    new_videos, new_anns, preds = [], [], []
    for video in data.videos[:videos]:
        anns = data.annotations_by_video[video.id]
        for t in range(0, video.length, stride):
            vid = len(new_videos) + 1
            new_videos.append(Video(vid, video.width, video.height, 1, (video.file_names[t],)))
            for a in anns:
                if a.segmentations[t]:
                    new_anns.append(Annotation(len(new_anns) + 1, vid, a.category_id, a.iscrowd,
                                               (a.segmentations[t],), (a.areas[t],), (a.bboxes[t],)))
            frame = np.asarray(Image.open(root / "JPEGImages" / video.file_names[t]).convert("RGB"))
            with torch.inference_mode():
                pre = model.preprocess(frame[None])
                out = model.forward_features(pre.images, pre.image_size)
            geometry = MaskGeometry(tuple(pre.images.shape[-2:]), tuple(pre.image_size),
                                    (video.height, video.width))
            top = select_top_pairs(out.pred_logits[0], cfg.test.max_num)
            masks = masks_to_output(out.pred_masks[0][top.candidates], geometry).numpy()
            for score, label, mask in zip(top.scores.tolist(), top.labels.tolist(), masks):
                if cats[label] is None or not mask.any():
                    continue
                preds.append(Prediction(vid, cats[label], float(score), tuple(encode_masks(mask[None]))))
    subset = Dataset(tuple(new_videos), tuple(new_anns), data.categories)
    result = evaluate_video_ap(subset, preds)
    return {"frames": len(new_videos), "objects": len(new_anns), **result.stats}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("data", type=Path, help="dataset root (annotations.json, JPEGImages/)")
    parser.add_argument("--videos", type=int, default=50)
    parser.add_argument("--stride", type=int, default=6)
    parser.add_argument("--config", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stats = frame_ap(args.checkpoint, args.data, args.videos, args.stride, args.config)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

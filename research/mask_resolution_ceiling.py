"""How much video AP the mask head's resolution alone allows (issue #5 diagnostic).

The model predicts masks at 1/4 of its input; at test short edge S a frame's masks are (S/4)^2 and
are resized back up. This takes every ground-truth object of the first ``--videos`` videos, gives
it its own true masks passed through that bottleneck (area-downsampled to S/4, bilinear back to S,
then to the frame, threshold 0.5), and reports the spatio-temporal IoU with the true masks and the
video AP a perfect model would then get (every object found, ranked first, no false positives:
the mean over IoU thresholds 0.50:0.05:0.95 of the share of objects at or above each threshold).

    .venv/bin/python research/mask_resolution_ceiling.py runs/data/synth_dev_ad --videos 50 \\
        [--test-sizes 128 192 256]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daq_eval.ytvis_format import read_dataset  # noqa: E402
from research.oracle_association import decode  # noqa: E402

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def through_mask_head(mask: np.ndarray, test_size: int) -> np.ndarray:
    """``mask`` (H, W) after the 1/4-resolution bottleneck at test short edge ``test_size``."""
    h, w = mask.shape
    scale = test_size / min(h, w)
    size = (round(h * scale), round(w * scale))
    low_size = (max(1, size[0] // 4), max(1, size[1] // 4))
    x = torch.from_numpy(mask.astype(np.float32))[None, None]
    low = F.interpolate(x, size=low_size, mode="area")
    up = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
    back = F.interpolate(up, size=(h, w), mode="bilinear", align_corners=False)
    return back[0, 0].numpy() > 0.5


def video_iou(masks: list[np.ndarray], test_size: int) -> float:
    """Spatio-temporal IoU of an object's masks with themselves through the bottleneck."""
    inter = union = 0
    for mask in masks:
        if not mask.any():
            continue
        seen = through_mask_head(mask, test_size)
        inter += int((seen & mask).sum())
        union += int((seen | mask).sum())
    return inter / union if union else 1.0


def perfect_model_ap(ious: np.ndarray) -> float:
    return float(np.mean([(ious >= t).mean() for t in IOU_THRESHOLDS]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="dataset root (annotations.json)")
    parser.add_argument("--videos", type=int, default=50)
    parser.add_argument("--test-sizes", type=int, nargs="+", default=[128, 192, 256])
    args = parser.parse_args()
    data = read_dataset(args.data / "annotations.json")
    objects = [(v, a) for v in data.videos[:args.videos] for a in data.annotations_by_video[v.id]]
    for size in args.test_sizes:
        ious = np.array([video_iou([decode(s, (v.height, v.width)) for s in a.segmentations], size)
                         for v, a in objects])
        print(json.dumps({"test_short_edge": size, "objects": len(ious),
                          "mean_video_iou": round(float(ious.mean()), 4),
                          "perfect_model_AP": round(perfect_model_ap(ious), 4),
                          "share_at_or_above": {f"{t:.2f}": round(float((ious >= t).mean()), 3)
                                                for t in IOU_THRESHOLDS}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

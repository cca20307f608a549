"""How fast can a small CNN learn a dataset's classes from object crops? (issue #5 diagnosis)

Trains a 6-conv CNN (32-64-128 channels, batch norm, global average pooling, linear head) from
scratch to classify square crops around every object of augmented training frames (the
segmenter's sampler and augmentation), and prints the running accuracy. ``--silhouette`` zeroes
the pixels outside the object's mask, so the outline is handed to the network; without it the
network must find the outline in the pixels itself, as Mask2Former's classifier must (it reads
backbone features pooled inside a query's mask, not the mask's shape).

Measured (2-core CPU, 1 thread, accuracy over steps 401-600 / 1-200): the v0 training set,
whose classes differ only in outline, 44 % after 600 steps (24 % over the first 200; chance 17 %);
the v1 set (``--preset train``: each class also has a colour family) 90 % (80 % over the first
200). With ``--silhouette`` the outline-only classes are learned fast too (85 % after 400 steps
on plain backgrounds): the outline is in the masks, but not yet in the pixels' features.

    .venv/bin/python research/class_cue_check.py runs/data/synth_train --iters 1000 [--silhouette]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daq_model.config import get_preset  # noqa: E402
from daq_train.config import get_train_preset  # noqa: E402
from daq_train.data import DataSource, VideoDataset  # noqa: E402
from daq_train.sampler import ClipSampler  # noqa: E402


def crops_of(images: torch.Tensor, targets, size: int, silhouette: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Square crops (box + 10 % context each side) of every object with >= 16 pixels."""
    crops, labels = [], []
    for b, target in enumerate(targets):
        for g in range(target.num_instances):
            mask = target.masks[g, 0] > 0.5
            if int(mask.sum()) < 16:
                continue
            ys, xs = torch.nonzero(mask, as_tuple=True)
            half = max(int(ys.max() - ys.min()), int(xs.max() - xs.min())) * 0.6 + 2
            cy, cx = float(ys.min() + ys.max()) / 2, float(xs.min() + xs.max()) / 2
            y0, x0 = max(int(cy - half), 0), max(int(cx - half), 0)
            y1, x1 = int(cy + half) + 1, int(cx + half) + 1
            patch = images[b, :, y0:y1, x0:x1]
            if silhouette:
                patch = patch * mask[y0:y1, x0:x1]
            crops.append(F.interpolate(patch[None], size=(size, size), mode="bilinear", align_corners=False)[0])
            labels.append(int(target.labels[g]))
    return torch.stack(crops), torch.as_tensor(labels)


def small_cnn(num_classes: int) -> nn.Module:
    layers: list[nn.Module] = []
    for cin, cout in ((3, 32), (32, 64), (64, 128)):
        layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.ReLU(),
                   nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="dataset root (YouTube-VIS layout)")
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=8, help="frames per step (all their objects)")
    parser.add_argument("--crop", type=int, default=48)
    parser.add_argument("--silhouette", action="store_true", help="zero the pixels outside the mask")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    dataset = VideoDataset(DataSource.from_root(args.data))
    model_input = get_preset("daq_small_128").input
    sampler = ClipSampler([dataset], get_train_preset("small_cpu").augment, model_input.pixel_mean,
                          model_input.pixel_std, seed=args.seed)
    net = small_cnn(dataset.num_classes)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    hits, seen, start = 0, 0, time.perf_counter()
    for it in range(args.iters):
        images, targets = sampler.sample_frames(it, args.frames, 32)
        crops, labels = crops_of(images, targets, args.crop, args.silhouette)
        logits = net(crops)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        hits += int((logits.argmax(-1) == labels).sum())
        seen += int(labels.numel())
        if (it + 1) % 200 == 0 or it + 1 == args.iters:
            print(f"step {it + 1}: accuracy over the last steps {hits / max(seen, 1):.3f} "
                  f"(chance {1 / dataset.num_classes:.3f}), {(time.perf_counter() - start) / (it + 1):.3f} s/step",
                  flush=True)
            hits, seen = 0, 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Follow every ground-truth object through the online tracker, frame by frame (issue #5 tool).

For each object of the first ``--videos`` videos of a YouTube-VIS-format set, streams the video
through a checkpoint's online tracker and, in every frame where the object is visible (at least
``--min-area`` pixels), takes the tracker's track whose mask overlaps it best. Prints, separately
for objects present in frame 0 and objects that enter later: the fraction of their frames covered
by a track at mask IoU >= 0.5, how many different track ids did the covering, the mean foreground
score of the covering track, the share of objects never covered, and the tracks the tracker
carries per frame. Many ids per object with many tracks per frame means duplicate tracks.

    .venv/bin/python research/track_coverage.py runs/data/synth_val --videos 40 \\
        [--checkpoint runs/shipped/tracker/model.pt]      (default: the shipped model)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daq_eval.ytvis_format import read_dataset  # noqa: E402
from daq_model.config import ONLINE  # noqa: E402
from daq_model.outputs import VideoInfo  # noqa: E402
from daq_model.predictor import VideoPredictor  # noqa: E402
from pipeline.model_source import resolve_model  # noqa: E402


def decode(segmentation: dict | None) -> np.ndarray | None:
    from pycocotools import mask as mask_utils

    if not segmentation:
        return None
    rle = dict(segmentation)
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode()
    return mask_utils.decode(rle).astype(bool)


def follow(predictor: VideoPredictor, root: Path, videos: int, min_area: int) -> dict[str, list[tuple]]:
    data = read_dataset(root / "annotations.json")
    rows: dict[str, list[tuple]] = {"present in frame 0": [], "enter later": []}
    for video in data.videos[:videos]:
        frames = np.stack([np.asarray(Image.open(root / "JPEGImages" / name).convert("RGB"))
                           for name in video.file_names])
        session = predictor.start_video(VideoInfo(video.height, video.width, len(frames)))
        tracks = list(session.push(frames)) + list(session.flush())
        for ann in data.annotations_by_video[video.id]:
            masks = [decode(s) for s in ann.segmentations]
            visible = [t for t, m in enumerate(masks) if m is not None and int(m.sum()) >= min_area]
            if not visible:
                continue
            covered, ids, scores = 0, set(), []
            for t in visible:
                frame = tracks[t]
                if len(frame) == 0:
                    continue
                gt = masks[t]
                ious = [float((m & gt).sum()) / max(float((m | gt).sum()), 1.0) for m in frame.masks]
                best = int(np.argmax(ious))
                if ious[best] >= 0.5:
                    covered += 1
                    ids.add(int(frame.track_ids[best]))
                    scores.append(float(frame.scores[best]))
            kind = "present in frame 0" if visible[0] == 0 else "enter later"
            rows[kind].append((covered / len(visible), len(ids), float(np.mean(scores)) if scores else 0.0,
                               float(np.mean([len(tracks[t]) for t in visible]))))
    return rows


def parse_follow_arguments(description: str, threads: int) -> argparse.Namespace:
    """The arguments of the scripts that follow objects through the online tracker."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="dataset root (annotations.json, JPEGImages/)")
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--min-area", type=int, default=30)
    parser.add_argument("--threads", type=int, default=threads)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def online_predictor(checkpoint: str | None) -> VideoPredictor:
    """The online predictor of ``checkpoint`` (default: the shipped model), refiner dropped."""
    spec = resolve_model(checkpoint, None)
    return VideoPredictor.from_checkpoint(spec.checkpoint, dataclasses.replace(spec.config, meta_architecture=ONLINE))


def main() -> int:
    args = parse_follow_arguments(__doc__, threads=2)
    predictor = online_predictor(args.checkpoint)
    for kind, rows in follow(predictor, args.data, args.videos, args.min_area).items():
        if not rows:
            print(f"{kind}: no objects")
            continue
        r = np.asarray(rows)
        print(f"{kind} ({len(r)} objects): frames covered by a track (IoU >= 0.5) {r[:, 0].mean():.2f}; "
              f"track ids per object {r[:, 1].mean():.2f}; foreground score {r[:, 2].mean():.2f}; "
              f"never covered {(r[:, 0] == 0).mean():.2f}; tracks per frame {r[:, 3].mean():.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

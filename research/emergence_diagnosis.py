"""Why late objects are not picked up: the online tracker at each late object's entry (issue #5 tool).

For every ground-truth object that first becomes visible (at least ``--min-area`` pixels) after
frame 0, in the first ``--videos`` videos of a YouTube-VIS-format set, looks at the frames
``entry .. entry + --window - 1`` of the online tracker and classifies the object by the first
reason that applies (mask IoU >= 0.5 with the object's ground-truth mask throughout):

* ``tracked``: a valid track row (carried or new) covers it in one of those frames;
* ``segmenter miss``: no segmenter query covers it in any of them;
* ``emerging mask miss``: the segmenter covers it but no emerging row's mask does;
* ``emerging score low``: an emerging row covers it, with foreground below the emerging threshold;
* ``suppressed``: a covering emerging row passed the threshold but the duplicate suppression
  (``tracker.emerging_nms_iou``) switched it off.

Also prints the median foreground of the best covering emerging row and of the best covering
segmenter query, per class of object. Streams through the shipped model by default.

    .venv/bin/python research/emergence_diagnosis.py runs/data/synth_dev_ad --videos 50 \\
        [--checkpoint CKPT] [--config PRESET|YAML]
"""

from __future__ import annotations

import argparse
import collections
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
from daq_model.postprocess import masks_to_output  # noqa: E402
from daq_model.predictor import VideoPredictor  # noqa: E402
from daq_model.tracker import foreground_score  # noqa: E402
from pipeline.model_source import resolve_model  # noqa: E402
from research.oracle_association import mask_iou  # noqa: E402
from research.track_coverage import decode  # noqa: E402

REASONS = ("tracked", "segmenter miss", "emerging mask miss", "emerging score low", "suppressed")


def mask_ious(masks: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(n, H, W) bool vs (H, W) bool -> (n,) IoU."""
    return mask_iou(masks.reshape(masks.shape[0], -1), gt.reshape(1, -1))[:, 0]


@dataclasses.dataclass
class FrameRecord:
    seg_fg: np.ndarray  # (Q,)
    seg_masks: np.ndarray  # (Q, H, W) bool
    row_fg: np.ndarray  # (R,)
    row_masks: np.ndarray  # (R, H, W) bool
    num_tracks: int
    valid: np.ndarray  # (R,) bool, final decision
    threshold_valid: np.ndarray  # (R,) bool, before the duplicate suppression


def record_video(predictor: VideoPredictor, frames: np.ndarray, info: VideoInfo) -> list[FrameRecord]:
    session = predictor.start_video(info)
    tracker = session.tracker
    geometry = session.geometry
    records: list[FrameRecord] = []
    original_step = tracker.step
    without_nms = dataclasses.replace(
        tracker.cfg, tracker=dataclasses.replace(tracker.cfg.tracker, emerging_nms_iou=0.0))

    def step(seg_logits, seg_masks, seg_embeds, mask_features, layer_logits=False):
        result = original_step(seg_logits, seg_masks, seg_embeds, mask_features, layer_logits)
        out = result.output
        # the tracker's own rule with the duplicate suppression off, for this same frame
        cfg, tracker.cfg, tracker.num_frames = tracker.cfg, without_nms, tracker.num_frames - 1
        try:
            pre = tracker.validity(out, seg_logits)
        finally:
            tracker.cfg, tracker.num_frames = cfg, tracker.num_frames + 1
        records.append(FrameRecord(
            seg_fg=foreground_score(seg_logits.float()).cpu().numpy(),
            seg_masks=masks_to_output(seg_masks, geometry).cpu().numpy(),
            row_fg=foreground_score(out.logits.float()).cpu().numpy(),
            row_masks=masks_to_output(out.masks, geometry).cpu().numpy(),
            num_tracks=out.num_tracks, valid=result.valid.cpu().numpy(),
            threshold_valid=pre.cpu().numpy()))
        return result

    tracker.step = step  # type: ignore[method-assign]
    list(session.push(frames))
    list(session.flush())
    return records


def classify(records: list[FrameRecord], gts: list[np.ndarray | None], frames: list[int]
             ) -> tuple[str, float, float]:
    reasons = []
    best_row_fg, best_seg_fg = 0.0, 0.0
    for t in frames:
        gt, rec = gts[t], records[t]
        if gt is None:
            continue
        row_iou = mask_ious(rec.row_masks, gt)
        seg_iou = mask_ious(rec.seg_masks, gt)
        covering = row_iou >= 0.5
        if (covering & rec.valid).any():
            return "tracked", best_row_fg, best_seg_fg
        if (seg_iou >= 0.5).any():
            best_seg_fg = max(best_seg_fg, float(rec.seg_fg[seg_iou >= 0.5].max()))
        emerging = covering.copy()
        emerging[:rec.num_tracks] = False
        if not (seg_iou >= 0.5).any():
            reasons.append(1)
        elif not emerging.any():
            reasons.append(2)
        else:
            best_row_fg = max(best_row_fg, float(rec.row_fg[emerging].max()))
            reasons.append(4 if (emerging & rec.threshold_valid).any() else 3)
    return REASONS[max(reasons) if reasons else 1], best_row_fg, best_seg_fg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="dataset root (annotations.json, JPEGImages/)")
    parser.add_argument("--videos", type=int, default=50)
    parser.add_argument("--window", type=int, default=3, help="frames from the entry on")
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--config", default=None, help="preset name or YAML (default: the checkpoint's)")
    parser.add_argument("--min-area", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = resolve_model(args.checkpoint, args.config)
    cfg = dataclasses.replace(spec.config, meta_architecture=ONLINE)
    predictor = VideoPredictor.from_checkpoint(spec.checkpoint, cfg)
    data = read_dataset(args.data / "annotations.json")
    counts: collections.Counter[str] = collections.Counter()
    fgs: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for video in data.videos[:args.videos]:
        frames = np.stack([np.asarray(Image.open(args.data / "JPEGImages" / name).convert("RGB"))
                           for name in video.file_names])
        records = record_video(predictor, frames, VideoInfo(video.height, video.width, len(frames)))
        for ann in data.annotations_by_video[video.id]:
            gts = [decode(s) for s in ann.segmentations]
            gts = [g if g is not None and int(g.sum()) >= args.min_area else None for g in gts]
            visible = [t for t, g in enumerate(gts) if g is not None]
            if not visible or visible[0] == 0:
                continue
            window = [t for t in visible if t < visible[0] + args.window]
            reason, row_fg, seg_fg = classify(records, gts, window)
            counts[reason] += 1
            fgs[reason].append((row_fg, seg_fg))
    total = sum(counts.values())
    print(f"late objects: {total} (entry window {args.window} frames)")
    for reason in REASONS:
        values = np.asarray(fgs[reason]) if fgs[reason] else np.zeros((0, 2))
        medians = (f"; median fg: best covering emerging row {np.median(values[:, 0]):.3f}, "
                   f"best covering segmenter query {np.median(values[:, 1]):.3f}") if len(values) else ""
        print(f"  {reason:20s} {counts[reason]:4d} ({counts[reason] / max(total, 1):.0%}){medians}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

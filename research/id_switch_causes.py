"""Why an object changes track id in the online tracker (issue #5 tool).

Streams the first ``--videos`` videos of a YouTube-VIS-format set through a checkpoint's online
tracker and follows every ground-truth object as ``research/track_coverage.py`` does (in each frame
where it is visible, the track entry whose mask overlaps it best, if IoU >= 0.5). Whenever the
covering track id changes from A to B, it records what happened to A in that frame and where B
came from:

* A's state: ``killed`` (no entry any more), ``invalid`` (kept while judged absent), ``valid``;
  for an entry, whether A's own mask still covers the object (IoU >= 0.5: B is a duplicate that
  overlaps it better) or not (A lost the object);
* B's origin: ``new`` (its first entry is after A last covered the object: a track started by an
  emerging query) or ``old`` (it existed before: a swap from another object or a returning
  duplicate).

    .venv/bin/python research/id_switch_causes.py runs/data/synth_dev_ad --videos 50 \\
        [--checkpoint runs/x/tracker/model.pt]      (default: the shipped model)
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daq_eval.ytvis_format import read_dataset  # noqa: E402
from daq_model.outputs import VideoInfo  # noqa: E402
from research.track_coverage import decode, online_predictor, parse_follow_arguments  # noqa: E402


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


def classify(tracks: list, masks: list, min_area: int) -> list[tuple[str, str]]:
    """(A's state, B's origin) for every id change of one object over ``tracks`` (FrameTracks)."""
    first_seen: dict[int, int] = {}
    for frame in tracks:
        for tid in frame.track_ids.tolist():
            first_seen.setdefault(int(tid), frame.frame_index)
    changes = []
    previous, last_covered = None, -1
    for t, gt in enumerate(masks):
        if gt is None or int(gt.sum()) < min_area or len(tracks[t]) == 0:
            continue
        frame = tracks[t]
        ious = [_iou(m, gt) for m in frame.masks]
        best = int(np.argmax(ious))
        if ious[best] < 0.5:
            continue
        current = int(frame.track_ids[best])
        if previous is not None and current != previous:
            ids = frame.track_ids.tolist()
            if previous not in ids:
                state = "A killed"
            else:
                k = ids.index(previous)
                kind = "valid" if bool(frame.valid[k]) else "invalid"
                covers = "still covers" if ious[k] >= 0.5 else "lost the object"
                state = f"A {kind}, {covers}"
            origin = "B new" if first_seen[current] > last_covered else "B old"
            changes.append((state, origin))
        previous, last_covered = current, t
    return changes


def main() -> int:
    args = parse_follow_arguments(__doc__, threads=1)
    predictor = online_predictor(args.checkpoint)
    data = read_dataset(args.data / "annotations.json")
    counts: collections.Counter = collections.Counter()
    objects = 0
    for video in data.videos[: args.videos]:
        frames = np.stack([np.asarray(Image.open(args.data / "JPEGImages" / name).convert("RGB"))
                           for name in video.file_names])
        session = predictor.start_video(VideoInfo(video.height, video.width, len(frames)))
        tracks = list(session.push(frames)) + list(session.flush())
        for ann in data.annotations_by_video[video.id]:
            objects += 1
            counts.update(classify(tracks, [decode(s) for s in ann.segmentations], args.min_area))
    total = sum(counts.values())
    print(f"{objects} objects, {total} track id changes ({total / max(objects, 1):.2f} per object)")
    for (state, origin), n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {state:32s} {origin:6s} {n:5d} ({100 * n / max(total, 1):.0f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Ground-truth subsets for evaluating one kind of object, e.g. objects that appear or disappear.

A subset keeps every video and every annotation; the objects outside it become *ignored*
(``iscrowd = 1``). Under the YouTube-VIS rules (:mod:`daq_eval.video_ap`) a prediction matched to
an ignored object is neither a true nor a false positive, so the AP of a subset measures how well
its objects are found and segmented without penalising correct predictions of the others; the
tracking metrics (:mod:`daq_eval.tracking_metrics`) leave crowd objects out, so they cover the
subset's objects only. Objects already crowd stay crowd.

Subsets (:data:`SUBSETS`), decided from the ground-truth masks alone (no generator metadata):

* ``all`` -- the dataset unchanged;
* ``appear-disappear`` -- objects whose presence (non-empty mask) changes inside the video: absent
  in the first frame (appears late), absent in the last frame (leaves early) or absent somewhere
  in between (disappears and comes back). On ``daq-label synth`` data this is exactly the
  annotations whose ``synth`` metadata says ``appears_late``, ``leaves_early`` or
  ``reappearances > 0``;
* ``persistent`` -- the other objects (present in every frame).
"""

from __future__ import annotations

import dataclasses

from daq_eval.tracking_metrics import presence, presence_runs
from daq_eval.ytvis_format import Annotation, Dataset, segmentation_to_rle

SUBSETS = ("all", "appear-disappear", "persistent")


def has_presence_event(annotation: Annotation, height: int, width: int) -> bool:
    """True if the object is absent in the first or last frame or has a gap in between."""
    rles = [segmentation_to_rle(s, height, width) for s in annotation.segmentations]
    present = presence(rles)
    runs = presence_runs(present)
    if not runs:
        return False
    return len(runs) > 1 or runs[0][0] > 0 or runs[-1][1] < len(present)


def object_subset(dataset: Dataset, subset: str) -> tuple[Dataset, int]:
    """``dataset`` with the objects outside ``subset`` marked ignored; also the number of
    non-crowd objects left in the subset."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown object subset {subset!r}; known: {', '.join(SUBSETS)}")
    if dataset.annotations is None:
        raise ValueError("the dataset has no annotations")
    if subset == "all":
        return dataset, sum(1 for a in dataset.annotations if not a.iscrowd)
    videos = dataset.videos_by_id
    out, kept = [], 0
    for ann in dataset.annotations:
        video = videos[ann.video_id]
        event = has_presence_event(ann, video.height, video.width)
        inside = event if subset == "appear-disappear" else not event
        if ann.iscrowd or inside:
            kept += 0 if ann.iscrowd else 1
            out.append(ann)
        else:
            out.append(dataclasses.replace(ann, iscrowd=1))
    return dataclasses.replace(dataset, annotations=tuple(out)), kept

"""Merging the instances of a video that follow one object in turn (not part of DVIS-DAQ).

The online tracker often holds an object with two tracks at once, each the better mask for a
stretch of frames, or hands it from a track that goes wrong to one that shadowed it
(``docs/results/tracker_error_analysis/``). Video AP scores each as a separate instance that
covers the object for too few frames. This post-processing links two instances of the same class
when, over the frames where both have a non-empty mask, at least ``min_agree`` of those frames
(and at least two) have mask IoU >= ``iou``; each linked group (transitively) becomes one
instance: the highest-scoring member's class and score and, in every frame, the mask of the
highest-scoring member that has one there. ``TestConfig.merge_fragments_iou`` (0 = off, the
official post-processing) switches it on.

Masks are COCO RLE (``pycocotools``), as the label job and the prediction writer hold them.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence, TypeVar

from pycocotools import mask as mask_utils

FrameRLEs = Mapping[int, dict]  # frame index -> COCO RLE of a non-empty mask
ItemT = TypeVar("ItemT")
InstanceT = TypeVar("InstanceT")


def _agree(a: FrameRLEs, b: FrameRLEs, iou: float, min_agree: float) -> bool:
    both = sorted(set(a) & set(b))
    if len(both) < 2:
        return False
    ious = [float(mask_utils.iou([a[t]], [b[t]], [0])[0][0]) for t in both]
    agree = sum(v >= iou for v in ious)
    return agree >= 2 and agree >= min_agree * len(both)


def fragment_groups(labels: Sequence[int], scores: Sequence[float], masks: Sequence[FrameRLEs],
                    iou: float, min_agree: float) -> list[list[int]]:
    """Groups of instance indices to merge: every index exactly once; each group in descending
    score (ties: lower index first), groups ordered by their first member's index."""
    n = len(labels)
    if not len(scores) == len(masks) == n:
        raise ValueError(f"{n} labels, {len(scores)} scores, {len(masks)} mask sets")
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    root = list(range(n))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    if iou > 0:
        for x, i in enumerate(order):
            for j in order[x + 1:]:
                if labels[i] == labels[j] and find(i) != find(j) and _agree(masks[i], masks[j], iou, min_agree):
                    root[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: min(g))


def merged_frames(group: Sequence[int], masks: Sequence[FrameRLEs]) -> dict[int, int]:
    """Frame index -> the member of ``group`` (highest score first) whose mask that frame takes."""
    chosen: dict[int, int] = {}
    for member in group:
        for t in masks[member]:
            chosen.setdefault(t, member)
    return dict(sorted(chosen.items()))


def merge_fragments(instances: Sequence[InstanceT], labels: Sequence[int], scores: Sequence[float],
                    frames: Sequence[Mapping[int, ItemT]], to_rle: Callable[[ItemT], dict], iou: float,
                    min_agree: float) -> list[tuple[InstanceT, dict[int, ItemT]]]:
    """The merged instances: for each group, its best member's instance and, frame by frame (in
    order), the item of the best member that has one. ``frames[i]``: instance i's non-empty
    per-frame items (a row, an RLE ...), ``to_rle`` gives an item's COCO RLE (bytes counts)."""
    masks = [{t: to_rle(item) for t, item in per_frame.items()} for per_frame in frames]
    groups = fragment_groups(labels, scores, masks, iou, min_agree)
    return [(instances[group[0]], {t: frames[member][t] for t, member in merged_frames(group, masks).items()})
            for group in groups]

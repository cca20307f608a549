"""Chunk plan of a long video: which frame ranges are labelled separately, and which chunk's
labels are kept for every frame.

A video of ``N`` frames longer than ``max_frames`` is cut into ``n = ceil((N - O) / (L - O))``
chunks of one length ``c <= L`` (``L = max_frames``, ``O = overlap``), chunk ``k`` covering
frames ``[k (c - O), k (c - O) + c)`` (the last one ends at ``N``). Consecutive chunks share
exactly ``O`` frames; the stitcher (:mod:`pipeline.stitching`) matches tracks there. Spreading the
frames over chunks of equal length avoids a last chunk of a few frames only.

Each frame is *kept* from exactly one chunk: the boundary between chunk ``k`` and ``k + 1`` is the
middle of their shared frames, so every frame comes from the chunk where it lies further from a
chunk edge (the tracker and the refiner see more context on both sides there).

``max_frames >= 3 * overlap`` is required, so that a frame lies in at most two chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Overlap used when none is given: enough frames for a robust mask-IoU match, small against
#: the thousands of frames of a chunk.
DEFAULT_OVERLAP = 16


@dataclass(frozen=True)
class ChunkSettings:
    """``max_frames``: longest chunk (0: never chunk); ``overlap``: frames shared by consecutive
    chunks."""

    max_frames: int = 0
    overlap: int = DEFAULT_OVERLAP

    def __post_init__(self) -> None:
        if self.max_frames < 0:
            raise ValueError(f"chunk max_frames must be >= 0 (0: off), got {self.max_frames}")
        if self.overlap < 1:
            raise ValueError(f"chunk overlap must be >= 1 frame, got {self.overlap}")
        if self.enabled and self.max_frames < 3 * self.overlap:
            raise ValueError(f"chunk max_frames ({self.max_frames}) must be at least 3 x overlap "
                             f"({self.overlap}) so that a frame lies in at most two chunks")

    @property
    def enabled(self) -> bool:
        return self.max_frames > 0


@dataclass(frozen=True)
class Chunk:
    """Frames ``[start, end)`` of a video, labelled as one model session; its labels are kept for
    frames ``[keep_start, keep_end)``. ``open_end``: the last chunk, which labels every frame the
    video still has from ``start`` on, even beyond ``end`` (frame counts from a duration estimate
    can be short)."""

    index: int
    count: int
    start: int
    end: int
    keep_start: int
    keep_end: int
    open_end: bool

    @property
    def frames(self) -> int:
        return self.end - self.start

    @property
    def is_last(self) -> bool:
        return self.index == self.count - 1

    def holds(self, frame_index: int) -> bool:
        """Whether this chunk labels ``frame_index``."""
        return frame_index >= self.start and (self.open_end or frame_index < self.end)

    def keeps(self, frame_index: int) -> bool:
        """Whether this chunk's labels of ``frame_index`` are the ones written."""
        return frame_index >= self.keep_start and (self.open_end or frame_index < self.keep_end)


def plan_chunks(num_frames: int | None, settings: ChunkSettings) -> list[Chunk]:
    """The chunks of a video of ``num_frames`` frames (None: unknown length, labelled whole).

    One chunk (the whole video, open-ended) when chunking is off, the length is unknown or the
    video is not longer than ``settings.max_frames``.
    """
    if num_frames is not None and num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    total = int(num_frames or 0)
    length, overlap = settings.max_frames, settings.overlap
    if not settings.enabled or num_frames is None or total <= length:
        return [Chunk(0, 1, 0, total, 0, total, open_end=True)]
    count = math.ceil((total - overlap) / (length - overlap))
    size = math.ceil((total + (count - 1) * overlap) / count)  # <= length
    stride = size - overlap
    starts = [k * stride for k in range(count)]
    ends = [min(s + size, total) for s in starts]
    ends[-1] = total
    # boundary k|k+1 in the middle of the shared frames [starts[k+1], ends[k])
    bounds = [0] + [starts[k + 1] + (ends[k] - starts[k + 1]) // 2 for k in range(count - 1)] + [total]
    return [Chunk(k, count, starts[k], ends[k], bounds[k], bounds[k + 1], open_end=(k == count - 1))
            for k in range(count)]


def shared_frames(first: Chunk, second: Chunk) -> range:
    """The frames two consecutive chunks both label."""
    if second.index != first.index + 1:
        raise ValueError(f"chunks {first.index} and {second.index} are not consecutive")
    return range(second.start, first.end)

"""Bounded cache of per-frame raw mask features for the offline refiner's mask decoding.

The offline model decodes its final masks from every frame's raw pixel-decoder mask features
(C x h4 x w4 float32, ~26 MB per 480p frame for R50). The session keeps the features of the first
frames up to ``budget_mb``; the features of later frames are recomputed (backbone + pixel decoder
only) in a second pass over the frames given by ``replay`` when the final masks are iterated.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

DEFAULT_FEATURE_CACHE_MB = 1024.0

ReplayFn = Callable[[], Iterable[np.ndarray]]


class FeatureCache:
    """The mask features of frames ``0 .. len(self) - 1`` while they fit in the budget."""

    def __init__(self, budget_mb: float) -> None:
        if budget_mb < 0:
            raise ValueError(f"feature cache budget must be >= 0 MB, got {budget_mb}")
        self.budget_bytes = int(budget_mb * 2 ** 20)
        self.frames: list[Tensor] = []
        self.nbytes = 0
        self.overflowed = False

    def __len__(self) -> int:
        return len(self.frames)

    def offer(self, features: Tensor) -> bool:
        """Keep this frame's (C, h, w) features if every earlier frame was kept and it fits."""
        size = features.numel() * features.element_size()
        if self.overflowed or self.nbytes + size > self.budget_bytes:
            if not self.overflowed:
                logger.info("mask-feature cache full after %d frames (%.0f MB); later frames "
                            "need a replay pass at finish", len(self.frames), self.nbytes / 2 ** 20)
            self.overflowed = True
            return False
        self.frames.append(features.detach().to("cpu", torch.float32, copy=True))
        self.nbytes += size
        return True

    def clear(self) -> None:
        self.frames.clear()
        self.nbytes = 0


class FrameEmbeddingStore:
    """Per-frame (Q, C) segmenter embeddings in one growing float32 buffer, so ``finish`` gets
    them as a (T, Q, C) view without stacking a copy. Pre-allocates for the expected frame count
    (capped at ``max_prealloc`` frames), then grows by 1.5x."""

    def __init__(self, expected_frames: int | None = None, max_prealloc: int = 4096) -> None:
        self._buffer: Tensor | None = None
        self._initial = max(1, min(expected_frames or 64, max_prealloc))
        self.size = 0

    def append(self, embeds: Tensor) -> None:
        row = embeds.detach().to("cpu", torch.float32)
        if self._buffer is None:
            self._buffer = row.new_empty((self._initial, *row.shape))
        elif self.size == self._buffer.shape[0]:
            grown = self._buffer.new_empty((self.size + self.size // 2 + 1, *row.shape))
            grown[: self.size] = self._buffer
            self._buffer = grown
        self._buffer[self.size] = row
        self.size += 1

    def view(self) -> Tensor:
        if self._buffer is None:
            raise ValueError("no frames stored")
        return self._buffer[: self.size]

    def nbytes(self) -> int:
        return 0 if self._buffer is None else self._buffer.numel() * 4

    def used_nbytes(self) -> int:
        return 0 if self._buffer is None else self.size * self._buffer[0].numel() * 4


def iter_replay_frames(replay: ReplayFn) -> Iterator[np.ndarray]:
    """Single frames (H, W, 3) from the batches (N, H, W, 3) -- or single frames -- of replay()."""
    for batch in replay():
        array = np.asarray(batch)
        if array.ndim == 3:
            yield array
        elif array.ndim == 4:
            yield from array
        else:
            raise ValueError(f"replay yielded an array of shape {array.shape}; expected frames "
                             "(N, H, W, 3) or (H, W, 3)")


def iter_mask_features(cache: FeatureCache, num_frames: int, replay: ReplayFn | None,
                       compute: Callable[[np.ndarray], Tensor], batch_size: int,
                       ) -> Iterator[Tensor]:
    """Every frame's (C, h, w) mask features in order: cached ones first, the rest recomputed
    with ``compute(frames (N, H, W, 3)) -> (N, C, h, w)`` on the frames of a replay pass."""
    yield from cache.frames[:num_frames]
    if len(cache) >= num_frames:
        return
    if replay is None:
        raise RuntimeError(
            f"the mask features of {num_frames - len(cache)} of {num_frames} frames exceeded the "
            "feature cache budget: pass replay= to finish() (a callable returning the frames "
            "again) or raise the feature cache budget")
    logger.info("replay pass: recomputing mask features of frames %d..%d", len(cache),
                num_frames - 1)
    pending: list[np.ndarray] = []
    seen = 0
    produced = len(cache)
    for frame in iter_replay_frames(replay):
        seen += 1
        if seen <= len(cache):
            continue
        if seen > num_frames:
            raise ValueError(f"replay yielded more than the {num_frames} frames of the video")
        pending.append(frame)
        if len(pending) == batch_size:
            for features in compute(np.stack(pending)):
                produced += 1
                yield features
            pending.clear()
    if pending:
        for features in compute(np.stack(pending)):
            produced += 1
            yield features
    if produced != num_frames:
        raise ValueError(f"replay yielded {seen} frames, the video has {num_frames}")

"""Clip augmentations: one random transform applied identically to every frame of a clip.

The official video recipe (SPEC §4.2.1), with sizes scaled by the config:

1. with probability ``crop_prob``: resize the shortest edge to one of ``crop_resize_choices``
   (long side capped at ``crop_resize_max``), then crop a random ``absolute_range`` window (each
   side uniform in ``crop_size_range``, at most the image side);
2. resize the shortest edge to one of ``short_edge_choices`` (long side capped at ``max_size``);
3. horizontal flip with probability ``flip_prob``.

Frames are resized with PIL bilinear on uint8, masks with nearest neighbour.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

from daq_model.preprocess import resized_size


@dataclass(frozen=True)
class AugmentConfig:
    """Sizes of the clip augmentations. The defaults are the official ones (inputs of ~480p)."""

    short_edge_choices: tuple[int, ...] = (320, 352, 392, 416, 448, 480, 512, 544, 576, 608, 640)
    max_size: int = 768
    crop_prob: float = 0.5
    crop_resize_choices: tuple[int, ...] = (400, 500, 600)
    crop_resize_max: int = 1333
    crop_size_range: tuple[int, int] = (384, 600)
    flip_prob: float = 0.5

    def __post_init__(self) -> None:
        if not self.short_edge_choices:
            raise ValueError("short_edge_choices must not be empty")
        lo, hi = self.crop_size_range
        if not 0 < lo <= hi:
            raise ValueError(f"crop_size_range must be 0 < min <= max, got {self.crop_size_range}")

    @classmethod
    def none(cls, short_edge: int, max_size: int) -> "AugmentConfig":
        """Only the resize (evaluation-like input), no crop, no flip."""
        return cls(short_edge_choices=(short_edge,), max_size=max_size, crop_prob=0.0, flip_prob=0.0)


def _resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in frames])


def _resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of bool ``(..., H, W)`` masks (pixel-centre sampling)."""
    h, w = size
    src_h, src_w = masks.shape[-2:]
    if (src_h, src_w) == (h, w):
        return masks
    rows = np.minimum(((np.arange(h) + 0.5) * src_h / h).astype(np.int64), src_h - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * src_w / w).astype(np.int64), src_w - 1)
    return masks[..., rows[:, None], cols[None, :]]


def _resize_short_edge(frames: np.ndarray, masks: np.ndarray, short: int, max_size: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    size = resized_size(frames.shape[1], frames.shape[2], short, max_size)
    return _resize_frames(frames, size), _resize_masks(masks, size)


def augment_clip(frames: np.ndarray, masks: np.ndarray, cfg: AugmentConfig, rng: random.Random
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Apply one random transform to a clip.

    ``frames``: RGB uint8 ``(T, H, W, 3)``; ``masks``: bool ``(N, T, H, W)``. Returns both
    transformed (same spatial size).
    """
    if frames.shape[1:3] != masks.shape[2:4]:
        raise ValueError(f"frames {frames.shape[1:3]} and masks {masks.shape[2:4]} differ in size")
    if cfg.crop_prob > 0 and rng.random() < cfg.crop_prob:
        frames, masks = _resize_short_edge(frames, masks, rng.choice(cfg.crop_resize_choices),
                                           cfg.crop_resize_max)
        height, width = frames.shape[1:3]
        lo, hi = cfg.crop_size_range
        crop_h = rng.randint(min(lo, height), min(hi, height))
        crop_w = rng.randint(min(lo, width), min(hi, width))
        y0 = rng.randint(0, height - crop_h)
        x0 = rng.randint(0, width - crop_w)
        frames = frames[:, y0:y0 + crop_h, x0:x0 + crop_w]
        masks = masks[..., y0:y0 + crop_h, x0:x0 + crop_w]
    frames, masks = _resize_short_edge(frames, masks, rng.choice(cfg.short_edge_choices), cfg.max_size)
    if cfg.flip_prob > 0 and rng.random() < cfg.flip_prob:
        frames = frames[:, :, ::-1]
        masks = masks[..., ::-1]
    return np.ascontiguousarray(frames), np.ascontiguousarray(masks)

"""Test-time pre-processing exactly like the official DVIS-DAQ evaluation.

1. detectron2 ``ResizeShortestEdge(min_size_test, max_size_test)``: short side to ``min_size_test``,
   long side capped at ``max_size_test``, sizes rounded with ``int(x + 0.5)``, resized with PIL
   bilinear on uint8 (PIL's antialiasing filter, not ``F.interpolate``: boundaries differ);
2. float, per-channel ``(x - mean) / std`` (RGB, 0..255 scale, values from the config);
3. zero padding (in normalised space) at the bottom/right up to a multiple of
   ``size_divisibility`` (detectron2 ``ImageList.from_tensors``).

Frames are expected as RGB uint8 ``(N, H, W, 3)``, the layout decoders produce.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from daq_model.config import DAQConfig

logger = logging.getLogger(__name__)


def resized_size(height: int, width: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """``(h', w')`` after detectron2's ``ResizeShortestEdge`` (the long-side cap applies after the
    short-side scaling; rounding is ``int(x + 0.5)``, at least 1). E.g. 720x1280 -> 480x853 for
    (480, 1333)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    scale = short_edge * 1.0 / min(height, width)
    if height < width:
        new_h, new_w = float(short_edge), scale * width
    else:
        new_h, new_w = scale * height, float(short_edge)
    if max(new_h, new_w) > max_size:
        scale = max_size * 1.0 / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    # A side never rounds to 0 (detectron2 would: a 4000x1 frame gives 0x1333); it is 1 instead.
    return max(1, int(new_h + 0.5)), max(1, int(new_w + 0.5))


def padded_size(height: int, width: int, size_divisibility: int) -> tuple[int, int]:
    """Round ``(height, width)`` up to multiples of ``size_divisibility`` (no-op if it is <= 1)."""
    if size_divisibility <= 1:
        return height, width
    d = size_divisibility
    return (height + d - 1) // d * d, (width + d - 1) // d * d


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL-bilinear resize of every ``(H, W, 3)`` uint8 frame to ``size = (h, w)``."""
    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames  # PIL returns an identical copy in this case
    out = np.empty((frames.shape[0], h, w, frames.shape[3]), dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(frame).resize((w, h), Image.BILINEAR))
    return out


@dataclass
class PreprocessedFrames:
    """A normalised, padded batch and the sizes the post-processing needs.

    ``images``: ``(N, 3, Hp, Wp)`` float32; ``image_size``: ``(h', w')`` after resizing, before
    padding; ``original_size``: ``(H, W)`` of the frames given.
    """

    images: Tensor
    image_size: tuple[int, int]
    original_size: tuple[int, int]

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])


def preprocess_frames(frames: np.ndarray | Tensor, cfg: DAQConfig,
                      device: torch.device | str = "cpu") -> PreprocessedFrames:
    """Resize, normalise and pad a batch of RGB uint8 frames ``(N, H, W, 3)`` for the model.

    Resizing runs on the CPU (PIL, exact official behaviour); normalisation and padding run on
    ``device`` in float32.
    """
    if isinstance(frames, Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (N, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB frames, got dtype {frames.dtype}")
    if frames.shape[0] == 0:
        raise ValueError("empty batch of frames")
    if cfg.input.format != "RGB":
        raise NotImplementedError(f"input format {cfg.input.format!r}: frames are RGB and the model "
                                  "must be configured for RGB input")
    height, width = int(frames.shape[1]), int(frames.shape[2])
    image_size = resized_size(height, width, cfg.input.min_size_test, cfg.input.max_size_test)
    resized = resize_frames(np.ascontiguousarray(frames), image_size)
    images = torch.from_numpy(resized).to(device).permute(0, 3, 1, 2).float()
    mean = torch.tensor(cfg.input.pixel_mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.input.pixel_std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    images = (images - mean) / std
    pad_h, pad_w = padded_size(*image_size, cfg.segmenter.size_divisibility)
    images = F.pad(images, (0, pad_w - image_size[1], 0, pad_h - image_size[0]), value=0.0)
    return PreprocessedFrames(images=images.contiguous(), image_size=image_size,
                              original_size=(height, width))

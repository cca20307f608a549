"""Video instance segmentation post-processing (official ``inference_video_vis``, SPEC §3.8.1).

1. scores = softmax(logits)[:, :K]; the top ``max_num`` (candidate, class) pairs over the flat
   candidate-major N*K scores (``topk(sorted=False)``: the official, implementation-defined order;
   :func:`select_top_pairs` keeps it, callers may sort). One candidate may be selected with
   several labels. If N*K < max_num, all N*K pairs are returned (the official code raises).
2. masks: mask logits (h4, w4) -> bilinear to the padded input size (Hp, Wp) -> crop to the resized
   image (h', w') -> bilinear to the output (H, W) -> logit > 0. Every step is per frame, so
   :func:`masks_to_output` gives the same pixels whether called per frame or per video.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class MaskGeometry:
    """Sizes of the mask chain: ``padded`` (Hp, Wp) network input, ``image`` (h', w') resized
    frame before padding, ``output`` (H, W) size of the returned masks."""

    padded: tuple[int, int]
    image: tuple[int, int]
    output: tuple[int, int]


@dataclass
class TopPairs:
    scores: Tensor  # (M,) float32
    labels: Tensor  # (M,) int64, contiguous 0..K-1
    candidates: Tensor  # (M,) int64 index into the candidate list


def select_top_pairs(logits: Tensor, max_num: int) -> TopPairs:
    """Top ``max_num`` (candidate, class) pairs by softmax score (official unsorted order)."""
    num_classes = logits.shape[-1] - 1
    if logits.shape[0] == 0 or num_classes == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return TopPairs(torch.zeros(0), empty, empty.clone())
    scores = F.softmax(logits.float(), dim=-1)[:, :-1].flatten()
    count = min(max_num, scores.numel())
    top_scores, flat = scores.topk(count, sorted=False)
    return TopPairs(top_scores, flat % num_classes, flat // num_classes)


def masks_to_output(mask_logits: Tensor, geometry: MaskGeometry) -> Tensor:
    """Mask logits (..., h4, w4) (any leading dims, e.g. (n, T) or (n,)) -> bool (..., H, W)."""
    lead = mask_logits.shape[:-2]
    flat = mask_logits.reshape(1, -1, *mask_logits.shape[-2:]).float()
    if flat.shape[1] == 0:
        return torch.zeros((*lead, *geometry.output), dtype=torch.bool)
    up = F.interpolate(flat, size=geometry.padded, mode="bilinear", align_corners=False)
    up = up[:, :, : geometry.image[0], : geometry.image[1]]
    out = F.interpolate(up, size=geometry.output, mode="bilinear", align_corners=False)
    return (out > 0).reshape(*lead, *geometry.output)

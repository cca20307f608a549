"""Point sampling for mask losses and matching costs (PointRend style, SPEC §4.2.3 / §4.2.6).

Masks are compared on a set of points instead of on every pixel. Points are given in normalised
image coordinates ``(x, y)`` in ``[0, 1]``, so predictions at 1/4 resolution and ground truth at the
padded input resolution are sampled at the same physical locations without any resizing.

* :func:`point_sample` reads values at points by bilinear interpolation (``grid_sample`` with
  ``align_corners=False``, zero outside the image).
* :func:`uniform_points` draws points uniformly at random (matching uses one shared point set for
  every prediction and target of an image).
* :func:`uncertain_points` draws ``oversample_ratio * num_points`` candidates, keeps the
  ``importance_sample_ratio`` fraction whose logits are closest to 0 and fills the rest with fresh
  uniform points (the mask loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def point_sample(values: Tensor, points: Tensor) -> Tensor:
    """Bilinear read-out of ``values`` at normalised points.

    ``values``: ``(N, C, H, W)``; ``points``: ``(N, P, 2)`` with ``(x, y)`` in ``[0, 1]``.
    Returns ``(N, C, P)``. Pixel ``(i, j)`` covers ``[j/W, (j+1)/W) x [i/H, (i+1)/H)``, i.e. its
    centre is at ``((j + 0.5)/W, (i + 0.5)/H)`` (``align_corners=False``).
    """
    if values.dim() != 4 or points.dim() != 3 or points.shape[-1] != 2:
        raise ValueError(f"point_sample expects (N,C,H,W) values and (N,P,2) points, got "
                         f"{tuple(values.shape)} and {tuple(points.shape)}")
    grid = (2.0 * points - 1.0).unsqueeze(2).to(values.dtype)  # (N, P, 1, 2)
    out = F.grid_sample(values, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.squeeze(3)


def uniform_points(count: int, num_points: int, device: torch.device | str | None = None,
                   generator: torch.Generator | None = None) -> Tensor:
    """``(count, num_points, 2)`` points uniform in the unit square."""
    return torch.rand(count, num_points, 2, device=device, generator=generator)


def uncertainty(logits: Tensor) -> Tensor:
    """Higher is more uncertain: ``-|logit|`` (a logit of 0 is the decision boundary)."""
    return -logits.abs()


@torch.no_grad()
def uncertain_points(logits: Tensor, num_points: int, oversample_ratio: float,
                     importance_sample_ratio: float,
                     generator: torch.Generator | None = None) -> Tensor:
    """Importance-sampled points for a stack of mask logits ``(N, 1, H, W)`` -> ``(N, P, 2)``.

    ``int(num_points * oversample_ratio)`` uniform candidates are scored with :func:`uncertainty`;
    the ``int(importance_sample_ratio * num_points)`` most uncertain are kept and the remaining
    points are drawn uniformly afresh.
    """
    if logits.dim() != 4 or logits.shape[1] != 1:
        raise ValueError(f"uncertain_points expects (N, 1, H, W) logits, got {tuple(logits.shape)}")
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}")
    n = logits.shape[0]
    device = logits.device
    num_candidates = int(num_points * oversample_ratio)
    candidates = uniform_points(n, num_candidates, device, generator)
    scores = uncertainty(point_sample(logits.float(), candidates))[:, 0, :]  # (N, num_candidates)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    chosen = scores.topk(num_uncertain, dim=1).indices  # (N, num_uncertain)
    picked = torch.gather(candidates, 1, chosen.unsqueeze(-1).expand(-1, -1, 2))
    if num_random > 0:
        picked = torch.cat([picked, uniform_points(n, num_random, device, generator)], dim=1)
    return picked

"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch.

The official Mask2Former ships a CUDA kernel and falls back to a ``grid_sample`` formulation on
CPU; the two agree. We implement the ``grid_sample`` formulation only (bilinear, zero padding,
``align_corners=False``), which runs on every device and under autograd. Parameter names
(``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``) and the from-scratch
initialisation are those of the official module so its checkpoints load unchanged.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SpatialShapes = Sequence[tuple[int, int]]


def ms_deform_attn_sample(value: Tensor, spatial_shapes: SpatialShapes,
                          sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Weighted sum of bilinearly sampled values.

    Args:
        value: ``(N, S, M, D)``: S = sum of H_l*W_l tokens (levels concatenated, each row-major),
            M heads of D channels.
        spatial_shapes: ``[(H_0, W_0), ...]`` of the L levels, in the order of ``value``.
        sampling_locations: ``(N, Lq, M, L, P, 2)`` normalised ``(x, y)`` in [0, 1] (0 = left/top
            edge of the map, 1 = right/bottom edge); points outside read zeros.
        attention_weights: ``(N, Lq, M, L, P)``, already normalised.

    Returns:
        ``(N, Lq, M*D)`` with channels head-major (``head * D + d``).
    """
    n, _, heads, dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    if len(spatial_shapes) != num_levels:
        raise ValueError(f"{len(spatial_shapes)} spatial shapes for {num_levels} levels")
    sizes = [h * w for h, w in spatial_shapes]
    if sum(sizes) != value.shape[1]:
        raise ValueError(f"value has {value.shape[1]} tokens, spatial shapes give {sum(sizes)}")
    grids = 2 * sampling_locations - 1  # grid_sample coordinates: -1/+1 = outer pixel edges
    sampled = []
    for level, (chunk, (h, w)) in enumerate(zip(value.split(sizes, dim=1), spatial_shapes)):
        # (N, HW, M, D) -> (N*M, D, H, W)
        level_value = chunk.flatten(2).transpose(1, 2).reshape(n * heads, dim, h, w)
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        level_grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(level_value, level_grid, mode="bilinear",
                                     padding_mode="zeros", align_corners=False))  # (N*M, D, Lq, P)
    weights = attention_weights.transpose(1, 2).reshape(n * heads, 1, num_queries,
                                                        num_levels * num_points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)  # (N*M, D, Lq)
    return out.view(n, heads * dim, num_queries).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention: each query reads ``n_points`` learned locations around
    its reference point on each of ``n_levels`` maps, per head, and mixes them with softmax weights."""

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8,
                 n_points: int = 4) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR init: offsets start on a ring of ``n_heads`` directions (point k at
        distance k+1 pixels), uniform attention, Xavier projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack([thetas.cos(), thetas.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True)[0]
        grid = directions.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: Tensor, reference_points: Tensor, input_flatten: Tensor,
                spatial_shapes: SpatialShapes, padding_mask: Tensor | None = None) -> Tensor:
        """
        Args:
            query: ``(N, Lq, C)``.
            reference_points: ``(N or 1, Lq, L, 2)`` normalised ``(x, y)``.
            input_flatten: ``(N, S, C)``, the levels' tokens concatenated (row-major per level).
            spatial_shapes: ``[(H_l, W_l)]`` for the L levels.
            padding_mask: optional ``(N, S)`` bool, True where a token is padding (reads zero).

        Returns:
            ``(N, Lq, C)``.
        """
        n, num_queries, _ = query.shape
        value = self.value_proj(input_flatten)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(n, input_flatten.shape[1], self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(
            n, num_queries, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(
            n, num_queries, self.n_heads, self.n_levels * self.n_points)
        weights = F.softmax(weights, -1).view(
            n, num_queries, self.n_heads, self.n_levels, self.n_points)
        if reference_points.shape[-1] != 2:
            raise ValueError("reference_points must end in (x, y); box references are not supported")
        # offsets are in pixels of each level: divide x by W_l and y by H_l
        normalizer = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=offsets.dtype,
                                  device=offsets.device)
        locations = (reference_points[:, :, None, :, None, :]
                     + offsets / normalizer[None, None, None, :, None, :])
        out = ms_deform_attn_sample(value, spatial_shapes, locations, weights)
        return self.output_proj(out)

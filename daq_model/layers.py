"""Transformer building blocks shared by the segmenter decoder, the tracker and the refiner.

Submodule names (``self_attn``, ``multihead_attn``, ``norm``, ``linear1``, ``linear2``,
``layers.N``) are those of the official checkpoints. All blocks are post-norm with dropout 0, as in
every released DVIS-DAQ config (``PRE_NORM: False``); tensors are sequence-first ``(L, N, C)`` as
``nn.MultiheadAttention`` expects.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _with_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    return x if pos is None else x + pos


class SelfAttentionLayer(nn.Module):
    """``x <- norm(x + MHA(q=x+pos, k=x+pos, v=x))``."""

    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, pos: Tensor | None = None, attn_mask: Tensor | None = None,
                key_padding_mask: Tensor | None = None) -> Tensor:
        q = k = _with_pos(x, pos)
        out = self.self_attn(q, k, value=x, attn_mask=attn_mask,
                             key_padding_mask=key_padding_mask, need_weights=False)[0]
        return self.norm(x + out)


class CrossAttentionLayer(nn.Module):
    """``x <- norm(x + MHA(q=x+query_pos, k=memory+pos, v=memory))``."""

    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, memory: Tensor, pos: Tensor | None = None,
                query_pos: Tensor | None = None, attn_mask: Tensor | None = None,
                key_padding_mask: Tensor | None = None) -> Tensor:
        out = self.multihead_attn(
            query=_with_pos(x, query_pos), key=_with_pos(memory, pos), value=memory,
            attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False,
        )[0]
        return self.norm(x + out)


class FFNLayer(nn.Module):
    """``x <- norm(x + linear2(relu(linear1(x))))``."""

    def __init__(self, d_model: int, dim_feedforward: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.linear2(F.relu(self.linear1(x))))


class MLP(nn.Module):
    """``num_layers`` Linear layers (keys ``layers.0 .. layers.N-1``), ReLU between them."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x


def sine_position_encoding(batch: int, height: int, width: int, num_pos_feats: int,
                           device: torch.device | None = None,
                           dtype: torch.dtype = torch.float32,
                           temperature: float = 10000.0) -> Tensor:
    """2-D sine positional encoding ``(batch, 2*num_pos_feats, H, W)`` (DETR/Mask2Former, normalised).

    Rows and columns are numbered from 1 and normalised by ``(size + 1e-6)`` then scaled to
    ``2*pi``; channel ``k`` uses frequency ``temperature ** (2*(k//2)/num_pos_feats)``, sin for even
    and cos for odd ``k``; the output stacks the y channels first, then the x channels. Computed
    from the shape alone (no padding mask), as the official code does at inference.
    """
    eps = 1e-6
    scale = 2 * math.pi
    y = torch.arange(1, height + 1, device=device, dtype=torch.float32)
    x = torch.arange(1, width + 1, device=device, dtype=torch.float32)
    y = y / (height + eps) * scale
    x = x / (width + eps) * scale
    k = torch.arange(num_pos_feats, device=device, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / num_pos_feats)
    pos_y = y[:, None] / dim_t  # (H, F)
    pos_x = x[:, None] / dim_t  # (W, F)
    pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
    pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
    pos = torch.cat(
        (pos_y[:, None, :].expand(height, width, -1), pos_x[None, :, :].expand(height, width, -1)),
        dim=2,
    ).permute(2, 0, 1)
    return pos.unsqueeze(0).expand(batch, -1, -1, -1).to(dtype)

"""Slot attention and the slot cross-attention layer of the DAQ disappearance branch (SPEC §3.6.4).

Key names (``norm_inputs``, ``project_q.0`` (LayerNorm), ``project_q.1`` (bias-free Linear),
``project_k`` (bias-free Linear), ``multihead_attn``, ``norm``) are those of the official
checkpoints. Tensors are sequence-first ``(N, B, C)`` like the other transformer blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SlotAttention(nn.Module):
    """One slot-attention read-out: inputs compete for slots (softmax over the slot axis), then
    every slot takes a weighted mean of the inputs (weights renormalised over the input axis)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.scale = dim ** -0.5
        self.norm_inputs = nn.LayerNorm(dim)
        self.project_q = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim, bias=False))
        self.project_k = nn.Linear(dim, dim, bias=False)

    def forward(self, values: Tensor, key_inputs: Tensor, slots: Tensor) -> Tensor:
        """``values``/``key_inputs``: (B, N, C) inputs; ``slots``: (B, M, C). Returns (B, M, C)."""
        keys = self.project_k(self.norm_inputs(key_inputs))
        queries = self.project_q(slots)
        logits = self.scale * torch.einsum("bnc,bmc->bnm", keys, queries)
        attn = F.softmax(logits, dim=-1) + self.eps  # inputs compete for slots
        attn = attn / attn.sum(dim=1, keepdim=True)  # each slot: weighted mean over inputs
        return torch.einsum("bnm,bnc->bmc", attn, values)


class SlotCrossAttentionLayer(nn.Module):
    """Post-norm cross-attention to the frame queries followed by a slot-attention update.

    ``c = MHA(q = x + query_pos, k = v = memory)``; keys of the slot attention come from
    ``x + c``, its values are ``c`` and its slot queries are ``slot_query``;
    ``x <- norm(x + slot_update)``.
    """

    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0)
        self.norm = nn.LayerNorm(d_model)
        self.slot_attn = SlotAttention(d_model)

    def forward(self, x: Tensor, memory: Tensor, query_pos: Tensor | None = None,
                slot_query: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        """``x``: (N, B, C) slot contents; ``memory``: (S, B, C); returns (N, B, C)."""
        q = x if query_pos is None else x + query_pos
        attended = self.multihead_attn(q, memory, value=memory, attn_mask=attn_mask,
                                       need_weights=False)[0]
        slots = x if slot_query is None else slot_query
        update = self.slot_attn(attended.transpose(0, 1), (x + attended).transpose(0, 1),
                                slots.transpose(0, 1))
        return self.norm(x + update.transpose(0, 1))

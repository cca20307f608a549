"""The DAQ tracker (official ``VideoInstanceCutter``): one frame step of the network (SPEC §3.6).

:class:`DAQTracker` owns the parameters (state_dict keys ``tracker.*`` of the official checkpoints)
and computes one frame: the main branch over ``[track queries ; emerging anchor queries]``, the
slot (disappearance) branch over ``[track queries ; background slots]``, the shared prediction
heads and the mask-pooled anchors. It keeps no state between frames; the per-video bookkeeping
(ids, hub, EMA anchors, kick-out) lives in :mod:`daq_model.track_state` and the frame loop in
:mod:`daq_model.tracking`.

Tensors here are per frame and batch-free: ``(rows, C)`` for queries, ``(C, h, w)`` for mask
features, ``(rows, h, w)`` for mask logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from daq_model.config import DAQConfig
from daq_model.layers import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer
from daq_model.slot_attention import SlotCrossAttentionLayer

ANCHOR_POOL_CHUNK = 50  # masks pooled per chunk (memory only; the official code uses 50 too)


@dataclass
class TrackerFrameOutput:
    """The network's output for one frame. Rows: first frame: the Q segmenter queries; later
    frames: ``num_tracks`` carried tracks, then ``num_new_ins`` emerging queries. Referring mode
    (:meth:`DAQTracker.forward_referring`): the Q slots on every frame, ``anchors`` = the anchor
    each slot used (its matched segmenter query's), no slot logits."""

    queries: Tensor  # (R, C) last-layer query features, before decoder_norm
    logits: Tensor  # (R, K+1) last-layer class logits
    masks: Tensor  # (R, h, w) last-layer mask logits
    anchors: Tensor  # (R, C) anchors pooled from these masks (raw mask features)
    num_tracks: int  # carried track rows at the top (0 on the first frame)
    slot_logits: Tensor | None = None  # (num_tracks + num_slots, K+1), later frames only
    layer_logits: Tensor | None = None  # (L+1, R, K+1) incl. the input queries, if requested
    frame_anchors: Tensor | None = None  # (Q, C) anchors of the segmenter masks, later frames


def foreground_score(logits: Tensor) -> Tensor:
    """fg(x): max over the K classes of softmax(x) (the no-object entry is in the softmax only)."""
    return logits.softmax(dim=-1)[..., :-1].max(dim=-1).values


class DAQTracker(nn.Module):
    """Parameters and per-frame computation of the DAQ tracker."""

    def __init__(self, cfg: DAQConfig) -> None:
        super().__init__()
        seg, trk = cfg.segmenter, cfg.tracker
        dim, mask_dim = seg.hidden_dim, cfg.pixel_decoder.mask_dim
        self.num_layers = trk.decoder_layers
        self.num_new_ins = trk.num_new_ins
        self.num_slots = trk.num_slots
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(dim, seg.nheads) for _ in range(self.num_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(dim, seg.nheads) for _ in range(self.num_layers))
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(dim, seg.dim_feedforward) for _ in range(self.num_layers))
        self.slot_cross_attention_layers = nn.ModuleList(
            SlotCrossAttentionLayer(dim, seg.nheads) for _ in range(self.num_layers))
        self.slot_ffn_layers = nn.ModuleList(
            FFNLayer(dim, seg.dim_feedforward) for _ in range(self.num_layers))
        self.decoder_norm = nn.LayerNorm(dim)
        self.class_embed = nn.Linear(dim, seg.num_classes + 1)
        self.pos_embed = MLP(mask_dim, dim, dim, 3)
        self.mask_embed = MLP(dim, dim, mask_dim, 3)
        self.mask_feature_proj = nn.Conv2d(mask_dim, mask_dim, kernel_size=1)
        self.new_ins_embeds = nn.Embedding(1, dim)
        self.bg_slots = nn.Embedding(trk.num_slots, dim)

    # ---------------------------------------------------------------------------------------
    # helpers

    def project_mask_features(self, mask_features: Tensor) -> Tensor:
        """(C, h, w) raw pixel-decoder mask features -> the tracker's projected ones."""
        return self.mask_feature_proj(mask_features[None])[0]

    def heads(self, queries: Tensor, projected: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Class logits (..., K+1) and, if ``projected`` is given, mask logits (rows, h, w)."""
        normed = self.decoder_norm(queries)
        logits = self.class_embed(normed)
        if projected is None:
            return logits, None
        embed = self.mask_embed(normed)
        masks = torch.einsum("qc,chw->qhw", embed, projected)
        return logits, masks

    def anchors(self, masks: Tensor, mask_features: Tensor) -> Tensor:
        """Eq. 1: ``pos_embed(masked mean of raw mask features over sigmoid(mask) > 0.5)``.

        An empty mask pools the zero vector (no NaN). ``masks``: (n, h, w); returns (n, C).
        """
        flat_features = mask_features.flatten(1).to(masks.dtype)  # (C, hw)
        pooled = []
        for start in range(0, masks.shape[0], ANCHOR_POOL_CHUNK):
            binary = (masks[start:start + ANCHOR_POOL_CHUNK].sigmoid() > 0.5).flatten(1)
            binary = binary.to(flat_features.dtype)
            sums = binary @ flat_features.T
            pooled.append(sums / (binary.sum(dim=1, keepdim=True) + 1e-8))
        if not pooled:
            pooled.append(masks.new_zeros((0, flat_features.shape[0])))
        return self.pos_embed(torch.cat(pooled))

    # ---------------------------------------------------------------------------------------
    # branches

    def _main_layers(self, queries: Tensor, memory: Tensor, query_pos: Tensor | None,
                     memory_pos: Tensor | None) -> list[Tensor]:
        outputs = [queries]
        x = queries[:, None]
        mem = memory[:, None]
        qpos = None if query_pos is None else query_pos[:, None]
        kpos = None if memory_pos is None else memory_pos[:, None]
        for j in range(self.num_layers):
            x = self.transformer_cross_attention_layers[j](x, mem, pos=kpos, query_pos=qpos)
            x = self.transformer_self_attention_layers[j](x)
            x = self.transformer_ffn_layers[j](x)
            outputs.append(x[:, 0])
        return outputs

    @staticmethod
    def initial_slot_assignment(rows: Tensor, table: Tensor) -> Tensor:
        """Index into ``table`` for every row: arg-min of ``1 - cos``, overridden by a Hungarian
        assignment on the same cost for the rows it covers (official behaviour, SPEC §3.6.4).
        Computed in float32 outside autocast (scipy needs it)."""
        with torch.autocast(rows.device.type, enabled=False):
            a = rows.detach().float()
            b = table.detach().float()
            a = a / (a.norm(dim=1, keepdim=True) + 1e-6)
            b = b / (b.norm(dim=1, keepdim=True) + 1e-6)
            cost = 1 - a @ b.T
        chosen = cost.argmin(dim=1)
        row_idx, col_idx = linear_sum_assignment(cost.cpu().numpy())
        chosen[torch.as_tensor(row_idx, dtype=torch.long, device=chosen.device)] = torch.as_tensor(
            np.asarray(col_idx), dtype=torch.long, device=chosen.device)
        return chosen

    def slot_branch(self, track_queries: Tensor, track_anchors: Tensor, memory: Tensor,
                    seg_query_table: Tensor) -> Tensor:
        """Disappearance branch: returns the last-layer slot features ((n + num_slots), C)."""
        bg = self.bg_slots.weight
        rows = torch.cat([track_queries, bg])
        slots = seg_query_table[self.initial_slot_assignment(rows, seg_query_table)]
        slot_pos = rows[:, None]
        slot_query = torch.cat([track_anchors, bg])[:, None]
        x = slots[:, None]
        mem = memory[:, None]
        for j in range(self.num_layers):
            x = self.slot_cross_attention_layers[j](x, mem, query_pos=slot_pos,
                                                    slot_query=slot_query)
            x = self.slot_ffn_layers[j](x)
        return x[:, 0]

    # ---------------------------------------------------------------------------------------
    # one frame

    def forward_frame(self, frame_embeds: Tensor, mask_features: Tensor, seg_masks: Tensor,
                      seg_query_table: Tensor, track_queries: Tensor | None,
                      track_anchors: Tensor | None, layer_logits: bool = False,
                      ) -> TrackerFrameOutput:
        """Run the tracker network on one frame.

        ``frame_embeds`` (Q, C): the segmenter's decoder-normed query embeddings; ``mask_features``
        (C, h, w): raw pixel-decoder mask features; ``seg_masks`` (Q, h, w): segmenter mask logits;
        ``seg_query_table`` (Q, C): the segmenter's learned ``query_feat`` table.
        ``track_queries``/``track_anchors`` (n, C): carried tracks, or None for the first frame
        of a video (no positional terms, rows = segmenter queries).
        """
        projected = self.project_mask_features(mask_features)
        slot_logits = frame_anchors = None
        if track_queries is None:
            outputs = self._main_layers(frame_embeds, frame_embeds, None, None)
            num_tracks = 0
        else:
            num_tracks = track_queries.shape[0]
            frame_anchors = self.anchors(seg_masks, mask_features)
            new = self.new_ins_embeds.weight.expand(self.num_new_ins, -1)
            if frame_anchors.shape[0] != self.num_new_ins:
                raise ValueError(
                    f"tracker.num_new_ins ({self.num_new_ins}) must equal the number of segmenter "
                    f"queries ({frame_anchors.shape[0]})")
            queries = torch.cat([track_queries, new])
            query_pos = torch.cat([track_anchors, frame_anchors])
            outputs = self._main_layers(queries, frame_embeds, query_pos, frame_anchors)
            slots = self.slot_branch(track_queries, track_anchors, frame_embeds, seg_query_table)
            slot_logits, _ = self.heads(slots, None)
        logits, masks = self.heads(outputs[-1], projected)
        all_logits = None
        if layer_logits:
            all_logits, _ = self.heads(torch.stack(outputs), None)
        return TrackerFrameOutput(
            queries=outputs[-1], logits=logits, masks=masks,
            anchors=self.anchors(masks, mask_features), num_tracks=num_tracks,
            slot_logits=slot_logits, layer_logits=all_logits, frame_anchors=frame_anchors,
        )

    def forward_referring(self, frame_embeds: Tensor, mask_features: Tensor, seg_masks: Tensor,
                          slot_queries: Tensor | None, matched: Tensor | None,
                          layer_logits: bool = False) -> TrackerFrameOutput:
        """One frame of the referring-tracker mode (ablation baseline, daq_model/README.md).

        Only the main branch runs, on the Q persistent slots; there are no emerging anchor
        queries and no slot (disappearance) branch. First frame (``slot_queries`` None): exactly
        the DAQ first frame (rows = segmenter queries, no positional terms; slot i is query i).
        Later frames: contents = ``slot_queries`` (Q, C), the slots' previous outputs; query
        position of slot i = the anchor of segmenter query ``matched[i]`` (its Hungarian match),
        key position = the anchors of all segmenter queries, as in the DAQ main branch.
        """
        projected = self.project_mask_features(mask_features)
        frame_anchors = self.anchors(seg_masks, mask_features)
        if slot_queries is None:
            outputs = self._main_layers(frame_embeds, frame_embeds, None, None)
            slot_anchors, num_tracks = frame_anchors, 0
        else:
            if matched is None or matched.shape[0] != slot_queries.shape[0]:
                raise ValueError("forward_referring needs one matched segmenter query per slot")
            slot_anchors = frame_anchors[matched]
            outputs = self._main_layers(slot_queries, frame_embeds, slot_anchors, frame_anchors)
            num_tracks = slot_queries.shape[0]
        logits, masks = self.heads(outputs[-1], projected)
        all_logits = None
        if layer_logits:
            all_logits, _ = self.heads(torch.stack(outputs), None)
        return TrackerFrameOutput(
            queries=outputs[-1], logits=logits, masks=masks, anchors=slot_anchors,
            num_tracks=num_tracks, slot_logits=None, layer_logits=all_logits,
            frame_anchors=frame_anchors,
        )

"""The per-frame segmenter head: Mask2Former's masked-attention decoder on top of the pixel decoder.

``SegmenterHead`` is the official ``sem_seg_head`` (children ``pixel_decoder`` and ``predictor``);
``MaskedAttentionDecoder`` is the official ``predictor``
(``VideoMultiScaleMaskedTransformerDecoder_dvisPlus``), an image decoder applied to every frame
independently (the batch axis is frames). Its query features ``pred_embds`` (decoder-normed) are
what the DAQ tracker and the refiner consume.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daq_model.config import DAQConfig
from daq_model.layers import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer, sine_position_encoding
from daq_model.outputs import SegmenterOutput
from daq_model.pixel_decoder import NUM_DECODER_LEVELS, MSDeformAttnPixelDecoder, c2_xavier_fill
from daq_model.resnet import FeatureSpec

logger = logging.getLogger(__name__)


def _xavier_matrices(module: nn.Module) -> None:
    """Mask2Former's init of its attention / FFN layers: Xavier-uniform on every matrix."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class MaskedAttentionDecoder(nn.Module):
    """Mask2Former decoder with masked cross-attention, round-robin over the three feature levels.

    Each layer: cross-attention from the queries to one level (restricted to where the previous
    prediction's mask is foreground), self-attention among queries, FFN; after the learnable
    initial queries and after every layer the shared heads predict class logits and mask logits.
    """

    def __init__(self, cfg: DAQConfig, in_channels: int) -> None:
        super().__init__()
        seg = cfg.segmenter
        if seg.pre_norm:
            raise NotImplementedError("pre-norm decoder layers are not supported (PRE_NORM: False "
                                      "in every released DVIS-DAQ config)")
        hidden = seg.hidden_dim
        self.num_heads = seg.nheads
        self.num_layers = seg.num_transformer_layers
        if self.num_layers < 1:
            raise ValueError(f"dec_layers must be >= 2 (one transformer layer), got {seg.dec_layers}")
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden, seg.nheads) for _ in range(self.num_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden, seg.nheads) for _ in range(self.num_layers))
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden, seg.dim_feedforward) for _ in range(self.num_layers))
        for layers in (self.transformer_self_attention_layers,
                       self.transformer_cross_attention_layers, self.transformer_ffn_layers):
            _xavier_matrices(layers)
        self.decoder_norm = nn.LayerNorm(hidden)
        self.num_queries = seg.num_queries
        self.query_feat = nn.Embedding(seg.num_queries, hidden)
        self.query_embed = nn.Embedding(seg.num_queries, hidden)
        self.level_embed = nn.Embedding(NUM_DECODER_LEVELS, hidden)
        self.input_proj = nn.ModuleList()
        for _ in range(NUM_DECODER_LEVELS):
            if in_channels != hidden or seg.enforce_input_proj:
                proj = nn.Conv2d(in_channels, hidden, kernel_size=1)
                c2_xavier_fill(proj)
                self.input_proj.append(proj)
            else:
                self.input_proj.append(nn.Sequential())  # identity, no state_dict entries
        self.class_embed = nn.Linear(hidden, seg.num_classes + 1)
        self.mask_embed = MLP(hidden, hidden, cfg.pixel_decoder.mask_dim, 3)
        # contrastive re-id head of the stage-1 segmenter: unused by DAQ, kept for strict loading
        if seg.num_reid_head_layers > 0:
            self.reid_embed: nn.Module = MLP(hidden, seg.reid_hidden_dim, hidden,
                                             seg.num_reid_head_layers)
            for layer in self.reid_embed.layers:
                c2_xavier_fill(layer)
        else:
            self.reid_embed = nn.Identity()

    def prediction_heads(self, queries: Tensor, mask_features: Tensor,
                         attn_mask_size: tuple[int, int] | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """Class logits ``(B, Q, K+1)``, mask logits ``(B, Q, h, w)`` and, if ``attn_mask_size`` is
        given, the next layer's attention mask ``(B*heads, Q, H_l*W_l)`` (True = blocked: the
        resized mask's sigmoid is below 0.5)."""
        normed = self.decoder_norm(queries).transpose(0, 1)  # (B, Q, C)
        logits = self.class_embed(normed)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(normed), mask_features)
        if attn_mask_size is None:
            return logits, masks, None
        resized = F.interpolate(masks, size=attn_mask_size, mode="bilinear", align_corners=False)
        blocked = resized.sigmoid().flatten(2) < 0.5  # (B, Q, HW)
        blocked = blocked.unsqueeze(1).expand(-1, self.num_heads, -1, -1).flatten(0, 1)
        return logits, masks, blocked.detach()

    def forward(self, multi_scale_features: list[Tensor], mask_features: Tensor,
                keep_aux_masks: bool | None = None) -> SegmenterOutput:
        """Decode a batch of frames.

        Args:
            multi_scale_features: three maps ``(B, C, H_l, W_l)``, coarse to fine.
            mask_features: ``(B, mask_dim, h, w)``.
            keep_aux_masks: keep the intermediate mask logits (default: only when training).
        """
        if len(multi_scale_features) != NUM_DECODER_LEVELS:
            raise ValueError(f"expected {NUM_DECODER_LEVELS} feature levels, "
                             f"got {len(multi_scale_features)}")
        if keep_aux_masks is None:
            keep_aux_masks = self.training
        sizes, memories, positions = [], [], []
        for level, feature in enumerate(multi_scale_features):
            b, _, h, w = feature.shape
            sizes.append((h, w))
            positions.append(sine_position_encoding(
                b, h, w, self.query_feat.embedding_dim // 2, device=feature.device,
                dtype=feature.dtype).flatten(2).permute(2, 0, 1))  # (HW, B, C)
            # the level embedding is added to the memory itself (keys and values)
            memory = self.input_proj[level](feature).flatten(2) + self.level_embed.weight[level][None, :, None]
            memories.append(memory.permute(2, 0, 1))
        batch = mask_features.shape[0]
        query_pos = self.query_embed.weight.unsqueeze(1).expand(-1, batch, -1)
        queries = self.query_feat.weight.unsqueeze(1).expand(-1, batch, -1)

        all_logits: list[Tensor] = []
        all_masks: list[Tensor] = []
        logits, masks, attn_mask = self.prediction_heads(queries, mask_features, sizes[0])
        all_logits.append(logits)
        all_masks.append(masks)
        for i in range(self.num_layers):
            level = i % NUM_DECODER_LEVELS
            assert attn_mask is not None
            # a query whose mask blocks every location may attend everywhere instead
            attn_mask = attn_mask & ~attn_mask.all(-1, keepdim=True)
            queries = self.transformer_cross_attention_layers[i](
                queries, memories[level], pos=positions[level], query_pos=query_pos,
                attn_mask=attn_mask)
            queries = self.transformer_self_attention_layers[i](queries, pos=query_pos)
            queries = self.transformer_ffn_layers[i](queries)
            last = i == self.num_layers - 1
            logits, masks, attn_mask = self.prediction_heads(
                queries, mask_features, None if last else sizes[(i + 1) % NUM_DECODER_LEVELS])
            all_logits.append(logits)
            if keep_aux_masks or last:
                all_masks.append(masks)
        embeds = self.decoder_norm(queries).transpose(0, 1)  # (B, Q, C)
        return SegmenterOutput(
            pred_logits=all_logits[-1],
            pred_masks=all_masks[-1],
            pred_embds=embeds,
            mask_features=mask_features,
            aux_logits=all_logits[:-1],
            aux_masks=all_masks[:-1] if keep_aux_masks else [],
        )


class SegmenterHead(nn.Module):
    """The official ``sem_seg_head``: pixel decoder then masked-attention decoder."""

    def __init__(self, cfg: DAQConfig, input_shape: dict[str, FeatureSpec]) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        self.pixel_decoder = MSDeformAttnPixelDecoder(cfg.pixel_decoder, input_shape)
        self.predictor = MaskedAttentionDecoder(cfg, in_channels=cfg.pixel_decoder.conv_dim)

    def forward(self, features: dict[str, Tensor], keep_aux_masks: bool | None = None) -> SegmenterOutput:
        mask_features, multi_scale = self.pixel_decoder(features)
        return self.predictor(multi_scale, mask_features, keep_aux_masks=keep_aux_masks)

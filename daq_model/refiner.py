"""The offline temporal refiner (official ``TemporalRefiner``, SPEC §2.8 / §3.7.2).

Parameters keep the official ``refiner.*`` key names. Per layer: temporal self-attention over all
frames of each candidate -> optional local temporal convolution -> self-attention between the
candidates of each frame -> cross-attention to that frame's segmenter query embeddings -> FFN.
There are no positional terms and no masks, so the refiner is permutation-equivariant over
candidates. Only the last layer is decoded at inference.

Layout here is ``(T, q, C)`` (frames, candidates, channels), batch-free.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from daq_model.config import DAQConfig
from daq_model.layers import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer

DEFAULT_MAX_TOKENS = 8192  # (frame, candidate) tokens per refiner chunk (memory only)


def _local_conv(dim: int) -> nn.Sequential:
    """Conv1d(k5) -> ReLU -> Conv1d(k3), 'same' length with replicate padding (keys .0 and .2)."""
    return nn.Sequential(
        nn.Conv1d(dim, dim, kernel_size=5, padding="same", padding_mode="replicate"),
        nn.ReLU(),
        nn.Conv1d(dim, dim, kernel_size=3, padding="same", padding_mode="replicate"),
    )


class TemporalRefiner(nn.Module):
    """Offline refiner over whole-video candidate embedding sequences."""

    def __init__(self, cfg: DAQConfig) -> None:
        super().__init__()
        seg, ref = cfg.segmenter, cfg.refiner
        dim, heads = seg.hidden_dim, seg.nheads
        self.num_layers = ref.decoder_layers
        self.use_local_attn = ref.use_local_attn
        self.transformer_obj_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(dim, heads) for _ in range(self.num_layers))
        self.transformer_time_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(dim, heads) for _ in range(self.num_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(dim, heads) for _ in range(self.num_layers))
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(dim, seg.dim_feedforward) for _ in range(self.num_layers))
        # Empty (no state_dict keys) unless the config uses the local temporal convolution.
        layers = self.num_layers if self.use_local_attn else 0
        self.conv_short_aggregate_layers = nn.ModuleList(_local_conv(dim) for _ in range(layers))
        self.conv_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.decoder_norm = nn.LayerNorm(dim)
        self.class_embed = nn.Linear(dim, seg.num_classes + 1)
        self.mask_embed = MLP(dim, dim, cfg.pixel_decoder.mask_dim, 3)
        self.activation_proj = nn.Linear(dim, 1)

    def forward(self, instance_embeds: Tensor, frame_embeds: Tensor,
                max_tokens: int = DEFAULT_MAX_TOKENS, consume_input: bool = False) -> Tensor:
        """``instance_embeds`` (T, q, C) candidate sequences, ``frame_embeds`` (T, Q, C) segmenter
        query embeddings. Returns the last layer's output (T, q, C), before ``decoder_norm``.

        Every block mixes either along time (per candidate) or across candidates (per frame), so
        each runs on chunks of about ``max_tokens`` (frame, candidate) tokens: the transient
        memory (attention projections, FFN hidden layer) stays bounded on long videos; the
        result does not depend on the chunking beyond float noise. Without autograd the chunks
        are written back in place (one (T, q, C) buffer for the whole forward; with
        ``consume_input`` it is ``instance_embeds`` itself, which is then overwritten).
        """
        inplace = not torch.is_grad_enabled()
        x = instance_embeds.clone() if inplace and not consume_input else instance_embeds
        num_frames, num_cands, _ = x.shape
        memory = frame_embeds.transpose(0, 1)  # (Q, T, C): batch = frames
        per_cands = max(1, max_tokens // max(num_frames, 1))
        per_frames = max(1, max_tokens // max(num_cands, 1))
        for i in range(self.num_layers):
            timed = x if inplace else torch.empty_like(x)
            for s in range(0, num_cands, per_cands):
                timed[:, s:s + per_cands] = self._temporal(i, x[:, s:s + per_cands])
            x = timed
            mixed = x if inplace else torch.empty_like(x)
            for s in range(0, num_frames, per_frames):
                y = x[s:s + per_frames].transpose(0, 1)  # (q, t, C): sequence = candidates
                y = self.transformer_obj_self_attention_layers[i](y)
                y = self.transformer_cross_attention_layers[i](y, memory[:, s:s + per_frames])
                y = self.transformer_ffn_layers[i](y)
                mixed[s:s + per_frames] = y.transpose(0, 1)
            x = mixed
        return x

    def _temporal(self, i: int, x: Tensor) -> Tensor:
        """Temporal self-attention (sequence = time) and the optional local conv; (T, n, C)."""
        x = self.transformer_time_self_attention_layers[i](x)
        if self.use_local_attn:
            seq = x.permute(1, 2, 0)  # (n, C, T)
            seq = self.conv_norms[i]((self.conv_short_aggregate_layers[i](seq) + seq)
                                     .transpose(1, 2))  # (n, T, C)
            x = seq.transpose(0, 1)
        return x

    def class_logits(self, refined: Tensor, max_tokens: int = DEFAULT_MAX_TOKENS) -> Tensor:
        """Activation-pooled class logits (q, K+1): softmax over all T frames of
        ``activation_proj``, weighted sum of the normed features, ``class_embed``
        (in chunks of candidates, memory only)."""
        per_cands = max(1, max_tokens // max(refined.shape[0], 1))
        pooled = []
        for s in range(0, refined.shape[1], per_cands):
            normed = self.decoder_norm(refined[:, s:s + per_cands])  # (T, n, C)
            weights = self.activation_proj(normed).softmax(dim=0)
            pooled.append((normed * weights).sum(dim=0))
        return self.class_embed(torch.cat(pooled))

    def frame_masks(self, refined_frames: Tensor, mask_features: Tensor) -> Tensor:
        """Mask logits for a chunk of frames: ``refined_frames`` (t, q, C), ``mask_features``
        (t, C, h, w) raw -> (q, t, h, w)."""
        embed = self.mask_embed(self.decoder_norm(refined_frames))
        return torch.einsum("tqc,tchw->qthw", embed, mask_features.to(embed.dtype))

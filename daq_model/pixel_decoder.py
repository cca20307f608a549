"""Mask2Former's ``MSDeformAttnPixelDecoder``: deformable-attention encoder + one FPN step.

Reads the backbone's ``res2..res5``; the deformable encoder mixes the coarse levels (by default
res3..res5, processed in reverse order: ``input_proj.0`` is res5), an FPN step adds the stride-4
level (``adapter_1`` / ``layer_1`` on res2), and a 1x1 conv gives the stride-4 ``mask_features``.
It always runs in float32 (autocast disabled, inputs cast), as the official module does: the
deformable sampling is not reliable in half precision.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daq_model.config import PixelDecoderConfig
from daq_model.layers import sine_position_encoding
from daq_model.ms_deform_attn import MSDeformAttn
from daq_model.resnet import Conv2dNorm, FeatureSpec

logger = logging.getLogger(__name__)

NUM_DECODER_LEVELS = 3  # Mask2Former always feeds three scales to its decoder


def c2_xavier_fill(module: nn.Conv2d | nn.Linear) -> None:
    """Caffe2 Xavier init (detectron2 / fvcore): uniform with ``a=1`` (fan_in), zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def _norm(kind: str, channels: int) -> nn.Module | None:
    if kind == "GN":
        return nn.GroupNorm(32, channels)
    if kind == "":
        return None
    raise NotImplementedError(f"pixel decoder norm {kind!r} is not supported (GN or '')")


class MSDeformAttnEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention (``norm1``), then FFN (``norm2``)."""

    def __init__(self, d_model: int, d_ffn: int, n_levels: int, n_heads: int, n_points: int) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src: Tensor, pos: Tensor, reference_points: Tensor,
                spatial_shapes: list[tuple[int, int]]) -> Tensor:
        attended = self.self_attn(src + pos, reference_points, src, spatial_shapes)
        src = self.norm1(src + attended)
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class MSDeformAttnEncoder(nn.Module):
    """A stack of encoder layers (key prefix ``encoder.layers.N``)."""

    def __init__(self, layers: list[MSDeformAttnEncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, src: Tensor, pos: Tensor, reference_points: Tensor,
                spatial_shapes: list[tuple[int, int]]) -> Tensor:
        for layer in self.layers:
            src = layer(src, pos, reference_points, spatial_shapes)
        return src


def encoder_reference_points(spatial_shapes: list[tuple[int, int]], device: torch.device) -> Tensor:
    """``(1, S, L, 2)``: every token's pixel centre ``((j+0.5)/W, (i+0.5)/H)``, the same for all
    levels (no padding mask, so all valid ratios are 1)."""
    points = []
    for h, w in spatial_shapes:
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), -1))
    ref = torch.cat(points, 0)  # (S, 2)
    return ref[None, :, None, :].expand(1, -1, len(spatial_shapes), 2)


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """The encoder plus its per-level embedding (key ``level_embed``, an ``nn.Parameter``; the
    level embedding is added to the positional term only)."""

    def __init__(self, d_model: int, nhead: int, num_layers: int, d_ffn: int, n_levels: int,
                 n_points: int) -> None:
        super().__init__()
        self.encoder = MSDeformAttnEncoder([
            MSDeformAttnEncoderLayer(d_model, d_ffn, n_levels, nhead, n_points)
            for _ in range(num_layers)
        ])
        self.level_embed = nn.Parameter(torch.empty(n_levels, d_model))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for module in self.modules():
            if isinstance(module, MSDeformAttn):
                module.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: list[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Encode maps ``[(B, C, H_l, W_l)]`` -> ``(B, S, C)`` tokens and the level shapes."""
        spatial_shapes = [(int(s.shape[2]), int(s.shape[3])) for s in srcs]
        tokens, positions = [], []
        for level, src in enumerate(srcs):
            b, c, h, w = src.shape
            pos = sine_position_encoding(b, h, w, c // 2, device=src.device, dtype=src.dtype)
            tokens.append(src.flatten(2).transpose(1, 2))
            positions.append(pos.flatten(2).transpose(1, 2) + self.level_embed[level].view(1, 1, -1))
        src_flat = torch.cat(tokens, 1)
        pos_flat = torch.cat(positions, 1)
        reference_points = encoder_reference_points(spatial_shapes, src_flat.device)
        return self.encoder(src_flat, pos_flat, reference_points, spatial_shapes), spatial_shapes


class MSDeformAttnPixelDecoder(nn.Module):
    """Pixel decoder: ``forward(features) -> (mask_features, multi_scale_features)``.

    ``multi_scale_features`` are the three lowest-resolution outputs, coarse to fine (strides 32,
    16, 8 with the default encoder inputs); ``mask_features`` is at ``common_stride`` (4).
    """

    def __init__(self, cfg: PixelDecoderConfig, input_shape: dict[str, FeatureSpec]) -> None:
        super().__init__()
        ordered = sorted(input_shape.items(), key=lambda item: item[1].stride)
        self.in_features = [name for name, _ in ordered]
        missing = [f for f in cfg.transformer_in_features if f not in input_shape]
        if missing:
            raise ValueError(f"pixel decoder encoder inputs {missing} are not backbone outputs "
                             f"({self.in_features})")
        encoder_inputs = [(n, s) for n, s in ordered if n in cfg.transformer_in_features]
        self.transformer_in_features = [name for name, _ in encoder_inputs]
        conv_dim = cfg.conv_dim
        # coarse to fine: input_proj.0 belongs to the lowest-resolution encoder input
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(spec.channels, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for _, spec in reversed(encoder_inputs)
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim, nhead=cfg.enc_nheads, num_layers=cfg.transformer_enc_layers,
            d_ffn=cfg.enc_dim_feedforward, n_levels=len(encoder_inputs), n_points=cfg.enc_n_points,
        )
        self.mask_features = nn.Conv2d(conv_dim, cfg.mask_dim, kernel_size=1)
        c2_xavier_fill(self.mask_features)

        min_stride = min(spec.stride for _, spec in encoder_inputs)
        self.num_fpn_levels = int(round(math.log2(min_stride) - math.log2(cfg.common_stride)))
        use_bias = cfg.norm == ""
        fpn_inputs = ordered[: self.num_fpn_levels]
        self.fpn_features = [name for name, _ in fpn_inputs]
        for index, (_, spec) in enumerate(fpn_inputs):
            lateral = Conv2dNorm(spec.channels, conv_dim, kernel_size=1, bias=use_bias,
                                 norm=_norm(cfg.norm, conv_dim))
            output = Conv2dNorm(conv_dim, conv_dim, kernel_size=3, padding=1, bias=use_bias,
                                norm=_norm(cfg.norm, conv_dim), activation=True)
            c2_xavier_fill(lateral)
            c2_xavier_fill(output)
            self.add_module(f"adapter_{index + 1}", lateral)
            self.add_module(f"layer_{index + 1}", output)

    def forward(self, features: dict[str, Tensor]) -> tuple[Tensor, list[Tensor]]:
        device_type = next(iter(features.values())).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self._forward_fp32(features)

    def _forward_fp32(self, features: dict[str, Tensor]) -> tuple[Tensor, list[Tensor]]:
        srcs = [proj(features[name].float())
                for proj, name in zip(self.input_proj, reversed(self.transformer_in_features))]
        memory, spatial_shapes = self.transformer(srcs)
        batch = memory.shape[0]
        outs = [chunk.transpose(1, 2).reshape(batch, -1, h, w)
                for chunk, (h, w) in zip(memory.split([h * w for h, w in spatial_shapes], dim=1),
                                         spatial_shapes)]
        # top-down over the FPN levels (finest last)
        for index in reversed(range(self.num_fpn_levels)):
            lateral = getattr(self, f"adapter_{index + 1}")(features[self.fpn_features[index]].float())
            merged = lateral + F.interpolate(outs[-1], size=lateral.shape[-2:], mode="bilinear",
                                             align_corners=False)
            outs.append(getattr(self, f"layer_{index + 1}")(merged))
        return self.mask_features(outs[-1]), outs[:NUM_DECODER_LEVELS]

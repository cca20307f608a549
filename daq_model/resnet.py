"""detectron2's ResNet backbone (``build_resnet_backbone``) with frozen batch norm, in plain PyTorch.

The module tree reproduces detectron2's state_dict names exactly so official checkpoints load
strictly: ``stem.conv1`` and ``res2..res5.<block>.{conv1,conv2,conv3,shortcut}``, every conv
bias-free with a ``norm`` child (:class:`FrozenBatchNorm2d`: buffers ``weight``, ``bias``,
``running_mean``, ``running_var``; no ``num_batches_tracked``). Widths follow
:class:`~daq_model.config.BackboneConfig` (stem width, res2 width, groups x width per group), so the
reduced-width models of the reference case use the same code. Bottleneck depths only (50/101/152).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daq_model.config import BackboneConfig

logger = logging.getLogger(__name__)

BLOCKS_PER_STAGE: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
STAGE_NAMES = ("res2", "res3", "res4", "res5")


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters, all stored as buffers.

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``. Buffers (not parameters),
    so optimisers never touch them; detectron2 initialises ``running_var`` to ``1 - eps`` so a fresh
    layer is exactly the identity.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: Tensor) -> Tensor:
        if not x.requires_grad:
            # inference: the fused batch-norm kernel (what detectron2 calls in this case)
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                training=False, eps=self.eps)
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.to(x.dtype).view(1, -1, 1, 1) + shift.to(x.dtype).view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class Conv2dNorm(nn.Conv2d):
    """``nn.Conv2d`` followed by an optional ``norm`` child and activation (detectron2's ``Conv2d``).

    Keeping the norm as a child of the conv is what gives the official key layout
    ``<conv>.weight`` / ``<conv>.norm.*``.
    """

    def __init__(self, *args, norm: nn.Module | None = None, activation: bool = False,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation:
            x = F.relu(x)
        return x


def c2_msra_fill(conv: nn.Conv2d) -> None:
    """Caffe2 MSRA init used by detectron2 for ResNet convs: He normal (fan_out), zero bias."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _frozen_conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1) -> Conv2dNorm:
    conv = Conv2dNorm(in_ch, out_ch, kernel_size=kernel, stride=stride, padding=padding,
                      dilation=dilation, groups=groups, bias=False, norm=FrozenBatchNorm2d(out_ch))
    c2_msra_fill(conv)
    return conv


class BasicStem(nn.Module):
    """7x7/2 conv + FrozenBN + ReLU, then 3x3/2 max-pool: stride 4 overall."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = _frozen_conv(in_channels, out_channels, 7, stride=2, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (grouped, dilated) -> 1x1 with a residual; projection shortcut when widths differ.

    ``stride_in_1x1`` puts the stage stride on conv1 (MSRA style) instead of conv2 (the released
    DVIS-DAQ configs use conv2).
    """

    def __init__(self, in_channels: int, out_channels: int, bottleneck_channels: int, stride: int,
                 num_groups: int, stride_in_1x1: bool, dilation: int) -> None:
        super().__init__()
        self.shortcut = (_frozen_conv(in_channels, out_channels, 1, stride=stride)
                         if in_channels != out_channels else None)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _frozen_conv(in_channels, bottleneck_channels, 1, stride=stride_1x1)
        self.conv2 = _frozen_conv(bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3,
                                  padding=dilation, dilation=dilation, groups=num_groups)
        self.conv3 = _frozen_conv(bottleneck_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


@dataclass(frozen=True)
class FeatureSpec:
    """Channels and stride of one backbone output (detectron2's ``ShapeSpec``)."""

    channels: int
    stride: int


class ResNet(nn.Module):
    """detectron2 ResNet returning ``{"res2": .., "res3": .., "res4": .., "res5": ..}``.

    Input: normalised images ``(B, 3, H, W)``; outputs at strides 4, 8, 16, 32 (res5 at 16 with
    ``res5_dilation == 2``).
    """

    def __init__(self, cfg: BackboneConfig, in_channels: int = 3) -> None:
        super().__init__()
        if cfg.name != "resnet":
            raise ValueError(f"ResNet built from a {cfg.name!r} backbone config")
        if cfg.depth not in BLOCKS_PER_STAGE:
            raise NotImplementedError(
                f"ResNet depth {cfg.depth} is not supported (bottleneck depths: "
                f"{sorted(BLOCKS_PER_STAGE)})")
        if cfg.norm != "FrozenBN":
            raise NotImplementedError(f"ResNet norm {cfg.norm!r} is not supported (FrozenBN only)")
        if cfg.res5_dilation not in (1, 2):
            raise ValueError(f"res5_dilation must be 1 or 2, got {cfg.res5_dilation}")
        self.cfg = cfg
        self.stem = BasicStem(in_channels, cfg.stem_out_channels)
        self._specs: dict[str, FeatureSpec] = {}
        channels_in = cfg.stem_out_channels
        channels_out = cfg.res2_out_channels
        bottleneck = cfg.num_groups * cfg.width_per_group
        stride = 4
        for index, (name, num_blocks) in enumerate(zip(STAGE_NAMES, BLOCKS_PER_STAGE[cfg.depth])):
            dilation = cfg.res5_dilation if name == "res5" else 1
            first_stride = 1 if index == 0 or (name == "res5" and dilation == 2) else 2
            blocks = []
            for block_index in range(num_blocks):
                blocks.append(BottleneckBlock(
                    channels_in if block_index == 0 else channels_out, channels_out, bottleneck,
                    stride=first_stride if block_index == 0 else 1, num_groups=cfg.num_groups,
                    stride_in_1x1=cfg.stride_in_1x1, dilation=dilation,
                ))
            self.add_module(name, nn.Sequential(*blocks))
            stride *= first_stride
            self._specs[name] = FeatureSpec(channels=channels_out, stride=stride)
            channels_in = channels_out
            channels_out *= 2
            bottleneck *= 2

    def output_shape(self) -> dict[str, FeatureSpec]:
        """Channels and stride of every output, as the pixel decoder needs them."""
        return dict(self._specs)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if images.dim() != 4:
            raise ValueError(f"ResNet expects (B, C, H, W) images, got shape {tuple(images.shape)}")
        x = self.stem(images)
        outputs: dict[str, Tensor] = {}
        for name in STAGE_NAMES:
            x = getattr(self, name)(x)
            outputs[name] = x
        return outputs

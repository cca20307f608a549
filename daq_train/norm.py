"""Trainable batch norm for a backbone trained from scratch, folded back into FrozenBN for export.

The official backbone uses FrozenBN (fixed statistics, no parameters) because it starts from
ImageNet weights. Trained from scratch, a ResNet whose norms are frozen identities has no
normalisation at all and its activations grow block by block. :func:`thaw_frozen_batchnorm`
replaces every FrozenBN by an ``nn.BatchNorm2d`` initialised from its buffers (same child name,
same ``weight``/``bias``/``running_mean``/``running_var`` keys); :func:`freeze_batchnorm` copies
the trained values back into FrozenBN modules. In eval mode both compute
``(x - mean) / sqrt(var + eps) * weight + bias``, so the exported model (official key set, no
``num_batches_tracked``) predicts exactly what the trained one does in eval mode.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from daq_model.resnet import FrozenBatchNorm2d

logger = logging.getLogger(__name__)


def _replace_children(module: nn.Module, kind: type, make) -> int:
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, kind):
            setattr(module, name, make(child))
            count += 1
        else:
            count += _replace_children(child, kind, make)
    return count


def _to_batchnorm(frozen: FrozenBatchNorm2d, momentum: float) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(frozen.num_features, eps=frozen.eps, momentum=momentum)
    with torch.no_grad():
        bn.weight.copy_(frozen.weight)
        bn.bias.copy_(frozen.bias)
        bn.running_mean.copy_(frozen.running_mean)
        bn.running_var.copy_(frozen.running_var)
    return bn.to(frozen.weight.device)


def _to_frozen(bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    with torch.no_grad():
        frozen.weight.copy_(bn.weight.detach())
        frozen.bias.copy_(bn.bias.detach())
        frozen.running_mean.copy_(bn.running_mean)
        frozen.running_var.copy_(bn.running_var)
    return frozen.to(bn.weight.device)


def thaw_frozen_batchnorm(module: nn.Module, momentum: float = 0.1,
                          zero_init_residual: bool = False) -> int:
    """Replace every FrozenBN under ``module`` by a trainable BatchNorm2d; returns the count.

    ``zero_init_residual``: start the last norm of every bottleneck (``conv3.norm``) at weight 0,
    so each residual block starts as the identity (helps training deep ResNets from scratch).
    """
    count = _replace_children(module, FrozenBatchNorm2d, lambda m: _to_batchnorm(m, momentum))
    if zero_init_residual:
        for name, sub in module.named_modules():
            if name.endswith("conv3") and isinstance(getattr(sub, "norm", None), nn.BatchNorm2d):
                nn.init.zeros_(sub.norm.weight)
    logger.info("thawed %d FrozenBN layers into trainable BatchNorm2d", count)
    return count


def freeze_batchnorm(module: nn.Module) -> int:
    """Replace every BatchNorm2d under ``module`` by FrozenBN with its current values."""
    return _replace_children(module, nn.BatchNorm2d, _to_frozen)


def has_trainable_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in module.modules())

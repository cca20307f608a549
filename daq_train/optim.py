"""Optimiser, learning-rate schedule and gradient clipping of the official recipe (SPEC §4.2.7).

* AdamW; weight decay ``weight_decay`` except 0 for normalisation layers and embeddings
  (Mask2Former's ``WEIGHT_DECAY_NORM`` / ``WEIGHT_DECAY_EMBED``); parameters under ``backbone``
  get ``base_lr * backbone_multiplier``.
* Learning rate as a pure function of the iteration (so resuming needs no scheduler state): linear
  warm-up from ``warmup_factor`` to 1 over ``warmup_iters``, then ``step`` (x ``gamma`` at every
  milestone), ``poly`` (``(1 - it/max_iter) ** power``) or ``cosine`` decay.
* Gradient clipping by the global L2 norm of all trainable parameters (detectron2 "full_model").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from daq_model.resnet import FrozenBatchNorm2d

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
              nn.LayerNorm, nn.LocalResponseNorm, nn.InstanceNorm2d, FrozenBatchNorm2d)
SCHEDULES = ("step", "poly", "cosine", "constant")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and schedule of one stage (official values as defaults)."""

    base_lr: float = 1e-4
    weight_decay: float = 0.05
    weight_decay_norm: float = 0.0
    weight_decay_embed: float = 0.0
    backbone_multiplier: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_iters: int = 10
    warmup_factor: float = 1.0
    schedule: str = "step"
    steps: tuple[int, ...] = ()
    gamma: float = 0.1
    poly_power: float = 0.9
    min_lr_factor: float = 0.0
    clip_grad_norm: float | None = 0.01

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.base_lr <= 0:
            raise ValueError(f"base_lr must be positive, got {self.base_lr}")
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            raise ValueError("clip_grad_norm must be positive or None")


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Trainable parameters grouped by (lr, weight decay), detectron2 style; each group also
    records ``initial_lr`` and its parameter ``names``."""
    by_key: dict[tuple[float, float], dict] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr = cfg.base_lr
            if module_name == "backbone" or module_name.startswith("backbone."):
                lr *= cfg.backbone_multiplier
            decay = cfg.weight_decay
            if isinstance(module, NORM_TYPES):
                decay = cfg.weight_decay_norm
            elif isinstance(module, nn.Embedding):
                decay = cfg.weight_decay_embed
            group = by_key.setdefault((lr, decay), {"params": [], "names": [], "lr": lr,
                                                    "initial_lr": lr, "weight_decay": decay})
            group["params"].append(param)
            group["names"].append(f"{module_name}.{name}" if module_name else name)
    if not by_key:
        raise ValueError("the model has no trainable parameters")
    return list(by_key.values())


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.base_lr, betas=cfg.betas,
                             weight_decay=cfg.weight_decay)


def lr_factor(iteration: int, max_iter: int, cfg: OptimConfig) -> float:
    """Multiplier of every group's initial lr at ``iteration`` (0-based)."""
    if cfg.schedule == "step":
        factor = cfg.gamma ** sum(1 for s in cfg.steps if s <= iteration)
    elif cfg.schedule == "poly":
        factor = (1.0 - min(iteration, max_iter) / max(max_iter, 1)) ** cfg.poly_power
    elif cfg.schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * min(iteration, max_iter) / max(max_iter, 1)))
    else:
        factor = 1.0
    factor = cfg.min_lr_factor + (1.0 - cfg.min_lr_factor) * factor
    if iteration < cfg.warmup_iters:
        alpha = iteration / cfg.warmup_iters
        factor *= cfg.warmup_factor * (1 - alpha) + alpha
    return factor


def set_lr(optimizer: torch.optim.Optimizer, iteration: int, max_iter: int, cfg: OptimConfig) -> float:
    factor = lr_factor(iteration, max_iter, cfg)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
    return cfg.base_lr * factor


def clip_gradients(params: Iterable[torch.nn.Parameter], max_norm: float | None) -> float:
    """Clip the global L2 norm of the gradients to ``max_norm`` (if set); returns the norm before."""
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if max_norm is None:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in grads]))
        return float(norm)
    return float(torch.nn.utils.clip_grad_norm_(grads, max_norm))

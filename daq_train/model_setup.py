"""Building the model a stage trains, freezing what it does not train, and exporting the result.

* :func:`resolve_model_config` -- the :class:`~daq_model.config.DAQConfig` for the run: the train
  config's ``model`` (preset or yaml) with the class count and names of the training data (the
  ``daq_small`` preset goes through :func:`~daq_model.config.small_config`).
* :func:`build_stage_model` -- :class:`~daq_model.dvis_daq.DVISDAQ` initialised from scratch or
  from the previous stage's exported checkpoint (loaded strictly), with only the stage's modules
  trainable: ``segmenter`` = backbone + sem_seg_head, ``tracker`` = tracker, ``refiner`` = refiner.
* :func:`export_model` -- folds trainable batch norm back into FrozenBN and writes a checkpoint in
  our format (``daq_model.checkpoint.save_checkpoint``) that ``create_model(cfg, path)`` loads
  strictly, i.e. what inference uses.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from daq_model.checkpoint import load_checkpoint, save_checkpoint
from daq_model.config import DAQConfig, load_config, small_config
from daq_model.dvis_daq import DVISDAQ
from daq_train.norm import freeze_batchnorm, has_trainable_batchnorm, thaw_frozen_batchnorm

logger = logging.getLogger(__name__)

TRAINED_MODULES = {"segmenter": ("backbone", "sem_seg_head"), "tracker": ("tracker",),
                   "refiner": ("refiner",)}


def resolve_model_config(spec: str, num_classes: int, class_names: tuple[str, ...]) -> DAQConfig:
    """The model config of a run: ``spec`` (preset name or yaml) with the data's classes."""
    if spec == "daq_small":
        return small_config(num_classes, class_names=class_names)
    cfg = load_config(spec)
    if cfg.num_classes == num_classes and cfg.class_names == class_names:
        return cfg
    return cfg.with_overrides({"segmenter.num_classes": num_classes, "class_names": list(class_names)})


def build_stage_model(cfg: DAQConfig, stage: str, init_checkpoint: str | Path | None,
                      device: torch.device | str, thaw_backbone_norm: bool = False,
                      zero_init_residual: bool = False, resuming: bool = False) -> DVISDAQ:
    """The model for ``stage`` with only that stage's modules trainable (``resuming``: weights
    will come from a training state, so starting without a checkpoint is expected)."""
    if stage not in TRAINED_MODULES:
        raise KeyError(f"unknown stage {stage!r}")
    if stage == "refiner" and not cfg.offline:
        raise ValueError(f"config {cfg.name!r} is an online model: it has no refiner to train")
    model = DVISDAQ(cfg)
    if init_checkpoint is not None:
        report = load_checkpoint(model, init_checkpoint)
        logger.info("stage %s starts from %s (%d tensors)", stage, init_checkpoint, report.num_tensors)
    elif stage != "segmenter" and not resuming:
        logger.warning("stage %s starts without a previous stage's checkpoint: the frozen modules "
                       "are random", stage)
    if stage == "segmenter" and thaw_backbone_norm:
        thaw_frozen_batchnorm(model.backbone, zero_init_residual=zero_init_residual and init_checkpoint is None
                              and not resuming)
    trained = TRAINED_MODULES[stage]
    for name, module in model.named_children():
        module.requires_grad_(name in trained)
    model.to(device)
    set_stage_modes(model, stage)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    logger.info("stage %s: %d of %d parameters trainable (%s)", stage, n_train, n_all, ", ".join(trained))
    return model


def set_stage_modes(model: nn.Module, stage: str) -> None:
    """Trained modules in train mode, frozen ones in eval mode (re-applied every step)."""
    trained = TRAINED_MODULES[stage]
    for name, module in model.named_children():
        module.train(name in trained)


def export_model(model: DVISDAQ, destination: Path, metadata: Mapping[str, Any] | None = None) -> str:
    """Write ``model`` as an inference checkpoint (FrozenBN restored); returns the sha256."""
    export = model
    if has_trainable_batchnorm(model):
        export = copy.deepcopy(model)
        freeze_batchnorm(export.backbone)
    sha = save_checkpoint(export, destination, config=model.cfg, metadata=dict(metadata or {}))
    logger.info("exported model to %s (sha256 %s)", destination, sha[:12])
    return sha


def count_weights_mb(model: nn.Module) -> float:
    """Size of the state dict in MB (float32)."""
    return sum(v.numel() * v.element_size() for v in model.state_dict().values()) / 1e6


def describe(cfg: DAQConfig) -> dict[str, Any]:
    return {"name": cfg.name, "num_classes": cfg.num_classes,
            "meta_architecture": cfg.meta_architecture,
            "queries": cfg.segmenter.num_queries, "hidden": cfg.segmenter.hidden_dim,
            "backbone": dataclasses.asdict(cfg.backbone)}

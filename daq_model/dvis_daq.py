"""The whole DVIS-DAQ model: module tree with the official top-level names, and its factory.

``DVISDAQ`` holds ``backbone`` (detectron2 ResNet), ``sem_seg_head`` (``pixel_decoder`` +
``predictor``), ``tracker`` (:class:`~daq_model.tracker.DAQTracker`), ``refiner``
(:class:`~daq_model.refiner.TemporalRefiner`, offline configs only) and ``daq_criterion`` (only the
persistent ``empty_weight`` buffer that official checkpoints carry), in the official order, so
``state_dict()`` matches the official key list entry for entry. ``pixel_mean`` / ``pixel_std`` are
non-persistent buffers, as in the official model.

The per-frame part is exposed timm-style as :meth:`DVISDAQ.forward_features`; the frame loop,
tracking and post-processing live in the streaming predictor, which drives the submodules.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch import Tensor, nn

from daq_model.checkpoint import LoadReport, load_checkpoint
from daq_model.config import DAQConfig
from daq_model.outputs import SegmenterOutput
from daq_model.preprocess import PreprocessedFrames, preprocess_frames
from daq_model.refiner import TemporalRefiner
from daq_model.resnet import ResNet
from daq_model.segmenter import SegmenterHead
from daq_model.tracker import DAQTracker

logger = logging.getLogger(__name__)


class CriterionWeights(nn.Module):
    """The official criterion's only state: ``empty_weight`` = per-class weights of the
    classification loss, ``[1] * K + [no_object_weight]`` (a persistent buffer, so official
    checkpoints contain it and strict loading needs it)."""

    def __init__(self, num_classes: int, no_object_weight: float) -> None:
        super().__init__()
        weight = torch.ones(num_classes + 1)
        weight[-1] = no_object_weight
        self.register_buffer("empty_weight", weight)


class DVISDAQ(nn.Module):
    """DVIS-DAQ (online or offline, per ``cfg.meta_architecture``)."""

    def __init__(self, cfg: DAQConfig) -> None:
        super().__init__()
        cfg.check_buildable()
        self.cfg = cfg
        self.backbone = ResNet(cfg.backbone)
        self.sem_seg_head = SegmenterHead(cfg, self.backbone.output_shape())
        self.tracker = DAQTracker(cfg)
        self.daq_criterion = CriterionWeights(cfg.num_classes, cfg.loss.no_object_weight)
        self.refiner: TemporalRefiner | None = TemporalRefiner(cfg) if cfg.offline else None
        self.register_buffer("pixel_mean", torch.tensor(cfg.input.pixel_mean).view(-1, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.input.pixel_std).view(-1, 1, 1),
                             persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def size_divisibility(self) -> int:
        return self.cfg.segmenter.size_divisibility

    def preprocess(self, frames: np.ndarray | Tensor) -> PreprocessedFrames:
        """RGB uint8 frames ``(N, H, W, 3)`` -> normalised, padded batch on the model's device."""
        return preprocess_frames(frames, self.cfg, device=self.device)

    def forward_features(self, images: Tensor, image_size: tuple[int, int] | None = None,
                         keep_aux_masks: bool | None = None) -> SegmenterOutput:
        """Backbone + pixel decoder + segmenter decoder on a batch of frames.

        Args:
            images: ``(B, 3, Hp, Wp)`` normalised frames, padded to multiples of
                ``size_divisibility`` (:meth:`preprocess` produces them).
            image_size: ``(h', w')`` before padding (recorded in the output; defaults to the
                padded size).
            keep_aux_masks: keep the intermediate mask predictions (default: when training).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        d = self.size_divisibility
        if d > 1 and (images.shape[-2] % d or images.shape[-1] % d):
            raise ValueError(f"images of size {tuple(images.shape[-2:])} are not padded to a "
                             f"multiple of {d}")
        features = self.backbone(images)
        out = self.sem_seg_head(features, keep_aux_masks=keep_aux_masks)
        out.image_size = tuple(image_size) if image_size is not None else (
            int(images.shape[-2]), int(images.shape[-1]))
        return out

    def forward(self, images: Tensor, image_size: tuple[int, int] | None = None) -> SegmenterOutput:
        """Same as :meth:`forward_features` (the video-level steps need per-video state and run in
        the streaming predictor)."""
        return self.forward_features(images, image_size)


def create_model(cfg: DAQConfig, checkpoint: str | os.PathLike[str] | None = None,
                 device: torch.device | str = "cpu", eval_mode: bool = True) -> DVISDAQ:
    """Build :class:`DVISDAQ` for ``cfg`` and, if given, load ``checkpoint`` strictly.

    Raises :class:`~daq_model.config.BackboneNotImplementedError` for unbuildable configs and
    :class:`~daq_model.checkpoint.CheckpointError` for a checkpoint that is unreadable or does
    not fit. The model is returned in eval mode unless ``eval_mode`` is False.
    """
    cfg.check_buildable()
    model = DVISDAQ(cfg)
    if checkpoint is not None:
        report: LoadReport = load_checkpoint(model, checkpoint)
        logger.info("model %s: %d tensors from %s", cfg.name, report.num_tensors, report.source)
    model = model.to(device)
    return model.eval() if eval_mode else model.train()

"""Stage 1: the per-frame segmenter with Mask2Former's loss (SPEC §4.1, §1.3).

Each step draws ``batch_size`` single frames (random videos, random augmentation), runs the
backbone, pixel decoder and masked-attention decoder in train mode, and applies the image set
criterion to every decoder prediction (the learnable queries' prediction and every layer's;
each matched on its own, as Mask2Former's deep supervision). The official stage 1 additionally
fine-tunes with CTVIS's contrastive re-id loss on 10-frame clips; DAQ never uses ``reid_embed``,
so we train the segmentation losses only.
"""

from __future__ import annotations

import logging
from typing import Callable

from torch import Tensor

from daq_model.dvis_daq import DVISDAQ
from daq_train.config import TrainConfig
from daq_train.criterion import ImageSetCriterion, ImageTarget, LossWeights
from daq_train.losses import PointLossSettings
from daq_train.matcher import MatchCosts
from daq_train.model_setup import set_stage_modes
from daq_train.sampler import ClipSampler

logger = logging.getLogger(__name__)


def loss_settings(model: DVISDAQ, train_cfg: TrainConfig) -> tuple[LossWeights, MatchCosts, PointLossSettings]:
    """Loss weights from the model config, points per mask from the train config (or model)."""
    loss = model.cfg.loss
    points = train_cfg.num_points or loss.train_num_points
    weights = LossWeights(loss.class_weight, loss.mask_weight, loss.dice_weight, loss.no_object_weight)
    costs = MatchCosts(loss.class_weight, loss.mask_weight, loss.dice_weight, points)
    settings = PointLossSettings(points, loss.oversample_ratio, loss.importance_sample_ratio)
    return weights, costs, settings


def segmenter_loss_fn(model: DVISDAQ, sampler: ClipSampler, train_cfg: TrainConfig
                      ) -> Callable[[int], dict[str, Tensor]]:
    """``iteration -> weighted losses`` for stage 1."""
    weights, costs, points = loss_settings(model, train_cfg)
    criterion = ImageSetCriterion(model.cfg.num_classes, weights, costs, points)
    batch_size = train_cfg.segmenter.batch_size
    divisor = model.cfg.segmenter.size_divisibility
    device = model.device

    def compute(iteration: int) -> dict[str, Tensor]:
        set_stage_modes(model, "segmenter")
        images, clip_targets = sampler.sample_frames(iteration, batch_size, divisor)
        out = model.forward_features(images.to(device), keep_aux_masks=True)
        predictions = list(zip(out.aux_logits, out.aux_masks)) + [(out.pred_logits, out.pred_masks)]
        targets = [ImageTarget(t.labels.to(device), t.masks[:, 0].to(device)) for t in clip_targets]
        losses = criterion(predictions, targets)
        return {k: v * weights.for_key(k) for k, v in losses.items()}

    return compute


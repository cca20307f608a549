"""Stage 1: the per-frame segmenter with Mask2Former's loss (SPEC §4.1, §1.3).

Each step draws ``batch_size`` single frames (random videos, random augmentation), runs the
backbone, pixel decoder and masked-attention decoder in train mode, and applies the image set
criterion to every decoder prediction (the learnable queries' prediction and every layer's;
each matched on its own, as Mask2Former's deep supervision). The official stage 1 additionally
fine-tunes with CTVIS's contrastive re-id loss on 10-frame clips; DAQ never uses ``reid_embed``,
so we train the segmentation losses only. With ``segmenter.contrastive_weight`` > 0 the batch is
pairs of frames of one video and an InfoNCE loss on the query embeddings is added
(:func:`contrastive_loss`; not official, see :class:`~daq_train.config.SegmenterStageConfig`).
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from daq_model.dvis_daq import DVISDAQ
from daq_train.config import TrainConfig
from daq_train.criterion import ImageSetCriterion, ImageTarget, LossWeights
from daq_train.losses import PointLossSettings
from daq_train.data import ClipTargets
from daq_train.matcher import MatchCosts
from daq_train.model_setup import set_stage_modes
from daq_train.sampler import ClipSampler, ClipSettings

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
    stage = train_cfg.segmenter
    divisor = model.cfg.segmenter.size_divisibility
    device = model.device
    pairs = stage.contrastive_weight > 0
    if pairs and stage.batch_size < 2:
        raise ValueError("segmenter.contrastive_weight needs segmenter.batch_size >= 2 (pairs of frames)")

    def compute(iteration: int) -> dict[str, Tensor]:
        set_stage_modes(model, "segmenter")
        if pairs:
            settings = ClipSettings(num_frames=2, frame_range=stage.contrastive_frame_range,
                                    size_divisibility=divisor)
            images, clip_targets = sampler.sample_clips(iteration, stage.batch_size // 2, settings)
        else:
            images, clip_targets = sampler.sample_frames(iteration, stage.batch_size, divisor)
        out = model.forward_features(images.to(device), keep_aux_masks=True)
        predictions = list(zip(out.aux_logits, out.aux_masks)) + [(out.pred_logits, out.pred_masks)]
        targets = [ImageTarget(labels.to(device), masks.to(device))
                   for labels, masks in frame_targets(clip_targets)]
        unweighted, matches = criterion.with_matches(predictions, targets)
        losses = {k: v * weights.for_key(k) for k, v in unweighted.items()}
        if pairs:
            losses["loss_contrast"] = stage.contrastive_weight * contrastive_loss(
                out.pred_embds, clip_targets, matches, stage.contrastive_temperature)
        return losses

    return compute


def frame_targets(clip_targets: list[ClipTargets]) -> list[tuple[Tensor, Tensor]]:
    """``(labels, masks (G, H, W))`` of the objects visible in each frame, clip by clip, frame by
    frame (the batch order of :meth:`ClipSampler.sample_clips` and ``sample_frames``)."""
    out = []
    for t in clip_targets:
        for f in range(t.valid.shape[1]):
            visible = t.valid[:, f]
            out.append((t.labels[visible], t.masks[visible, f]))
    return out


def contrastive_loss(embeds: Tensor, clip_targets: list[ClipTargets], matches: list[tuple[Tensor, Tensor]],
                     temperature: float) -> Tensor:
    """InfoNCE over frame pairs: images ``2c`` and ``2c + 1`` are the two frames of clip ``c``.

    ``matches[b]``: image ``b``'s (query indices, indices among the objects visible in that frame)
    -- the segmentation loss's Hungarian matching of the final prediction. For each object visible
    in both frames, the cosine similarities of its query in one frame to every query of the other
    frame, over ``temperature``, are trained to pick its own query (both directions).
    ``embeds (B, Q, C)``; 0 (with a gradient path) when no object is in both frames.
    """
    terms, count = [], 0
    normed = F.normalize(embeds.float(), dim=-1)
    for c, target in enumerate(clip_targets):
        pair = (2 * c, 2 * c + 1)
        query_of = []
        for f, b in enumerate(pair):
            visible = torch.nonzero(target.valid[:, f]).flatten().tolist()
            rows, cols = matches[b]
            query_of.append({visible[g]: q for q, g in zip(rows.tolist(), cols.tolist())})
        both = sorted(set(query_of[0]) & set(query_of[1]))
        if not both:
            continue
        count += 2 * len(both)
        for src, dst in ((0, 1), (1, 0)):
            anchors = normed[pair[src], [query_of[src][g] for g in both]]  # (n, C)
            sims = anchors @ normed[pair[dst]].T / temperature  # (n, Q)
            own = torch.as_tensor([query_of[dst][g] for g in both], device=sims.device)
            terms.append(F.cross_entropy(sims, own, reduction="sum"))
    if not terms:
        return embeds.sum() * 0.0
    return torch.stack(terms).sum() / count

"""Mask and class losses of Mask2Former / DVIS-DAQ and the pairwise costs used for matching.

Conventions (as the official criterion, SPEC §4.2.6):

* mask BCE: per mask the mean over its sampled points of the binary cross-entropy with logits;
  summed over masks, divided by ``num_masks``;
* dice: per mask ``1 - (2 * sum(sigmoid(x) * y) + 1) / (sum(sigmoid(x)) + sum(y) + 1)``; summed
  over masks, divided by ``num_masks``;
* classification: cross-entropy over ``K + 1`` classes (the last is "no object") weighted by
  ``empty_weight`` (1 for every class, ``no_object_weight`` for the last), as a weighted mean.

The pairwise costs (:func:`pairwise_bce_cost`, :func:`pairwise_dice_cost`) give, for every
(prediction, target) pair, the same BCE / dice values on a shared point set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from daq_train.points import point_sample, uncertain_points


def empty_weight(num_classes: int, no_object_weight: float, device: torch.device | str | None = None
                 ) -> Tensor:
    """``(K+1,)`` class weights: ones, then ``no_object_weight`` for the no-object class."""
    weight = torch.ones(num_classes + 1, device=device)
    weight[-1] = no_object_weight
    return weight


def sigmoid_bce_loss(logits: Tensor, labels: Tensor, num_masks: float) -> Tensor:
    """``(N, P)`` point logits and 0/1 labels -> scalar (mean over points, sum over masks / num)."""
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: Tensor, labels: Tensor, num_masks: float) -> Tensor:
    """``(N, P)`` point logits and 0/1 labels -> scalar dice loss (sum over masks / num)."""
    probs = logits.sigmoid().flatten(1)
    labels = labels.flatten(1)
    numerator = 2 * (probs * labels).sum(-1)
    denominator = probs.sum(-1) + labels.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def pairwise_bce_cost(logits: Tensor, labels: Tensor) -> Tensor:
    """``(Q, P)`` logits, ``(G, P)`` labels -> ``(Q, G)`` mean point BCE of every pair."""
    num_points = logits.shape[1]
    if num_points == 0:
        return logits.new_zeros(logits.shape[0], labels.shape[0])
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ labels.T + neg @ (1 - labels).T) / num_points


def pairwise_dice_cost(logits: Tensor, labels: Tensor) -> Tensor:
    """``(Q, P)`` logits, ``(G, P)`` labels -> ``(Q, G)`` dice loss of every pair."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ labels.T
    denominator = probs.sum(-1)[:, None] + labels.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def classification_loss(logits: Tensor, target_classes: Tensor, class_weight: Tensor,
                        sample_weight: Tensor | None = None) -> Tensor:
    """Weighted cross-entropy: ``(N, K+1)`` logits, ``(N,)`` targets in ``0..K`` -> scalar.

    The weighted mean ``sum_i w_i * ce_i / sum_i w_i`` with ``w_i = class_weight[y_i]``
    (``F.cross_entropy`` with ``weight``), times ``sample_weight[i]`` where one is given.
    An empty input gives a zero that still depends on ``logits`` (so backward works).
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    class_weight = class_weight.to(logits.device)
    if sample_weight is None:
        return F.cross_entropy(logits.float(), target_classes, weight=class_weight)
    weight = class_weight[target_classes] * sample_weight.to(logits.device, torch.float32)
    per_row = F.cross_entropy(logits.float(), target_classes, reduction="none")
    return (weight * per_row).sum() / weight.sum().clamp_min(1e-12)


@dataclass(frozen=True)
class PointLossSettings:
    """How many points the mask loss samples per mask, and how they are chosen."""

    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75


def point_mask_losses(pred_masks: Tensor, target_masks: Tensor, num_masks: float,
                      settings: PointLossSettings) -> tuple[Tensor, Tensor]:
    """BCE and dice losses of matched pairs on importance-sampled points.

    ``pred_masks``: ``(N, h, w)`` logits; ``target_masks``: ``(N, H, W)`` 0/1 (any resolution that
    covers the same padded image). Returns ``(loss_mask, loss_dice)``; with ``N == 0`` both are
    zeros connected to ``pred_masks``.
    """
    if pred_masks.shape[0] == 0:
        zero = pred_masks.sum() * 0.0
        return zero, zero.clone()
    src = pred_masks[:, None]
    tgt = target_masks[:, None].to(src.dtype)
    points = uncertain_points(src.detach(), settings.num_points, settings.oversample_ratio,
                              settings.importance_sample_ratio)
    with torch.no_grad():
        labels = point_sample(tgt, points)[:, 0, :]
    logits = point_sample(src, points)[:, 0, :]
    logits = logits.float()
    labels = labels.float()
    return sigmoid_bce_loss(logits, labels, num_masks), dice_loss(logits, labels, num_masks)

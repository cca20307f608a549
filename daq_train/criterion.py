"""Set criteria: the segmenter's per-image loss, the DAQ clip loss and the refiner's video loss.

All three return a dict of *unweighted* losses named like the official ones (``loss_ce``,
``loss_mask``, ``loss_dice`` for the final prediction, ``..._i`` for auxiliary prediction ``i`` in
decoder order) and :func:`weighted_total` applies the class / mask / dice weights.

Deep supervision:

* :class:`ImageSetCriterion` (Mask2Former, stage 1): every decoder prediction is matched on its own.
* :func:`clip_losses` (DAQ tracker, stage 2): one matching per frame (computed by the tracker
  training step on the final prediction) supervises every layer of that frame.
* :class:`VideoSetCriterion` (refiner, stage 3): either one given matching for every layer (the
  matching of the online candidates, first half of training) or every layer matched on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import Tensor

from daq_train.losses import PointLossSettings, classification_loss, empty_weight, point_mask_losses
from daq_train.matcher import MatchCosts, match, stack_frames

LOSS_KINDS = ("loss_ce", "loss_mask", "loss_dice")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three loss terms (official: 2 / 5 / 5) and of the no-object class (0.1)."""

    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1

    def for_key(self, key: str) -> float:
        kind = key.split("loss_", 1)[-1].split("_", 1)[0]
        return {"ce": self.class_weight, "mask": self.mask_weight, "dice": self.dice_weight}[kind]


def weighted_total(losses: Mapping[str, Tensor], weights: LossWeights) -> Tensor:
    """Sum of ``weight(key) * loss`` over every entry of ``losses``."""
    if not losses:
        raise ValueError("no losses to sum")
    return sum(weights.for_key(k) * v for k, v in losses.items())  # type: ignore[return-value]


def _suffix(index: int, num_predictions: int) -> str:
    """Key suffix of prediction ``index``: ``""`` for the last, ``"_i"`` for auxiliary ``i``."""
    return "" if index == num_predictions - 1 else f"_{index}"


@dataclass
class ImageTarget:
    """Ground truth of one image: ``labels (G,)`` in ``0..K-1``, ``masks (G, H, W)`` 0/1."""

    labels: Tensor
    masks: Tensor


class ImageSetCriterion:
    """Mask2Former's per-image set loss with deep supervision (each prediction matched alone)."""

    def __init__(self, num_classes: int, weights: LossWeights, costs: MatchCosts,
                 points: PointLossSettings) -> None:
        self.num_classes = num_classes
        self.weights = weights
        self.costs = costs
        self.points = points

    def __call__(self, predictions: Sequence[tuple[Tensor, Tensor]],
                 targets: Sequence[ImageTarget]) -> dict[str, Tensor]:
        """``predictions``: per decoder stage ``(logits (B, Q, K+1), masks (B, Q, h, w))``, last =
        final; ``targets``: one per image of the batch."""
        return self.with_matches(predictions, targets)[0]

    def with_matches(self, predictions: Sequence[tuple[Tensor, Tensor]], targets: Sequence[ImageTarget]
                     ) -> tuple[dict[str, Tensor], list[tuple[Tensor, Tensor]]]:
        """The losses and, per image, the final prediction's matching ``(query indices, target
        indices)``."""
        if len(predictions) == 0:
            raise ValueError("no predictions")
        num_masks = max(float(sum(int(t.labels.numel()) for t in targets)), 1.0)
        losses: dict[str, Tensor] = {}
        matches: list[tuple[Tensor, Tensor]] = []
        for i, (logits, masks) in enumerate(predictions):
            if logits.shape[0] != len(targets):
                raise ValueError(f"{logits.shape[0]} predicted images for {len(targets)} targets")
            suffix = _suffix(i, len(predictions))
            single, matches = self._single(logits, masks, targets, num_masks)
            for key, value in single.items():
                losses[key + suffix] = value
        return losses, matches

    def _single(self, logits: Tensor, masks: Tensor, targets: Sequence[ImageTarget],
                num_masks: float) -> tuple[dict[str, Tensor], list[tuple[Tensor, Tensor]]]:
        class_targets = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64,
                                   device=logits.device)
        src_masks, tgt_masks, matches = [], [], []
        for b, target in enumerate(targets):
            rows, cols = match(logits[b], masks[b], target.labels, target.masks, self.costs)
            matches.append((rows, cols))
            class_targets[b, rows] = target.labels[cols.to(target.labels.device)].to(logits.device)
            src_masks.append(masks[b, rows])
            tgt_masks.append(target.masks[cols.to(target.masks.device)].to(masks.device))
        weight = empty_weight(self.num_classes, self.weights.no_object_weight, logits.device)
        loss_ce = classification_loss(logits.flatten(0, 1), class_targets.flatten(), weight)
        loss_mask, loss_dice = point_mask_losses(
            torch.cat(src_masks), _cat_targets(tgt_masks, masks.dtype), num_masks, self.points)
        return {"loss_ce": loss_ce, "loss_mask": loss_mask, "loss_dice": loss_dice}, matches


def _cat_targets(masks: Sequence[Tensor], dtype: torch.dtype) -> Tensor:
    return torch.cat([m.to(dtype) for m in masks]) if masks else torch.zeros(0, 1, 1, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# DAQ clip loss (tracker)

@dataclass
class FrameTarget:
    """Ground truth of one frame of a clip (every instance of the clip, SPEC §4.2.1).

    ``labels (G,)``, ``masks (G, H, W)`` (empty where absent), ``valid (G,)`` mask non-empty.
    """

    labels: Tensor
    masks: Tensor
    valid: Tensor


@dataclass
class FrameOutput:
    """One branch's predictions for one frame, with the matching that supervises them.

    ``logits``/``masks``: per layer ``(R, K+1)`` / ``(R, h, w)``, last = final. ``indices``: (row,
    GT) pairs. ``negatives``: GT indices whose pairs are supervised as "no object" even if valid
    (the simulated disappearance). ``first_emerging_row``: rows from this one on are emerging
    anchor queries (``None``: the frame has none, or they are not told apart).
    ``duplicate_rows``: "no object" rows that duplicate a positive (see
    :func:`duplicate_emerging_rows`), re-weighted by ``clip_losses``' ``emerging_duplicate_weight``.
    """

    logits: list[Tensor]
    masks: list[Tensor]
    indices: tuple[Tensor, Tensor]
    negatives: list[int] = field(default_factory=list)
    first_emerging_row: int | None = None
    duplicate_rows: Tensor | None = None


def supervised_pairs(indices: tuple[Tensor, Tensor], valid: Tensor, negatives: Sequence[int]
                     ) -> tuple[Tensor, Tensor]:
    """The (row, GT) pairs of ``indices`` that are positives: GT valid in the frame and not in
    ``negatives``."""
    rows, cols = indices
    keep = valid.to(torch.bool).to(cols.device)[cols] if cols.numel() else cols.bool()
    for neg in negatives:
        keep = keep & (cols != neg)
    return rows[keep], cols[keep]


def clip_losses(outputs: Sequence[FrameOutput], targets: Sequence[FrameTarget], num_classes: int,
                weights: LossWeights, points: PointLossSettings,
                emerging_positive_weight: float = 1.0,
                emerging_duplicate_weight: float = 1.0) -> dict[str, Tensor]:
    """``DAQCriterion``: losses of one branch over a clip, deep-supervised with fixed matchings.

    Positives of a frame are its pairs whose GT is valid in that frame and not in ``negatives``;
    every other row is "no object". Classification is one weighted CE over all rows of all frames;
    ``num_masks`` is the number of pairs over the clip (invalid ones included), at least 1.
    ``emerging_positive_weight`` (not official; 1 = the official loss) multiplies the class weight
    of every positive on an emerging row (``FrameOutput.first_emerging_row``): an object that
    enters is the emerging queries' only positive, rare beside their "no object" rows.
    ``emerging_duplicate_weight`` (not official; 1 = official) multiplies the class weight of the
    rows in ``FrameOutput.duplicate_rows`` that are not positives.
    """
    if len(outputs) != len(targets):
        raise ValueError(f"{len(outputs)} frame outputs for {len(targets)} frame targets")
    if not outputs:
        raise ValueError("no frame outputs")
    num_layers = len(outputs[0].logits)
    if any(len(o.logits) != num_layers or len(o.masks) != num_layers for o in outputs):
        raise ValueError("every frame output must carry the same number of layers")
    num_masks = max(float(sum(int(o.indices[0].numel()) for o in outputs)), 1.0)

    positives = [supervised_pairs(out.indices, tgt.valid, out.negatives) for out, tgt in zip(outputs, targets)]

    device = outputs[0].logits[-1].device
    weight = empty_weight(num_classes, weights.no_object_weight, device)
    sample_weight = _row_weights(outputs, positives, emerging_positive_weight,
                                 emerging_duplicate_weight, device)
    losses: dict[str, Tensor] = {}
    for layer in range(num_layers):
        all_logits, all_classes, src, tgt_masks = [], [], [], []
        for out, tgt, (rows, cols) in zip(outputs, targets, positives):
            logits = out.logits[layer]
            classes = torch.full(logits.shape[:1], num_classes, dtype=torch.int64, device=device)
            classes[rows] = tgt.labels.to(device)[cols]
            all_logits.append(logits)
            all_classes.append(classes)
            src.append(out.masks[layer][rows])
            tgt_masks.append(tgt.masks[cols.to(tgt.masks.device)])
        suffix = _suffix(layer, num_layers)
        losses["loss_ce" + suffix] = classification_loss(torch.cat(all_logits), torch.cat(all_classes),
                                                         weight, sample_weight)
        src_cat = torch.cat(src)
        loss_mask, loss_dice = point_mask_losses(
            src_cat, _cat_targets(tgt_masks, src_cat.dtype).to(device), num_masks, points)
        losses["loss_mask" + suffix] = loss_mask
        losses["loss_dice" + suffix] = loss_dice
    return losses


def _row_weights(outputs: Sequence[FrameOutput], positives: Sequence[tuple[Tensor, Tensor]],
                 positive_factor: float, duplicate_factor: float, device: torch.device
                 ) -> Tensor | None:
    """Per-row CE multipliers over the clip's concatenated rows: ``positive_factor`` on positive
    emerging rows, ``duplicate_factor`` on duplicate rows that are not positives, 1 elsewhere;
    ``None`` where nothing is re-weighted."""
    if positive_factor == 1.0 and duplicate_factor == 1.0:
        return None
    per_frame = []
    for out, (rows, _cols) in zip(outputs, positives):
        w = torch.ones(out.logits[-1].shape[0], device=device)
        if out.duplicate_rows is not None and out.duplicate_rows.numel():
            w[out.duplicate_rows.to(device)] = duplicate_factor
        rows = rows.to(device)
        w[rows] = 1.0
        if out.first_emerging_row is not None:
            w[rows[rows >= out.first_emerging_row]] = positive_factor
        per_frame.append(w)
    return torch.cat(per_frame)


def duplicate_emerging_rows(masks: Tensor, first_emerging_row: int, positive_rows: Tensor,
                            positive_targets: Tensor, iou_threshold: float) -> Tensor:
    """Emerging rows (``>= first_emerging_row``, not in ``positive_rows``) whose mask (``(R, h, w)``
    logits > 0, resized to the targets' size) has IoU >= ``iou_threshold`` with one of
    ``positive_targets`` ``(P, H, W)``, the masks of the objects other rows are supervised on."""
    empty = torch.zeros(0, dtype=torch.int64, device=masks.device)
    num_rows = masks.shape[0]
    if first_emerging_row >= num_rows or positive_targets.shape[0] == 0:
        return empty
    candidates = torch.ones(num_rows, dtype=torch.bool, device=masks.device)
    candidates[:first_emerging_row] = False
    candidates[positive_rows.to(masks.device)] = False
    rows = torch.nonzero(candidates).squeeze(1)
    if rows.numel() == 0:
        return empty
    with torch.no_grad():
        pred = masks[rows].detach().float()
        if pred.shape[-2:] != positive_targets.shape[-2:]:
            pred = torch.nn.functional.interpolate(pred[None], size=positive_targets.shape[-2:],
                                                   mode="bilinear", align_corners=False)[0]
        pred = (pred > 0).flatten(1).float()
        gt = (positive_targets.to(masks.device) > 0.5).flatten(1).float()
        inter = pred @ gt.T
        union = pred.sum(1, keepdim=True) + gt.sum(1)[None, :] - inter
        iou = torch.where(union > 0, inter / union.clamp_min(1.0), torch.zeros_like(inter))
    return rows[(iou >= iou_threshold).any(1)]


# ----------------------------------------------------------------------------------------------
# refiner (video) loss

@dataclass
class VideoTarget:
    """Ground truth of one clip for the refiner: ``labels (G,)``, ``masks (G, T, H, W)``."""

    labels: Tensor
    masks: Tensor


class VideoSetCriterion:
    """The refiner's video set loss: frames stacked into one ``(T*H) x W`` image per candidate.

    ``points`` and ``costs.num_points`` are per frame; they are multiplied by ``T`` as the official
    (12544 x SAMPLING_FRAME_NUM).
    """

    def __init__(self, num_classes: int, weights: LossWeights, costs: MatchCosts,
                 points: PointLossSettings) -> None:
        self.num_classes = num_classes
        self.weights = weights
        self.costs = costs
        self.points = points

    def match(self, logits: Tensor, masks: Tensor, target: VideoTarget) -> tuple[Tensor, Tensor]:
        """Video Hungarian matching of ``(N, K+1)`` logits and ``(N, T, h, w)`` masks."""
        t = masks.shape[1]
        costs = MatchCosts(self.costs.class_weight, self.costs.mask_weight, self.costs.dice_weight,
                           self.costs.num_points * t)
        return match(logits, stack_frames(masks), target.labels, stack_frames(target.masks), costs)

    def __call__(self, predictions: Sequence[tuple[Tensor, Tensor]], target: VideoTarget,
                 indices: tuple[Tensor, Tensor] | None = None) -> dict[str, Tensor]:
        """``predictions``: per refiner layer ``(logits (N, K+1), masks (N, T, h, w))``, last =
        final. ``indices``: a fixed matching for every layer, or ``None`` to match each layer."""
        if len(predictions) == 0:
            raise ValueError("no predictions")
        num_masks = max(float(target.labels.numel()), 1.0)
        t = target.masks.shape[1]
        points = PointLossSettings(self.points.num_points * t, self.points.oversample_ratio,
                                   self.points.importance_sample_ratio)
        losses: dict[str, Tensor] = {}
        for i, (logits, masks) in enumerate(predictions):
            if masks.shape[1] != t:
                raise ValueError(f"prediction has {masks.shape[1]} frames, target {t}")
            rows, cols = indices if indices is not None else self.match(logits, masks, target)
            rows, cols = rows.to(logits.device), cols.to(logits.device)
            classes = torch.full(logits.shape[:1], self.num_classes, dtype=torch.int64,
                                 device=logits.device)
            classes[rows] = target.labels.to(logits.device)[cols]
            weight = empty_weight(self.num_classes, self.weights.no_object_weight, logits.device)
            suffix = _suffix(i, len(predictions))
            losses["loss_ce" + suffix] = classification_loss(logits, classes, weight)
            src = stack_frames(masks[rows])
            tgt = stack_frames(target.masks[cols.to(target.masks.device)].to(masks.dtype))
            loss_mask, loss_dice = point_mask_losses(src, tgt.to(src.device), num_masks, points)
            losses["loss_mask" + suffix] = loss_mask
            losses["loss_dice" + suffix] = loss_dice
        return losses

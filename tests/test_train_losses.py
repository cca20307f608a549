"""Point sampling, losses and criteria of daq_train, on tensors small enough to check by hand."""

from __future__ import annotations

import math

import pytest
import torch

from daq_train.criterion import (
    FrameOutput,
    FrameTarget,
    ImageSetCriterion,
    ImageTarget,
    LossWeights,
    VideoSetCriterion,
    VideoTarget,
    clip_losses,
    weighted_total,
)
from daq_train.losses import (
    PointLossSettings,
    classification_loss,
    dice_loss,
    empty_weight,
    pairwise_bce_cost,
    pairwise_dice_cost,
    point_mask_losses,
    sigmoid_bce_loss,
)
from daq_train.matcher import MatchCosts
from daq_train.points import point_sample, uncertain_points

SOFTPLUS = torch.nn.functional.softplus


def test_point_sample_reads_pixel_centres_and_interpolates() -> None:
    img = torch.tensor([[4.0, 1.0], [2.0, 3.0]])[None, None]
    pts = torch.tensor([[[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.5, 0.5], [0.0, 0.0]]])
    out = point_sample(img, pts)[0, 0]
    # centres, the middle (mean of four) and the corner (a quarter of the corner pixel, zero pad)
    assert torch.allclose(out, torch.tensor([4.0, 1.0, 2.0, 2.5, 1.0]))


def test_point_sample_same_location_at_any_resolution() -> None:
    coarse = torch.zeros(1, 1, 4, 4)
    coarse[..., :, 2:] = 1.0
    fine = torch.nn.functional.interpolate(coarse, scale_factor=4, mode="nearest")
    pts = torch.tensor([[[0.1, 0.3], [0.8, 0.6]]])
    assert point_sample(coarse, pts)[0, 0].tolist() == point_sample(fine, pts)[0, 0].tolist() == [0, 1]


def test_uncertain_points_prefer_logits_near_zero() -> None:
    torch.manual_seed(0)
    logits = torch.full((1, 1, 4, 4), 100.0)
    logits[..., :, :2] = 0.0  # columns 0,1 are uncertain; their centres are at x = 0.125, 0.375
    pts = uncertain_points(logits, num_points=200, oversample_ratio=4, importance_sample_ratio=1.0)
    assert pts.shape == (1, 200, 2)
    assert bool((pts[0, :, 0] <= 0.375).all())
    mixed = uncertain_points(logits, num_points=200, oversample_ratio=4, importance_sample_ratio=0.5)
    assert bool((mixed[0, :100, 0] <= 0.375).all())
    assert float((mixed[0, 100:, 0] > 0.5).float().mean()) > 0.3  # the random half is uniform


def test_bce_and_dice_by_hand() -> None:
    logits = torch.tensor([[0.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0]])
    assert sigmoid_bce_loss(logits, labels, 1.0).item() == pytest.approx(math.log(2))
    # probs .5/.5: (2*.5 + 1) / (1 + 1 + 1) = 2/3 -> dice 1/3
    assert dice_loss(logits, labels, 1.0).item() == pytest.approx(1 / 3)
    two = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    assert sigmoid_bce_loss(two, labels.repeat(2, 1), 4.0).item() == pytest.approx(math.log(2) / 2)


def test_pairwise_costs_equal_per_pair_losses() -> None:
    torch.manual_seed(1)
    pred, tgt = torch.randn(3, 50), (torch.rand(2, 50) > 0.5).float()
    bce, dice = pairwise_bce_cost(pred, tgt), pairwise_dice_cost(pred, tgt)
    for i in range(3):
        for j in range(2):
            assert bce[i, j].item() == pytest.approx(sigmoid_bce_loss(pred[i:i + 1], tgt[j:j + 1], 1).item(), rel=1e-5)
            assert dice[i, j].item() == pytest.approx(dice_loss(pred[i:i + 1], tgt[j:j + 1], 1).item(), rel=1e-5)


def test_classification_loss_weights_no_object() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    targets = torch.tensor([0, 2])
    weight = empty_weight(2, 0.1)
    assert weight.tolist() == pytest.approx([1.0, 1.0, 0.1])
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 2))
    ce1 = -math.log(math.e / (math.e + 2))
    expected = (1.0 * ce0 + 0.1 * ce1) / 1.1
    assert classification_loss(logits, targets, weight).item() == pytest.approx(expected, rel=1e-6)


def test_classification_loss_sample_weights_scale_the_weighted_mean() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 3.0, 0.0]])
    targets = torch.tensor([0, 2, 1])
    weight = empty_weight(2, 0.1)
    per_row = torch.nn.functional.cross_entropy(logits, targets, reduction="none").tolist()
    w = [1.0 * 4.0, 0.1 * 1.0, 1.0 * 0.5]
    expected = sum(a * b for a, b in zip(w, per_row)) / sum(w)
    got = classification_loss(logits, targets, weight, torch.tensor([4.0, 1.0, 0.5]))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    ones = classification_loss(logits, targets, weight, torch.ones(3))
    assert ones.item() == pytest.approx(classification_loss(logits, targets, weight).item(), rel=1e-6)


def test_point_mask_losses_on_constant_masks() -> None:
    torch.manual_seed(2)
    pred = torch.full((2, 8, 8), 1.5, requires_grad=True)
    tgt = torch.ones(2, 32, 32)  # other resolution, same image
    settings = PointLossSettings(num_points=64, oversample_ratio=3.0, importance_sample_ratio=0.75)
    bce, dice = point_mask_losses(pred, tgt, 4.0, settings)
    # interior points read 1.5 and 1; zero padding only touches the outer half pixel, so sample
    # away from it by checking the bound instead of an exact value
    assert bce.item() <= 2 * SOFTPLUS(torch.tensor(-1.5)).item() / 4 + 0.2
    bce.backward()
    assert pred.grad is not None
    zero_bce, zero_dice = point_mask_losses(pred[:0], tgt[:0], 1.0, settings)
    assert zero_bce.item() == 0 and zero_dice.item() == 0


def _mask(h: int, w: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    m = torch.zeros(h, w)
    y0, y1, x0, x1 = box
    m[y0:y1, x0:x1] = 1
    return m


def test_image_criterion_matches_each_layer_and_names_keys() -> None:
    torch.manual_seed(3)
    tgt_masks = torch.stack([_mask(16, 16, (0, 8, 0, 8)), _mask(16, 16, (8, 16, 8, 16))])
    target = ImageTarget(labels=torch.tensor([1, 0]), masks=tgt_masks)
    good_masks = torch.full((1, 3, 16, 16), -20.0)
    good_masks[0, 2] = tgt_masks[0] * 40 - 20  # query 2 = object 0
    good_masks[0, 0] = tgt_masks[1] * 40 - 20  # query 0 = object 1
    good_logits = torch.full((1, 3, 3), -10.0)
    good_logits[0, 2, 1] = 10
    good_logits[0, 0, 0] = 10
    good_logits[0, 1, 2] = 10  # query 1: no object
    bad = (torch.zeros_like(good_logits), torch.zeros_like(good_masks))
    # uniform points: importance sampling would pick only the (interpolated) mask borders
    crit = ImageSetCriterion(2, LossWeights(), MatchCosts(num_points=256),
                             PointLossSettings(num_points=256, importance_sample_ratio=0.0))
    losses = crit([bad, (good_logits, good_masks)], [target])
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_mask_0", "loss_dice_0"}
    assert losses["loss_ce"].item() < 1e-3
    assert losses["loss_dice"].item() < 0.1 and losses["loss_mask"].item() < 0.5
    assert losses["loss_dice_0"].item() > 0.3  # all-zero logits: sigmoid .5 everywhere
    assert losses["loss_ce_0"].item() == pytest.approx(math.log(3), rel=1e-5)
    total = weighted_total(losses, LossWeights())
    expected = sum(LossWeights().for_key(k) * v for k, v in losses.items())
    assert total.item() == pytest.approx(expected.item())


def test_clip_losses_positives_negatives_and_num_masks() -> None:
    # one frame, 3 rows, GT 0 valid (pair row 0), GT 1 invalid (pair row 1, counts in num_masks)
    logits = torch.zeros(3, 3)
    masks = torch.full((3, 4, 4), 2.0)
    target = FrameTarget(labels=torch.tensor([0, 1]), masks=torch.ones(2, 8, 8),
                         valid=torch.tensor([True, False]))
    out = FrameOutput([logits], [masks], (torch.tensor([0, 1]), torch.tensor([0, 1])))
    settings = PointLossSettings(num_points=16, oversample_ratio=1.0, importance_sample_ratio=0.0)
    losses = clip_losses([out], [target], 2, LossWeights(), settings)
    # classification: row 0 -> class 0 (weight 1), rows 1, 2 -> no object (weight .1); all ce log 3
    assert losses["loss_ce"].item() == pytest.approx(math.log(3), rel=1e-6)
    # masks: only row 0 is positive, num_masks = 2 pairs; uniform points may hit the zero-padded
    # border, so bound the per-point BCE between softplus(-2) and log 2
    assert SOFTPLUS(torch.tensor(-2.0)).item() / 2 - 1e-6 <= losses["loss_mask"].item() <= math.log(2) / 2
    # a negative removes the remaining positive: no mask loss at all
    neg = FrameOutput([logits], [masks], out.indices, negatives=[0])
    losses = clip_losses([neg], [target], 2, LossWeights(), settings)
    assert losses["loss_mask"].item() == 0.0


def test_clip_losses_deep_supervision_uses_same_matching() -> None:
    target = FrameTarget(labels=torch.tensor([1]), masks=torch.ones(1, 8, 8), valid=torch.tensor([True]))
    good = torch.tensor([[-10.0, 10.0, -10.0], [-10.0, -10.0, 10.0]])
    bad = torch.tensor([[-10.0, -10.0, 10.0], [-10.0, 10.0, -10.0]])  # same rows, swapped
    masks = torch.full((2, 4, 4), 10.0)
    out = FrameOutput([bad, good], [masks, masks], (torch.tensor([0]), torch.tensor([0])))
    losses = clip_losses([out], [target], 2, LossWeights(), PointLossSettings(num_points=16))
    assert losses["loss_ce"].item() < 1e-3
    assert losses["loss_ce_0"].item() > 5  # not re-matched: row 0 must say class 1


def test_clip_losses_emerging_positive_weight_only_reweights_emerging_positives() -> None:
    # frame 1 of a clip: row 0 carries GT 0, rows 1-2 are emerging queries, row 1 picks up GT 1
    target = FrameTarget(labels=torch.tensor([0, 1]), masks=torch.ones(2, 8, 8),
                         valid=torch.tensor([True, True]))
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 2.0]])
    masks = torch.full((3, 4, 4), 2.0)
    indices = (torch.tensor([0, 1]), torch.tensor([0, 1]))
    settings = PointLossSettings(num_points=16, oversample_ratio=1.0, importance_sample_ratio=0.0)
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2]), reduction="none").tolist()

    def loss_ce(first_emerging_row, factor) -> float:
        out = FrameOutput([logits], [masks], indices, first_emerging_row=first_emerging_row)
        return clip_losses([out], [target], 2, LossWeights(), settings, factor)["loss_ce"].item()

    official = (ce[0] + ce[1] + 0.1 * ce[2]) / 2.1
    assert loss_ce(1, 1.0) == pytest.approx(official, rel=1e-6)
    assert loss_ce(None, 5.0) == pytest.approx(official, rel=1e-6)  # no emerging rows named
    assert loss_ce(1, 5.0) == pytest.approx((ce[0] + 5 * ce[1] + 0.1 * ce[2]) / 6.1, rel=1e-6)
    # the carried row's positive is not emerging; the unmatched emerging row stays "no object"
    assert loss_ce(2, 5.0) == pytest.approx(official, rel=1e-6)



def test_clip_losses_emerging_duplicate_weight_only_reweights_duplicate_negatives() -> None:
    # frame 1: row 0 carries GT 0, rows 1-3 emerging; row 1 picks up GT 1; rows 2 and 3 are
    # "no object", row 2 named a duplicate (and row 1, a positive, named too: it stays a positive)
    target = FrameTarget(labels=torch.tensor([0, 1]), masks=torch.ones(2, 8, 8),
                         valid=torch.tensor([True, True]))
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.3, 0.0, 1.0], [0.0, 0.0, 2.0]])
    masks = torch.full((4, 4, 4), 2.0)
    indices = (torch.tensor([0, 1]), torch.tensor([0, 1]))
    settings = PointLossSettings(num_points=16, oversample_ratio=1.0, importance_sample_ratio=0.0)
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 2]), reduction="none").tolist()

    def loss_ce(duplicates, positive, duplicate) -> float:
        out = FrameOutput([logits], [masks], indices, first_emerging_row=1, duplicate_rows=duplicates)
        return clip_losses([out], [target], 2, LossWeights(), settings, positive, duplicate)["loss_ce"].item()

    official = (ce[0] + ce[1] + 0.1 * ce[2] + 0.1 * ce[3]) / 2.2
    named = torch.tensor([1, 2])
    assert loss_ce(named, 1.0, 1.0) == pytest.approx(official, rel=1e-6)
    assert loss_ce(None, 1.0, 10.0) == pytest.approx(official, rel=1e-6)
    assert loss_ce(named, 1.0, 10.0) == pytest.approx((ce[0] + ce[1] + ce[2] + 0.1 * ce[3]) / 3.1, rel=1e-6)
    assert loss_ce(named, 5.0, 10.0) == pytest.approx(
        (ce[0] + 5 * ce[1] + ce[2] + 0.1 * ce[3]) / 7.1, rel=1e-6)


def test_duplicate_emerging_rows_by_mask_iou() -> None:
    from daq_train.criterion import duplicate_emerging_rows

    def box(y0, y1, x0, x1):
        m = torch.full((4, 4), -5.0)
        m[y0:y1, x0:x1] = 5.0
        return m

    # row 0 carried (over the object), row 1 a positive emerging row, rows 2-4 emerging negatives
    masks = torch.stack([box(0, 2, 0, 2), box(2, 4, 2, 4), box(0, 2, 0, 2), box(0, 2, 0, 1),
                         box(2, 4, 0, 2)])
    objects = torch.zeros(2, 8, 8)  # targets at twice the mask size: bilinear resize
    objects[0, :4, :4] = 1  # carried object = row 0's mask
    objects[1, 4:, 4:] = 1  # the picked-up object = row 1's mask
    positives = torch.tensor([0, 1])
    found = duplicate_emerging_rows(masks, 1, positives, objects, 0.5)
    assert found.tolist() == [2, 3]  # row 3 covers half of object 0: IoU exactly 0.5
    assert duplicate_emerging_rows(masks, 1, positives, objects, 0.6).tolist() == [2]
    assert duplicate_emerging_rows(masks, 5, positives, objects, 0.5).numel() == 0  # no emerging rows
    assert duplicate_emerging_rows(masks, 1, positives, objects[:0], 0.5).numel() == 0  # no positives
    # a positive row is never its own duplicate, even at a trivial threshold
    assert 1 not in duplicate_emerging_rows(masks, 1, positives, objects, 1e-6).tolist()

def test_video_criterion_fixed_vs_self_matching() -> None:
    torch.manual_seed(4)
    t_masks = torch.stack([torch.stack([_mask(8, 8, (0, 4, 0, 8)), _mask(8, 8, (4, 8, 0, 8))])])
    target = VideoTarget(labels=torch.tensor([0]), masks=t_masks)  # 1 object, 2 frames
    logits = torch.tensor([[10.0, -10.0, -10.0], [-10.0, -10.0, 10.0]])
    masks = torch.full((2, 2, 4, 4), -20.0)
    masks[1] = t_masks[0, :, ::2, ::2] * 40 - 20  # candidate 1 has the right masks
    masks[0] = masks[1]
    crit = VideoSetCriterion(2, LossWeights(), MatchCosts(num_points=64), PointLossSettings(num_points=64))
    self_matched = crit([(logits, masks)], target)
    assert self_matched["loss_ce"].item() < 1e-3  # row 0 has the class: matched there
    fixed = crit([(logits, masks)], target, indices=(torch.tensor([1]), torch.tensor([0])))
    assert fixed["loss_ce"].item() > 5

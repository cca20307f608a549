"""Hungarian matchers of daq_train on hand-made predictions."""

from __future__ import annotations

import pytest
import torch

from daq_train.matcher import (
    MatchCosts,
    cost_matrix,
    foreground_score,
    hungarian,
    match,
    match_frame,
    match_new_instances,
    stack_frames,
)

COSTS = MatchCosts(class_weight=2.0, mask_weight=5.0, dice_weight=5.0, num_points=400)


def _boxes(h: int, w: int, boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
    out = torch.zeros(len(boxes), h, w)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        out[i, y0:y1, x0:x1] = 1
    return out


GT = _boxes(16, 16, [(0, 8, 0, 8), (8, 16, 8, 16), (0, 8, 8, 16)])
LABELS = torch.tensor([0, 1, 0])


def _preds(order: list[int], num_queries: int, num_classes: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Query q predicts GT order[q] perfectly (or nothing for -1) at 1/4 resolution."""
    logits = torch.full((num_queries, num_classes + 1), -10.0)
    masks = torch.full((num_queries, 4, 4), -20.0)
    for q, g in enumerate(order):
        if g < 0:
            logits[q, -1] = 10
            continue
        logits[q, LABELS[g]] = 10
        masks[q] = GT[g, ::4, ::4] * 40 - 20
    return logits, masks


def test_cost_matrix_by_hand_class_term() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0]])
    masks = torch.zeros(1, 4, 4)
    # mask cost: BCE log 2 whatever the target; dice depends on the target, so use class-only
    only_class = MatchCosts(class_weight=1.0, mask_weight=0.0, dice_weight=0.0, num_points=10)
    cost = cost_matrix(logits, masks, torch.tensor([1]), torch.ones(1, 8, 8), only_class)
    assert cost.item() == pytest.approx(-1 / 3)
    only_bce = MatchCosts(class_weight=0.0, mask_weight=1.0, dice_weight=0.0, num_points=10)
    cost = cost_matrix(logits, masks, torch.tensor([1]), torch.ones(1, 8, 8), only_bce)
    assert cost.item() == pytest.approx(0.6931, abs=1e-3)


def test_match_recovers_permutation() -> None:
    torch.manual_seed(0)
    logits, masks = _preds([-1, 2, 0, -1, 1], 5)
    rows, cols = match(logits, masks, LABELS, GT, COSTS)
    pairs = dict(zip(cols.tolist(), rows.tolist()))
    assert pairs == {0: 2, 1: 4, 2: 1}
    assert hungarian(torch.zeros(0, 3))[0].size == 0


def test_match_frame_ignores_invalid_gt_and_fills_aux_targets() -> None:
    torch.manual_seed(1)
    logits, masks = _preds([1, 0, -1, 2], 4)
    valid = torch.tensor([True, True, False])  # GT 2 is absent in this frame
    result = match_frame(logits, masks, LABELS, GT, valid, COSTS, select_threshold=0.5)
    assert result.indices[1].tolist() == [0, 1]  # sorted by GT
    assert result.indices[0].tolist() == [1, 0]
    # query 3 predicts GT 2 confidently: valid by score, aux = its cheapest *valid* GT
    assert result.valid.tolist() == [True, True, False, True]
    assert result.aux_targets[:3].tolist() == [1, 0, -1]
    assert result.aux_targets[3].item() in (0, 1)
    none_valid = match_frame(logits, masks, LABELS, GT, torch.zeros(3, dtype=torch.bool), COSTS, 0.5)
    assert none_valid.indices[0].numel() == 0 and bool((none_valid.aux_targets == -1).all())


def test_match_new_instances_keeps_carried_and_uses_emerging_rows_only() -> None:
    torch.manual_seed(2)
    # rows: 2 tracks (row 0 tracks GT 0, row 1 predicts GT 2 perfectly but is not carried), then
    # 3 emerging rows of which row 4 predicts GT 2 badly (nothing), row 3 predicts GT 1
    logits, masks = _preds([0, 2, 1, -1, -1], 5)
    carried = (torch.tensor([0]), torch.tensor([0]))
    valid = torch.tensor([True, True, True])
    rows, cols = match_new_instances(logits, masks, LABELS, GT, valid, carried, 3, COSTS)
    assert rows[:1].tolist() == [0] and cols[:1].tolist() == [0]
    new_pairs = dict(zip(cols[1:].tolist(), rows[1:].tolist()))
    assert set(new_pairs) == {1, 2}
    assert new_pairs[1] == 2
    assert new_pairs[2] in (3, 4)  # never the track row 1
    # nothing new: carried pairs only (even if the carried GT is now invalid)
    rows, cols = match_new_instances(logits, masks, LABELS, GT, torch.tensor([False, False, False]),
                                     carried, 3, COSTS)
    assert rows.tolist() == [0] and cols.tolist() == [0]


def test_video_matcher_on_stacked_frames() -> None:
    torch.manual_seed(3)
    gt = torch.stack([GT[:2], GT[1:]], dim=1)  # 2 objects x 2 frames
    pred = torch.full((3, 2, 4, 4), -20.0)
    pred[2] = gt[0, :, ::4, ::4] * 40 - 20
    pred[0] = gt[1, :, ::4, ::4] * 40 - 20
    logits = torch.zeros(3, 3)
    rows, cols = match(logits, stack_frames(pred), torch.tensor([0, 1]), stack_frames(gt), COSTS)
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 2, 1: 0}
    assert stack_frames(gt).shape == (2, 32, 16)


def test_foreground_score_excludes_no_object() -> None:
    logits = torch.log(torch.tensor([[0.2, 0.1, 0.7]]))
    assert foreground_score(logits).item() == pytest.approx(0.2)

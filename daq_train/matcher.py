"""Hungarian matching of predictions to ground truth (SPEC §4.2.3, §4.3).

Every matcher uses the same cost for a (prediction, target) pair::

    cost = class_weight * (-p[target class]) + mask_weight * BCE + dice_weight * Dice

with ``p`` the softmax over the ``K + 1`` logits, and BCE / Dice evaluated on one set of
``num_points`` uniformly random points shared by every mask of the image (or of the clip, for the
video matcher, whose ``T`` frames are stacked into one ``(T*H) x W`` image). Assignments are solved
with ``scipy.optimize.linear_sum_assignment``.

* :func:`match` -- Mask2Former's image matcher, also the video matcher (stack frames first);
* :func:`match_frame` -- the DAQ ``FrameMatcher``: segmenter queries of one frame vs the GT valid
  in that frame, plus per-query validity and "auxiliary" targets (used by disappearance simulation);
* :func:`match_new_instances` -- the DAQ ``NewInsHungarianMatcher``: carried-over (track row, GT)
  pairs are kept, GT that are valid and not tracked are matched to the emerging-query rows only;
  :func:`match_into_free_rows` -- the same into any given rows (the referring tracker's free slots).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from daq_train.losses import pairwise_bce_cost, pairwise_dice_cost
from daq_train.points import point_sample, uniform_points

BLOCKED = 1e6  # cost given to forbidden pairs, as the official matchers


@dataclass(frozen=True)
class MatchCosts:
    """Weights of the three cost terms and the number of shared random points."""

    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    num_points: int = 12544

    def __post_init__(self) -> None:
        if self.class_weight == 0 and self.mask_weight == 0 and self.dice_weight == 0:
            raise ValueError("all matching cost weights are 0")
        if self.num_points <= 0:
            raise ValueError(f"num_points must be positive, got {self.num_points}")


@torch.no_grad()
def cost_matrix(logits: Tensor, masks: Tensor, labels: Tensor, target_masks: Tensor,
                costs: MatchCosts) -> Tensor:
    """``(Q, G)`` matching cost on CPU (float32).

    ``logits``: ``(Q, K+1)``; ``masks``: ``(Q, h, w)`` logits; ``labels``: ``(G,)`` in ``0..K-1``;
    ``target_masks``: ``(G, H, W)`` 0/1 covering the same (padded) image as ``masks``.
    """
    q, g = logits.shape[0], labels.shape[0]
    if q == 0 or g == 0:
        return torch.zeros(q, g)
    prob = logits.float().softmax(-1)
    cost_class = -prob[:, labels]
    points = uniform_points(1, costs.num_points, masks.device)
    pred = point_sample(masks[:, None].float(), points.expand(q, -1, -1))[:, 0, :]
    tgt = point_sample(target_masks[:, None].to(masks.device, torch.float32),
                       points.expand(g, -1, -1))[:, 0, :]
    cost = (costs.class_weight * cost_class + costs.mask_weight * pairwise_bce_cost(pred, tgt)
            + costs.dice_weight * pairwise_dice_cost(pred, tgt))
    return torch.nan_to_num(cost.cpu(), nan=BLOCKED, posinf=BLOCKED, neginf=-BLOCKED)


def hungarian(cost: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment of rows to columns, sorted by row (scipy's order)."""
    if cost.shape[0] == 0 or cost.shape[1] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rows, cols = linear_sum_assignment(cost.numpy())
    return rows.astype(np.int64), cols.astype(np.int64)


def _as_indices(rows: np.ndarray, cols: np.ndarray, device: torch.device | str | None = None
                ) -> tuple[Tensor, Tensor]:
    return (torch.as_tensor(rows, dtype=torch.int64, device=device),
            torch.as_tensor(cols, dtype=torch.int64, device=device))


def match(logits: Tensor, masks: Tensor, labels: Tensor, target_masks: Tensor,
          costs: MatchCosts) -> tuple[Tensor, Tensor]:
    """Image (or stacked-video) Hungarian matching -> ``(pred_indices, target_indices)``."""
    rows, cols = hungarian(cost_matrix(logits, masks, labels, target_masks, costs))
    return _as_indices(rows, cols, logits.device)


def stack_frames(masks: Tensor) -> Tensor:
    """``(N, T, H, W)`` -> ``(N, T*H, W)``: the frames of a clip as one tall image."""
    n, t, h, w = masks.shape
    return masks.reshape(n, t * h, w)


@dataclass
class FrameMatch:
    """Result of :func:`match_frame` for one frame.

    ``indices``: (query, GT) pairs for every GT valid in the frame, sorted by GT index.
    ``valid``: ``(Q,)`` query matched or foreground score above the threshold.
    ``aux_targets``: ``(Q,)`` for valid queries their matched GT, else their lowest-cost valid GT;
    ``-1`` for queries that are not valid or when no GT is valid.
    """

    indices: tuple[Tensor, Tensor]
    valid: Tensor
    aux_targets: Tensor


def foreground_score(logits: Tensor) -> Tensor:
    """Max over the K real classes of the softmax over all ``K + 1`` logits."""
    return logits.float().softmax(-1)[..., :-1].max(-1).values


@torch.no_grad()
def match_frame(logits: Tensor, masks: Tensor, labels: Tensor, target_masks: Tensor,
                target_valid: Tensor, costs: MatchCosts, select_threshold: float) -> FrameMatch:
    """The DAQ frame matcher (segmenter queries of one frame vs that frame's valid GT)."""
    device = logits.device
    q = logits.shape[0]
    target_valid = target_valid.to(torch.bool).cpu()
    cost = cost_matrix(logits, masks, labels, target_masks, costs)
    cost[:, ~target_valid] = BLOCKED
    rows, cols = hungarian(cost)
    keep = target_valid.numpy()[cols] if cols.size else np.zeros(0, dtype=bool)
    rows, cols = rows[keep], cols[keep]
    order = np.argsort(cols, kind="stable")
    rows, cols = rows[order], cols[order]

    valid = foreground_score(logits).cpu() > select_threshold
    valid[torch.as_tensor(rows, dtype=torch.int64)] = True
    aux = torch.full((q,), -1, dtype=torch.int64)
    if bool(target_valid.any()):
        aux = cost.argmin(dim=1)
    aux[torch.as_tensor(rows, dtype=torch.int64)] = torch.as_tensor(cols, dtype=torch.int64)
    aux[~valid] = -1
    return FrameMatch(_as_indices(rows, cols, device), valid.to(device), aux.to(device))


@torch.no_grad()
def match_new_instances(logits: Tensor, masks: Tensor, labels: Tensor, target_masks: Tensor,
                        target_valid: Tensor, carried: tuple[Tensor, Tensor], num_new: int,
                        costs: MatchCosts) -> tuple[Tensor, Tensor]:
    """The DAQ new-instance matcher for frames after the first.

    ``logits``/``masks`` are the tracker's ``n + num_new`` rows (``n`` track rows first, then the
    emerging-query rows). ``carried`` are the (track row, GT) pairs propagated from the previous
    frame; they are returned unchanged, followed by the pairs of "new" GT (valid now and not in
    ``carried``) Hungarian-matched to emerging rows only (sorted by GT index).
    """
    rows_total = logits.shape[0]
    if rows_total < num_new:
        raise ValueError(f"{rows_total} tracker rows but {num_new} emerging queries")
    free_rows = torch.arange(rows_total - num_new, rows_total)
    return match_into_free_rows(logits, masks, labels, target_masks, target_valid, carried,
                                free_rows, costs)


@torch.no_grad()
def match_into_free_rows(logits: Tensor, masks: Tensor, labels: Tensor, target_masks: Tensor,
                         target_valid: Tensor, carried: tuple[Tensor, Tensor], free_rows: Tensor,
                         costs: MatchCosts) -> tuple[Tensor, Tensor]:
    """``carried`` (row, GT) pairs unchanged, then the "new" GT (valid now, not in ``carried``)
    Hungarian-matched to the rows ``free_rows`` only (pairs sorted by GT index). The DAQ matcher
    passes the emerging rows; the referring tracker the slots that hold no GT yet."""
    device = logits.device
    old_rows, old_cols = carried[0].cpu().to(torch.int64), carried[1].cpu().to(torch.int64)
    new = target_valid.to(torch.bool).cpu().clone()
    new[old_cols] = False
    free_rows = free_rows.cpu().to(torch.int64)
    if not bool(new.any()) or free_rows.numel() == 0:
        return old_rows.to(device), old_cols.to(device)
    new_cols = torch.nonzero(new).squeeze(1)
    pick = free_rows.to(logits.device)
    cost = cost_matrix(logits[pick], masks[pick], labels[new_cols],
                       target_masks[new_cols.to(target_masks.device)], costs)
    rows, cols = hungarian(cost)
    order = np.argsort(cols, kind="stable")
    rows = free_rows[torch.as_tensor(rows[order], dtype=torch.int64)]
    cols = new_cols[torch.as_tensor(cols[order], dtype=torch.int64)]
    return (torch.cat([old_rows, rows]).to(device), torch.cat([old_cols, cols]).to(device))

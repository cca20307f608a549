"""The fixed-clip overfitting loop shared by the tracker-stage tests (DAQ and referring modes)."""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn

from daq_train.config import TrainConfig
from daq_train.run import make_sampler
from daq_train.stage_tracker import TrackerLoss


def overfit_tracker_clip(model: nn.Module, setup: dict, cfg: TrainConfig,
                         check: Callable[[Mapping[str, torch.Tensor]], bool],
                         clip_grad_norm: float | None = None, steps: int = 10) -> list[float]:
    """Train ``model``'s tracker ``steps`` times on one clip (sampler and loss state restored and
    the same seed each step); ``check`` must hold for every step's losses. Returns the totals."""
    sampler = make_sampler(setup["datasets"], cfg, setup["model_cfg"], "tracker")
    loss_fn = TrackerLoss(model, sampler, cfg, prefetch=False)  # the helper rewinds the sampler itself
    state, own = sampler.state_dict(), loss_fn.state_dict()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    values = []
    for _ in range(steps):
        sampler.load_state_dict(state)
        loss_fn.load_state_dict(own)
        torch.manual_seed(3)
        losses = loss_fn(5)
        assert check(losses), sorted(losses)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        if clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        opt.step()
        values.append(total.item())
    return values

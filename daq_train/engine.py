"""The training loop shared by the three stages: optimisation step, progress, checkpoints, resume.

A stage supplies ``compute_losses(iteration) -> dict[str, Tensor]`` (already weighted); the
:class:`Trainer` sums them, back-propagates (with a gradient scaler under CUDA AMP), clips the
global gradient norm, steps AdamW with the iteration's learning rate, logs progress (losses, lr,
gradient norm, s/iter, ETA) every ``log_period`` iterations to the logger and to
``metrics.jsonl``, and writes a resumable checkpoint every ``checkpoint_period`` iterations and at
the end.

Resumable checkpoints (``<stage dir>/last.pt``) hold the trainable model's state dict, the
optimiser, the AMP scaler, the iteration, every RNG state (torch CPU/CUDA, the data sampler's
Python RNG) and the extra state the stage registers (e.g. the sampler, curriculum). They contain
only tensors and plain Python values and load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import torch
from torch import Tensor, nn

from daq_train.optim import OptimConfig, build_optimizer, clip_gradients, set_lr

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"
STATE_FORMAT = "daq-label-train-state/v1"


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class StepResult:
    iteration: int
    loss: float
    losses: dict[str, float]
    lr: float
    grad_norm: float
    seconds: float


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Trainer:
    """Optimises ``model``'s trainable parameters with the losses of ``compute_losses``."""

    def __init__(self, model: nn.Module, optim_cfg: OptimConfig, max_iter: int, stage_dir: Path,
                 compute_losses: Callable[[int], Mapping[str, Tensor]], *, amp: bool = False,
                 log_period: int = 20, checkpoint_period: int = 1000,
                 extra_state: Mapping[str, Stateful] | None = None,
                 config_record: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.cfg = optim_cfg
        self.max_iter = max_iter
        self.stage_dir = Path(stage_dir)
        self.compute_losses = compute_losses
        self.device = next(model.parameters()).device
        self.amp = amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.optimizer = build_optimizer(model, optim_cfg)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.log_period = max(1, log_period)
        self.checkpoint_period = max(1, checkpoint_period)
        self.extra_state = dict(extra_state or {})
        self.config_record = dict(config_record or {})
        self.iteration = 0
        self.history: list[StepResult] = []

    # ------------------------------------------------------------------------------------------
    # checkpoints

    @property
    def checkpoint_path(self) -> Path:
        return self.stage_dir / CHECKPOINT_NAME

    def state_dict(self) -> dict[str, Any]:
        state = {
            "format": STATE_FORMAT,
            "iteration": self.iteration,
            "max_iter": self.max_iter,
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "extra": {name: obj.state_dict() for name, obj in self.extra_state.items()},
            "config": self.config_record,
        }
        return state

    def save(self) -> Path:
        atomic_torch_save(self.state_dict(), self.checkpoint_path)
        logger.info("saved training state at iteration %d to %s", self.iteration, self.checkpoint_path)
        return self.checkpoint_path

    def load(self, path: Path | None = None) -> None:
        path = Path(path) if path is not None else self.checkpoint_path
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no training state to resume from") from None
        except Exception as exc:
            raise ValueError(f"{path}: not a readable training state: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"{path}: not a daq-label training state ({STATE_FORMAT})")
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        for name, obj in self.extra_state.items():
            if name not in state["extra"]:
                raise ValueError(f"{path}: training state has no {name!r} entry")
            obj.load_state_dict(state["extra"][name])
        self.iteration = int(state["iteration"])
        if state.get("max_iter") != self.max_iter:
            logger.warning("resuming a run planned for %s iterations with max_iter %d",
                           state.get("max_iter"), self.max_iter)
        logger.info("resumed from %s at iteration %d", path, self.iteration)

    # ------------------------------------------------------------------------------------------
    # optimisation

    def step(self) -> StepResult:
        start = time.perf_counter()
        it = self.iteration
        lr = set_lr(self.optimizer, it, self.max_iter, self.cfg)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            losses = self.compute_losses(it)
        total = sum(losses.values())
        if not isinstance(total, Tensor) or not torch.isfinite(total):
            raise TrainingDiverged(f"iteration {it}: loss is {float(total)} "
                                   f"({ {k: float(v) for k, v in losses.items()} })")
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = clip_gradients(self.params, self.cfg.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.iteration += 1
        result = StepResult(it, float(total.detach()), {k: float(v.detach()) for k, v in losses.items()}, lr,
                            grad_norm, time.perf_counter() - start)
        self.history.append(result)
        return result

    def train(self, until: int | None = None) -> list[StepResult]:
        """Run until iteration ``until`` (default ``max_iter``), checkpointing on the way and at
        the end. Returns the steps run in this call."""
        until = self.max_iter if until is None else min(until, self.max_iter)
        done: list[StepResult] = []
        window: list[StepResult] = []
        metrics_path = self.stage_dir / "metrics.jsonl"
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        while self.iteration < until:
            result = self.step()
            done.append(result)
            window.append(result)
            if self.iteration % self.log_period == 0 or self.iteration == until:
                self._log(window, metrics_path)
                window = []
            if self.iteration % self.checkpoint_period == 0 and self.iteration < until:
                self.save()
        if done:
            self.save()
        return done

    def _log(self, window: list[StepResult], metrics_path: Path) -> None:
        n = len(window)
        mean_loss = sum(r.loss for r in window) / n
        per_iter = sum(r.seconds for r in window) / n
        eta = per_iter * (self.max_iter - self.iteration)
        keys = window[-1].losses.keys()
        means = {k: sum(r.losses.get(k, 0.0) for r in window) / n for k in keys}
        main = {k: v for k, v in means.items() if not k[-1].isdigit()}
        logger.info("%s it %d/%d  loss %.4f  %s  lr %.2e  |g| %.3g  %.3f s/it  eta %s",
                    self.stage_dir.name, self.iteration, self.max_iter, mean_loss,
                    " ".join(f"{k} {v:.3f}" for k, v in main.items()), window[-1].lr,
                    window[-1].grad_norm, per_iter, _duration(eta))
        record = {"iteration": self.iteration, "loss": mean_loss, "lr": window[-1].lr,
                  "grad_norm": window[-1].grad_norm, "s_per_iter": per_iter, "losses": means}
        with metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"

"""Running training stages into a run directory.

Layout of ``RUN_DIR``::

    train_config.yaml            the TrainConfig of the run (written on the first stage)
    model_config.yaml            the DAQConfig (data classes applied)
    segmenter/last.pt            resumable training state (model, optimiser, RNG, sampler ...)
    segmenter/metrics.jsonl      one line per log period
    segmenter/model.pt           exported weights (our checkpoint format, FrozenBN restored)
    tracker/...  refiner/...     the same for stages 2 and 3

A stage starts from ``init`` if given, else from the previous stage's ``model.pt`` in the same run
directory (stage 1 starts from scratch). ``resume`` continues from ``<stage>/last.pt``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import yaml
from torch import Tensor

from daq_model.config import DAQConfig
from daq_model.dvis_daq import DVISDAQ
from daq_train.config import STAGES, TrainConfig
from daq_train.data import DataSource, VideoDataset
from daq_train.engine import Stateful, Trainer
from daq_train.model_setup import build_stage_model, count_weights_mb, export_model, resolve_model_config
from daq_train.sampler import ClipSampler, Curriculum

logger = logging.getLogger(__name__)

PREVIOUS_STAGE = {"segmenter": None, "tracker": "segmenter", "refiner": "tracker"}
EXPORT_NAME = "model.pt"


@dataclass
class StageResult:
    stage: str
    iteration: int
    max_iter: int
    checkpoint: Path
    last_loss: float | None
    seconds_per_iter: float | None


def exported_path(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / stage / EXPORT_NAME


def load_datasets(sources: Sequence[DataSource]) -> list[VideoDataset]:
    if not sources:
        raise ValueError("no training data given")
    return [VideoDataset(s) for s in sources]


def make_model_config(train_cfg: TrainConfig, datasets: Sequence[VideoDataset]) -> DAQConfig:
    cfg = resolve_model_config(train_cfg.model, datasets[0].num_classes, datasets[0].class_names)
    return with_tracker_mode(cfg, train_cfg)


def with_tracker_mode(cfg: DAQConfig, train_cfg: TrainConfig) -> DAQConfig:
    """``tracker.daq = false`` (the ablation baseline) -> the model's ``tracker.mode = referring``,
    so the exported checkpoints carry the mode their tracker was trained in."""
    wanted = "daq" if train_cfg.tracker.daq else "referring"
    if cfg.tracker.mode == wanted:
        return cfg
    if wanted == "daq":
        raise ValueError(f"model config {cfg.name!r} has tracker.mode 'referring' but the train "
                         "config has tracker.daq=true: set tracker.daq=false (--referring)")
    return cfg.with_overrides({"tracker.mode": wanted})


def check_init_mode(init: Path, model_cfg: DAQConfig) -> None:
    """A tracker checkpoint trained in one tracker mode must not seed a refiner of the other."""
    from daq_model.checkpoint import read_checkpoint

    saved = read_checkpoint(str(init)).daq_config()
    if saved is not None and saved.tracker.mode != model_cfg.tracker.mode:
        raise ValueError(f"{init}: its tracker was trained with tracker.mode={saved.tracker.mode!r}"
                         f" but this run uses {model_cfg.tracker.mode!r} (tracker.daq="
                         f"{model_cfg.tracker.mode == 'daq'}); use the matching train config")


def make_sampler(datasets: Sequence[VideoDataset], train_cfg: TrainConfig, model_cfg: DAQConfig,
                 stage: str) -> ClipSampler:
    seed = train_cfg.seed * 1000 + STAGES.index(stage)
    return ClipSampler(datasets, train_cfg.augment, model_cfg.input.pixel_mean,
                       model_cfg.input.pixel_std, Curriculum.parse(train_cfg.curriculum), seed=seed)


def stage_loss_fn(stage: str, model: DVISDAQ, sampler: ClipSampler, train_cfg: TrainConfig
                  ) -> tuple[Callable[[int], dict[str, Tensor]], dict[str, Stateful]]:
    """The stage's loss function and any extra resumable state it keeps."""
    if stage == "segmenter":
        from daq_train.stage_segmenter import segmenter_loss_fn

        return segmenter_loss_fn(model, sampler, train_cfg), {}
    if stage == "tracker":
        from daq_train.stage_tracker import tracker_loss_fn

        return tracker_loss_fn(model, sampler, train_cfg)
    if stage == "refiner":
        from daq_train.stage_refiner import refiner_loss_fn

        return refiner_loss_fn(model, sampler, train_cfg)
    raise KeyError(f"unknown stage {stage!r}")


def write_run_configs(run_dir: Path, train_cfg: TrainConfig, model_cfg: DAQConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train_config.yaml").write_text(train_cfg.to_yaml())
    (run_dir / "model_config.yaml").write_text(model_cfg.to_yaml())


def prepare_stage(stage: str, train_cfg: TrainConfig, datasets: Sequence[VideoDataset], run_dir: Path,
                  device: torch.device | str, init: Path | None = None, resume: bool = False) -> Trainer:
    """Model, sampler, loss and :class:`Trainer` of one stage (resumed if asked)."""
    run_dir = Path(run_dir)
    model_cfg = make_model_config(train_cfg, datasets)
    state_path = run_dir / stage / "last.pt"
    resuming = resume and state_path.exists()
    if resume and not resuming:
        logger.warning("--resume: %s does not exist, starting stage %s from the beginning", state_path, stage)
    if init is None and PREVIOUS_STAGE[stage] is not None and not resuming:
        candidate = exported_path(run_dir, PREVIOUS_STAGE[stage])
        if not candidate.exists():
            raise FileNotFoundError(f"stage {stage} needs the {PREVIOUS_STAGE[stage]} stage's weights: "
                                    f"{candidate} does not exist (train that stage first or pass --init)")
        init = candidate
    if stage == "refiner" and init is not None:
        check_init_mode(Path(init), model_cfg)
    stage_cfg = train_cfg.stage(stage)
    model = build_stage_model(model_cfg, stage, init, device, train_cfg.thaw_backbone_norm,
                              train_cfg.zero_init_residual, resuming=resuming)
    sampler = make_sampler(datasets, train_cfg, model_cfg, stage)
    compute, extra = stage_loss_fn(stage, model, sampler, train_cfg)
    write_run_configs(run_dir, train_cfg, model_cfg)
    trainer = Trainer(model, stage_cfg.optim, stage_cfg.iters, run_dir / stage, compute,
                      amp=train_cfg.amp, log_period=train_cfg.log_period,
                      checkpoint_period=train_cfg.checkpoint_period,
                      extra_state={"sampler": sampler, **extra},
                      config_record={"train_config": train_cfg.to_dict(), "stage": stage,
                                     "init": str(init) if init else ""})
    if resuming:
        trainer.load()
    logger.info("stage %s: %.1f MB of weights, %d iterations, data %s", stage,
                count_weights_mb(model), stage_cfg.iters,
                ", ".join(str(d.source.annotation_file) for d in datasets))
    return trainer


def run_stage(stage: str, train_cfg: TrainConfig, sources: Sequence[DataSource], run_dir: Path,
              device: torch.device | str = "cpu", init: Path | None = None, resume: bool = False
              ) -> StageResult:
    """Train one stage to its configured iteration count and export its weights."""
    datasets = load_datasets(sources)
    trainer = prepare_stage(stage, train_cfg, datasets, Path(run_dir), device, init, resume)
    steps = trainer.train()
    path = exported_path(Path(run_dir), stage)
    model: DVISDAQ = trainer.model  # type: ignore[assignment]
    export_model(model, path, metadata={
        "stage": stage, "iteration": trainer.iteration, "max_iter": trainer.max_iter,
        "train_config": train_cfg.name, "data": [str(s.annotation_file) for s in sources]})
    speed = sum(s.seconds for s in steps) / len(steps) if steps else None
    return StageResult(stage, trainer.iteration, trainer.max_iter, path,
                       steps[-1].loss if steps else None, speed)


def stages_to_run(stage: str, model_cfg_offline: bool) -> list[str]:
    if stage == "all":
        return ["segmenter", "tracker"] + (["refiner"] if model_cfg_offline else [])
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}, all")
    return [stage]


def read_train_config(run_dir: Path) -> TrainConfig | None:
    path = Path(run_dir) / "train_config.yaml"
    if not path.exists():
        return None
    return TrainConfig.from_dict(yaml.safe_load(path.read_text())["train_config"])

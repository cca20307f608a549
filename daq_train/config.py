"""Training configuration: frozen dataclasses with named presets and a yaml form.

:class:`TrainConfig` describes a whole run (data augmentation, loss points, the three stages with
their optimisers and schedules, checkpointing). Presets:

* ``official`` -- the official recipe's numbers (R50-size inputs, 12544 points, 160k tracker
  iterations with the 2-frame phase until 10k, 15-frame refiner clips), for real datasets on GPUs;
* ``small_cpu`` -- the shipped small model: 128-pixel inputs, fewer points (the mask output is
  32x32), warm-up + poly decay, gradient clipping; 7000 / 14000 / 4000 iterations of the three
  stages, about two hours on two CPU cores (the shipped model's recipe, with the tracker and
  refiner on the ``train_appear_disappear`` synthetic preset: see its model card);
* ``tiny_test`` -- a few iterations on 64-pixel inputs (tests).

Derive variants with :meth:`TrainConfig.with_overrides` (``{"tracker.iters": 100}``) or write a
yaml with :meth:`TrainConfig.to_yaml` and pass it to ``daq-label train --config``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from daq_model.config_tree import from_plain, to_plain, with_dotted_overrides
from daq_train.augment import AugmentConfig
from daq_train.optim import OptimConfig

STAGES = ("segmenter", "tracker", "refiner")


@dataclass(frozen=True)
class SegmenterStageConfig:
    """Stage 1: the per-frame segmenter (backbone + pixel decoder + decoder), Mask2Former loss.

    ``contrastive_weight`` (0 = off, the default): each step draws ``batch_size // 2`` pairs of
    frames of one video (at most ``contrastive_frame_range`` apart) instead of single frames, and
    adds an InfoNCE loss on the query embeddings the tracker associates by (``pred_embds``, cosine
    / ``contrastive_temperature``): an object's matched query in one frame of the pair must be
    most similar to its matched query in the other, against the other frame's other queries.
    Not the official recipe (which fine-tunes a separate re-id head with CTVIS's loss), no new
    weights: it makes the embeddings that MinVIS linking and the tracker's anchor matching
    compare tell objects apart.
    """

    iters: int = 32000
    batch_size: int = 8  # frames per step
    contrastive_weight: float = 0.0
    contrastive_frame_range: int = 5
    contrastive_temperature: float = 0.1
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(base_lr=5e-5, steps=(12000, 24000)))


@dataclass(frozen=True)
class TrackerStageConfig:
    """Stage 2: the DAQ tracker on frozen segmenter outputs (SPEC §4.2).

    ``short_clip_frames`` frames per step until ``full_clip_from`` (the official 2-frame phase,
    "stage 2" with the emergence half-drop), then all ``num_frames`` ("stage 3": propagation by
    ``training_select_threshold`` and the disappearance simulation). ``daq`` False trains the plain
    referring tracker of the ablation (model ``tracker.mode = referring``: Q fixed slots with
    Hungarian-matched segmenter anchors, no emerging anchor queries, no slot branch, no EDS;
    ``daq_train.stage_referring``); ``emergence_simulation`` / ``disappearance_simulation``
    switch the two halves of EDS (DAQ only).
    ``full_clip_emergence_drop`` (not in the official recipe, 0 there): in the full-clip phase,
    each propagated track that has a GT is also dropped with this probability, so its object must
    re-emerge through the emerging queries in the next frame; without it the emerging queries only
    see positives where the data itself has an object entering the clip.
    ``keep_disappeared_tracks`` (not official, False there): in the full-clip phase a track whose
    object is absent in a frame is propagated whatever its score (as inference keeps invalid
    tracks up to ``kick_out_frame_num`` frames), so an object that comes back within the clip is
    supervised on its old track instead of on an emerging query.
    ``simulated_disappearance_main_negative`` reproduces the official aliasing quirk (the simulated
    disappeared object is also a negative of the main branch in frames with a real disappearance).
    ``emerging_positive_weight`` (not official, 1 there): in frames after the first, the class
    loss of an object picked up by an emerging anchor query weighs this many times a tracked
    object's (the emerging queries otherwise learn mostly "no object").
    ``emerging_duplicate_weight`` (not official, 1 there): in frames after the first, an emerging
    row that is "no object" but whose mask (logit > 0) has IoU >= ``emerging_duplicate_iou`` with
    an object that another row of the frame is supervised on (a duplicate, carried or newly
    picked up) weighs this many times in the class loss (emerging queries learn where not to fire).
    """

    iters: int = 160000
    num_frames: int = 5
    frame_range: int = 2
    short_clip_frames: int = 2
    full_clip_from: int = 10000
    daq: bool = True
    emergence_simulation: bool = True
    disappearance_simulation: bool = True
    min_tracks_for_disappearance: int = 3
    simulated_disappearance_main_negative: bool = False
    full_clip_emergence_drop: float = 0.0
    keep_disappeared_tracks: bool = False
    emerging_positive_weight: float = 1.0
    emerging_duplicate_weight: float = 1.0
    emerging_duplicate_iou: float = 0.5
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=(112000,)))

    def __post_init__(self) -> None:
        if not 0.0 <= self.full_clip_emergence_drop < 1.0:
            raise ValueError("tracker.full_clip_emergence_drop must be in [0, 1), got "
                             f"{self.full_clip_emergence_drop}")
        if not self.emerging_positive_weight > 0:
            raise ValueError("tracker.emerging_positive_weight must be > 0, got "
                             f"{self.emerging_positive_weight}")
        if not self.emerging_duplicate_weight > 0:
            raise ValueError("tracker.emerging_duplicate_weight must be > 0, got "
                             f"{self.emerging_duplicate_weight}")
        if not 0.0 < self.emerging_duplicate_iou <= 1.0:
            raise ValueError("tracker.emerging_duplicate_iou must be in (0, 1], got "
                             f"{self.emerging_duplicate_iou}")


@dataclass(frozen=True)
class RefinerStageConfig:
    """Stage 3: the offline refiner on tracker outputs (SPEC §4.3). Matching on the online
    candidates until ``self_matching_from`` x ``iters``, then each refiner layer on its own."""

    iters: int = 160000
    num_frames: int = 15
    frame_range: int = 7
    reverse_prob: float = 0.5
    self_matching_from: float = 0.5
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=(112000,)))


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run. ``model``: a :mod:`daq_model.config` preset or yaml; its class count
    is set from the data. ``num_points``: points per mask and frame for the matching costs and the
    mask losses (``None``: the model config's ``train_num_points``)."""

    name: str = "official"
    model: str = "ytvis19_online_r50"
    seed: int = 42
    num_points: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    segmenter: SegmenterStageConfig = field(default_factory=SegmenterStageConfig)
    tracker: TrackerStageConfig = field(default_factory=TrackerStageConfig)
    refiner: RefinerStageConfig = field(default_factory=RefinerStageConfig)
    thaw_backbone_norm: bool = False
    zero_init_residual: bool = False
    amp: bool = True
    curriculum: str = ""
    log_period: int = 20
    checkpoint_period: int = 5000

    def stage(self, name: str) -> Any:
        if name not in STAGES:
            raise KeyError(f"unknown stage {name!r}; known: {', '.join(STAGES)}")
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        return from_plain(cls, data)

    def to_yaml(self) -> str:
        return yaml.safe_dump({"train_config": self.to_dict()}, sort_keys=False)

    def with_overrides(self, overrides: Mapping[str, Any]) -> "TrainConfig":
        """Copy with dotted-path overrides, e.g. ``{"segmenter.optim.base_lr": 2e-4}``."""
        return with_dotted_overrides(self, overrides, "train config")


# ----------------------------------------------------------------------------------------------
# presets

def _small_cpu() -> TrainConfig:
    return TrainConfig(
        name="small_cpu",
        model="daq_small_128",
        seed=42,
        num_points=1024,
        augment=AugmentConfig(short_edge_choices=(112, 128, 144), max_size=256, crop_prob=0.5,
                              crop_resize_choices=(128, 160, 192), crop_resize_max=384,
                              crop_size_range=(96, 160), flip_prob=0.5),
        segmenter=SegmenterStageConfig(
            iters=7000, batch_size=4,
            optim=OptimConfig(base_lr=2e-4, backbone_multiplier=1.0, warmup_iters=300,
                              warmup_factor=0.001, schedule="poly", clip_grad_norm=1.0)),
        tracker=TrackerStageConfig(
            iters=14000, full_clip_from=1000,
            optim=OptimConfig(base_lr=1e-4, warmup_iters=100, warmup_factor=0.01, schedule="poly",
                              clip_grad_norm=1.0)),
        refiner=RefinerStageConfig(
            iters=4000, num_frames=10, frame_range=5,
            optim=OptimConfig(base_lr=1e-4, warmup_iters=100, warmup_factor=0.01, schedule="poly",
                              clip_grad_norm=1.0)),
        thaw_backbone_norm=True,
        zero_init_residual=True,
        amp=True,
        log_period=50,
        checkpoint_period=500,
    )


def _tiny_test() -> TrainConfig:
    quick = OptimConfig(base_lr=5e-4, backbone_multiplier=1.0, warmup_iters=0, schedule="constant",
                        clip_grad_norm=1.0)
    return TrainConfig(
        name="tiny_test",
        model="daq_small",
        seed=0,
        num_points=256,
        augment=AugmentConfig(short_edge_choices=(64,), max_size=128, crop_prob=0.0, flip_prob=0.5),
        segmenter=SegmenterStageConfig(iters=4, batch_size=2, optim=quick),
        tracker=TrackerStageConfig(iters=4, num_frames=3, frame_range=1, full_clip_from=2, optim=quick),
        refiner=RefinerStageConfig(iters=4, num_frames=4, frame_range=2, optim=quick),
        thaw_backbone_norm=True,
        zero_init_residual=False,
        amp=False,
        log_period=1,
        checkpoint_period=2,
    )


_PRESETS = {"official": TrainConfig, "small_cpu": _small_cpu, "tiny_test": _tiny_test}
TRAIN_PRESETS: tuple[str, ...] = tuple(_PRESETS)


def get_train_preset(name: str) -> TrainConfig:
    try:
        return _PRESETS[name]()
    except KeyError:
        raise KeyError(f"unknown train preset {name!r}; known: {', '.join(TRAIN_PRESETS)}") from None


def load_train_config(spec: str | Path) -> TrainConfig:
    """A preset name or a yaml written by :meth:`TrainConfig.to_yaml` (a ``train_config`` mapping,
    possibly partial: missing keys take the ``base`` preset's values, ``official`` by default)."""
    text = str(spec)
    if text in _PRESETS:
        return get_train_preset(text)
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"train config {text!r} is neither a preset "
                                f"({', '.join(TRAIN_PRESETS)}) nor an existing file")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not a valid yaml file: {exc}") from exc
    if not isinstance(tree, dict) or not isinstance(tree.get("train_config"), dict):
        raise ValueError(f"{path}: expected a 'train_config' mapping")
    body = dict(tree["train_config"])
    base = get_train_preset(str(body.pop("base", "official")))
    return base.with_overrides(_flatten(body))


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out

"""Random training clips and frame batches from one or more datasets, with a data curriculum.

:class:`ClipSampler` draws, for every request, a dataset (by the curriculum's weights at the
current iteration), a video (uniformly), the clip's frames (:func:`~daq_train.data.sample_clip_indices`),
one augmentation for the whole clip, and builds the padded, normalised images and the targets.
All randomness comes from one ``random.Random`` whose state is part of the training checkpoint,
so a resumed run draws the same data as an uninterrupted one.

Curriculum (easy -> hard): datasets carry a ``level``; :class:`Curriculum` phases say from which
iteration on which level weights apply, e.g. the synthetic generator's ``easy``/``medium``/``hard``
presets as levels 0/1/2 and phases ``0:1,0,0 2000:1,1,0 4000:0,1,1``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from daq_model.preprocess import padded_size
from daq_train.augment import AugmentConfig, augment_clip
from daq_train.data import ClipTargets, VideoDataset, build_targets, pad_images, sample_clip_indices

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurriculumPhase:
    start_iter: int
    level_weights: tuple[float, ...]  # weight of level 0, 1, ...


@dataclass(frozen=True)
class Curriculum:
    """Phases sorted by ``start_iter``; the first must start at 0. No phases: all levels equal."""

    phases: tuple[CurriculumPhase, ...] = ()

    def __post_init__(self) -> None:
        starts = [p.start_iter for p in self.phases]
        if starts and (starts[0] != 0 or starts != sorted(starts)):
            raise ValueError(f"curriculum phases must start at 0 and be increasing, got {starts}")
        for p in self.phases:
            if any(w < 0 for w in p.level_weights) or sum(p.level_weights) <= 0:
                raise ValueError(f"curriculum phase at {p.start_iter}: weights {p.level_weights} "
                                 "must be >= 0 with a positive sum")

    @classmethod
    def parse(cls, text: str) -> "Curriculum":
        """``"0:1,0 2000:1,1 4000:0,1"`` -> phases (iteration: weights of levels 0, 1, ...)."""
        phases = []
        for part in text.replace(";", " ").split():
            start, _, weights = part.partition(":")
            try:
                phases.append(CurriculumPhase(int(start), tuple(float(w) for w in weights.split(","))))
            except ValueError:
                raise ValueError(f"bad curriculum phase {part!r}; expected ITER:W0,W1,...") from None
        return cls(tuple(phases))

    def phase_index(self, iteration: int) -> int:
        index = 0
        for i, p in enumerate(self.phases):
            if p.start_iter <= iteration:
                index = i
        return index

    def level_weight(self, level: int, iteration: int) -> float:
        if not self.phases:
            return 1.0
        weights = self.phases[self.phase_index(iteration)].level_weights
        return weights[level] if level < len(weights) else 0.0

    def describe(self) -> str:
        return " ".join(f"{p.start_iter}:{','.join(f'{w:g}' for w in p.level_weights)}"
                        for p in self.phases) or "none"


@dataclass
class Clip:
    """One training clip: ``images (T, 3, Hp, Wp)`` normalised + padded, ``image_size`` (h, w)
    before padding, targets, and where it came from."""

    images: Tensor
    image_size: tuple[int, int]
    targets: ClipTargets
    source: str
    video_id: int
    frame_indices: list[int]

    @property
    def num_frames(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class ClipSettings:
    """How clips are cut: frames per clip, sampling range, reversal probability, size divisor."""

    num_frames: int = 5
    frame_range: int = 2
    reverse_prob: float = 0.0
    size_divisibility: int = 32


class ClipSampler:
    """Draws augmented clips from the datasets, following the curriculum."""

    def __init__(self, datasets: Sequence[VideoDataset], augment: AugmentConfig,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float],
                 curriculum: Curriculum = Curriculum(), seed: int = 0) -> None:
        if not datasets:
            raise ValueError("no datasets to sample from")
        classes = {d.class_names for d in datasets}
        if len(classes) != 1:
            raise ValueError("all training datasets must have the same categories; got "
                             + "; ".join(f"{d.source.annotation_file}: {d.num_classes} classes" for d in datasets))
        self.datasets = list(datasets)
        self.augment = augment
        self.pixel_mean, self.pixel_std = tuple(pixel_mean), tuple(pixel_std)
        self.curriculum = curriculum
        self.rng = random.Random(seed)
        levels = {d.source.level for d in datasets}
        for it in [p.start_iter for p in curriculum.phases] or [0]:
            if sum(curriculum.level_weight(lv, it) for lv in levels) <= 0:
                raise ValueError(f"curriculum gives no weight to any dataset at iteration {it}")

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.datasets[0].class_names

    @property
    def num_classes(self) -> int:
        return self.datasets[0].num_classes

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate(), "curriculum": self.curriculum.describe()}

    def load_state_dict(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        if state.get("curriculum") != self.curriculum.describe():
            logger.warning("resuming with curriculum %s (checkpoint had %s)",
                           self.curriculum.describe(), state.get("curriculum"))

    def _pick_dataset(self, iteration: int) -> VideoDataset:
        weights = [self.curriculum.level_weight(d.source.level, iteration) for d in self.datasets]
        return self.rng.choices(self.datasets, weights=weights, k=1)[0]

    def sample_clip(self, iteration: int, settings: ClipSettings) -> Clip:
        dataset = self._pick_dataset(iteration)
        video = dataset.videos[self.rng.randrange(len(dataset))]
        frames_idx = sample_clip_indices(video.length, settings.num_frames, settings.frame_range,
                                         self.rng, settings.reverse_prob)
        frames = dataset.load_frames(video, frames_idx)
        masks = dataset.load_masks(video, frames_idx)
        frames, masks = augment_clip(frames, masks, self.augment, self.rng)
        h, w = frames.shape[1:3]
        padded = padded_size(h, w, settings.size_divisibility)
        targets = build_targets(masks, [i.label for i in video.instances],
                                [i.track_id for i in video.instances], padded)
        images = pad_images(frames, self.pixel_mean, self.pixel_std, padded)
        return Clip(images, (h, w), targets, dataset.source.name, video.video_id, frames_idx)

    def sample_frames(self, iteration: int, batch_size: int, size_divisibility: int = 32
                      ) -> tuple[Tensor, list[ClipTargets]]:
        """``batch_size`` single frames (each from a random video) padded to one size:
        images ``(B, 3, Hp, Wp)`` and one single-frame :class:`ClipTargets` per image."""
        settings = ClipSettings(num_frames=1, frame_range=0, size_divisibility=size_divisibility)
        return self.sample_clips(iteration, batch_size, settings)

    def sample_clips(self, iteration: int, count: int, settings: ClipSettings
                     ) -> tuple[Tensor, list[ClipTargets]]:
        """``count`` clips (each from a random video) padded to one size, frames flattened into
        the batch clip by clip: images ``(count * T, 3, Hp, Wp)`` and one :class:`ClipTargets`
        per clip, its masks padded to ``(N, T, Hp, Wp)``."""
        clips = [self.sample_clip(iteration, settings) for _ in range(count)]
        hp = max(c.images.shape[-2] for c in clips)
        wp = max(c.images.shape[-1] for c in clips)
        frames = settings.num_frames
        images = torch.zeros((count * frames, 3, hp, wp))
        targets = []
        for i, clip in enumerate(clips):
            h, w = clip.images.shape[-2:]
            images[i * frames:(i + 1) * frames, :, :h, :w] = clip.images
            t = clip.targets
            masks = torch.zeros((t.num_instances, frames, hp, wp))
            masks[..., :h, :w] = t.masks
            targets.append(ClipTargets(masks, t.labels, t.track_ids, t.valid, t.new, t.disappeared))
        return images, targets

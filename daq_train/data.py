"""Training data in the YouTube-VIS format: datasets, clip sampling, per-frame targets, batches.

A dataset is an annotation file (YouTube-VIS 2019/2021, OVIS or our synthetic videos) plus the
folder its ``file_names`` are relative to. Layouts:

* ``ROOT/JPEGImages/<video>/<frame>.jpg`` + ``ROOT/annotations.json`` (synthetic, ``daq-label
  synth``): :meth:`DataSource.from_root`;
* YouTube-VIS ``train/JPEGImages`` + ``train.json``, OVIS ``train/`` + ``annotations_train.json``:
  give both paths (:class:`DataSource` fields).

Per clip (SPEC §4.2.1): every instance present in at least one sampled frame; per frame its mask
(zero where absent), its track id (``-1`` where absent) and flags ``valid`` (mask non-empty),
``new`` (valid now, never before in the clip) and ``disappeared`` (valid in the previous frame, not
now); class labels are contiguous ``0..K-1`` in the order of the categories' ids.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_util
from torch import Tensor

from daq_eval.ytvis_format import read_dataset, segmentation_to_rle

logger = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset file is missing or malformed (the message names the file)."""


@dataclass(frozen=True)
class DataSource:
    """Where one dataset lives. ``level``: its curriculum difficulty (0 = easiest)."""

    annotation_file: Path
    image_dir: Path
    name: str = ""
    level: int = 0

    @classmethod
    def from_root(cls, root: str | Path, level: int = 0) -> "DataSource":
        """``ROOT/annotations.json`` with frames under ``ROOT/JPEGImages``."""
        root = Path(root)
        return cls(root / "annotations.json", root / "JPEGImages", root.name, level)


@dataclass(frozen=True)
class InstanceAnnotation:
    track_id: int
    label: int  # contiguous 0..K-1
    segmentations: tuple[Any, ...]  # per frame: None, RLE dict or polygon list


@dataclass(frozen=True)
class VideoAnnotation:
    video_id: int
    file_names: tuple[str, ...]
    height: int
    width: int
    instances: tuple[InstanceAnnotation, ...]

    @property
    def length(self) -> int:
        return len(self.file_names)


def decode_segmentation(seg: Any, height: int, width: int) -> np.ndarray:
    """One frame's segmentation (None, RLE with string or list counts, or polygons) -> bool mask."""
    rle = segmentation_to_rle(seg, height, width)
    if rle is None:
        return np.zeros((height, width), dtype=bool)
    return mask_util.decode(rle).astype(bool)


class VideoDataset:
    """All videos of one annotation file (no frame data loaded until a clip is asked for).

    The file is read and validated by :func:`daq_eval.ytvis_format.read_dataset` (errors name the
    file and entry); crowd annotations and videos without frames are skipped.
    """

    def __init__(self, source: DataSource) -> None:
        self.source = source
        path = Path(source.annotation_file)
        if not path.exists():
            raise DatasetError(f"{path}: annotation file does not exist")
        dataset = read_dataset(path)
        if dataset.annotations is None:
            raise DatasetError(f"{path}: has no annotations (an unlabelled split cannot be trained on)")
        categories = sorted(dataset.categories, key=lambda c: c.id)
        self.category_ids = tuple(c.id for c in categories)
        self.class_names = tuple(c.name for c in categories)
        to_label = {cid: i for i, cid in enumerate(self.category_ids)}
        skipped = sum(1 for a in dataset.annotations if a.iscrowd)
        videos = []
        for v in dataset.videos:
            instances = tuple(InstanceAnnotation(a.id, to_label[a.category_id], a.segmentations)
                              for a in dataset.annotations_by_video[v.id] if not a.iscrowd)
            if v.length > 0:
                videos.append(VideoAnnotation(v.id, v.file_names, v.height, v.width, instances))
        if not videos:
            raise DatasetError(f"{path}: no videos with frames")
        self.videos: list[VideoAnnotation] = videos
        logger.info("%s: %d videos, %d classes, %d instances (%d crowd skipped)", path,
                    len(videos), len(categories), sum(len(v.instances) for v in videos), skipped)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.videos)

    def load_frames(self, video: VideoAnnotation, frames: Sequence[int]) -> np.ndarray:
        """RGB uint8 ``(T, H, W, 3)`` of the given frame indices."""
        out = []
        for f in frames:
            path = self.source.image_dir / video.file_names[f]
            try:
                with Image.open(path) as img:
                    out.append(np.asarray(img.convert("RGB")))
            except (FileNotFoundError, OSError) as exc:
                raise DatasetError(f"{path}: cannot read frame {f} of video {video.video_id}: "
                                   f"{exc}") from exc
            if out[-1].shape[:2] != (video.height, video.width):
                raise DatasetError(f"{path}: frame is {out[-1].shape[1]}x{out[-1].shape[0]}, the "
                                   f"annotation says {video.width}x{video.height}")
        return np.stack(out)

    def load_masks(self, video: VideoAnnotation, frames: Sequence[int]) -> np.ndarray:
        """Bool ``(N, T, H, W)`` masks of every instance of the video at the given frames."""
        masks = np.zeros((len(video.instances), len(frames), video.height, video.width), dtype=bool)
        for n, inst in enumerate(video.instances):
            for t, f in enumerate(frames):
                masks[n, t] = decode_segmentation(inst.segmentations[f], video.height, video.width)
        return masks


def sample_clip_indices(length: int, num_frames: int, frame_range: int, rng: random.Random,
                        reverse_prob: float = 0.0) -> list[int]:
    """Frame indices of a training clip (SPEC §4.2.1).

    If ``2 * frame_range + 1 == num_frames``: a contiguous window at a uniform start in
    ``0..length-num_frames``; shorter videos give all frames plus random repeats, in order.
    Otherwise: a reference frame plus ``num_frames - 1`` distinct frames within ``frame_range`` of
    it, sorted. With probability ``reverse_prob`` the clip is reversed in time.
    """
    if length <= 0 or num_frames <= 0:
        raise ValueError(f"need a non-empty video and clip, got {length} and {num_frames}")
    if num_frames >= length:
        idx = list(range(length)) + [rng.randrange(length) for _ in range(num_frames - length)]
        idx.sort()
    elif 2 * frame_range + 1 == num_frames:
        start = rng.randint(0, length - num_frames)
        idx = list(range(start, start + num_frames))
    else:
        ref = rng.randrange(length)
        lo, hi = max(0, ref - frame_range), min(length, ref + frame_range + 1)
        others = [i for i in range(lo, hi) if i != ref]
        if len(others) >= num_frames - 1:
            chosen = rng.sample(others, num_frames - 1)
        else:
            chosen = others + [rng.choice(others or [ref]) for _ in range(num_frames - 1 - len(others))]
        idx = sorted(chosen + [ref])
    if reverse_prob > 0 and rng.random() < reverse_prob:
        idx.reverse()
    return idx


@dataclass
class ClipTargets:
    """Ground truth of one clip after augmentation and padding.

    ``masks (N, T, Hp, Wp)`` float 0/1, ``labels (N,)``, ``track_ids (N, T)`` (-1 where absent),
    ``valid``/``new``/``disappeared`` ``(N, T)`` bool.
    """

    masks: Tensor
    labels: Tensor
    track_ids: Tensor
    valid: Tensor
    new: Tensor
    disappeared: Tensor

    @property
    def num_instances(self) -> int:
        return int(self.labels.shape[0])

    def frame(self, t: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(labels, masks (N, Hp, Wp), valid (N,))`` of frame ``t``."""
        return self.labels, self.masks[:, t], self.valid[:, t]

    def to(self, device: torch.device | str) -> "ClipTargets":
        return ClipTargets(*(x.to(device) for x in (self.masks, self.labels, self.track_ids,
                                                     self.valid, self.new, self.disappeared)))


def _frame_flags(valid: Tensor) -> tuple[Tensor, Tensor]:
    """``new`` (valid, never before) and ``disappeared`` (valid before, not now) from ``(N, T)``."""
    n = valid.shape[0]
    seen_before = torch.cumsum(valid.int(), dim=1) - valid.int() > 0
    previous = torch.cat([torch.zeros((n, 1), dtype=torch.bool), valid[:, :-1]], dim=1)
    return valid & ~seen_before, previous & ~valid


def build_targets(masks: np.ndarray, labels: Sequence[int], track_ids: Sequence[int],
                  padded: tuple[int, int]) -> ClipTargets:
    """Targets from augmented bool masks ``(N, T, h, w)``: instances absent from every frame are
    dropped; masks are zero-padded at the bottom/right to ``padded``."""
    present = masks.reshape(masks.shape[0], masks.shape[1], -1).any(-1) if masks.size else \
        np.zeros(masks.shape[:2], dtype=bool)
    keep = present.any(1)
    masks, present = masks[keep], present[keep]
    n, t, h, w = masks.shape
    out = torch.zeros((n, t, padded[0], padded[1]), dtype=torch.float32)
    out[:, :, :h, :w] = torch.from_numpy(masks.astype(np.float32))
    valid = torch.from_numpy(present)
    new, disappeared = _frame_flags(valid)
    ids = torch.as_tensor(np.asarray(track_ids, dtype=np.int64)[keep]).view(n, 1).expand(n, t)
    ids = torch.where(valid, ids, torch.full_like(ids, -1))
    lab = torch.as_tensor(np.asarray(labels, dtype=np.int64)[keep])
    return ClipTargets(out, lab, ids.clone(), valid, new, disappeared)


def select_frames(targets: ClipTargets, frames: Sequence[int]) -> ClipTargets:
    """Targets of a sub-clip: the given frames; instances absent from all of them dropped."""
    idx = torch.as_tensor(list(frames), dtype=torch.int64)
    valid = targets.valid[:, idx]
    keep = valid.any(1)
    valid = valid[keep]
    new, disappeared = _frame_flags(valid)
    return ClipTargets(targets.masks[keep][:, idx], targets.labels[keep],
                       targets.track_ids[keep][:, idx], valid, new, disappeared)


def pad_images(frames: np.ndarray, mean: Sequence[float], std: Sequence[float],
               padded: tuple[int, int]) -> Tensor:
    """RGB uint8 ``(T, h, w, 3)`` -> normalised float ``(T, 3, Hp, Wp)``, zero padding (in
    normalised space) at the bottom/right, as the model's pre-processing."""
    images = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    images = (images - m) / s
    t, _, h, w = images.shape
    out = torch.zeros((t, 3, padded[0], padded[1]), dtype=torch.float32)
    out[:, :, :h, :w] = images
    return out

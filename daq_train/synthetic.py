"""Procedural synthetic videos in YouTube-VIS format, for training and testing DVIS-DAQ on CPU.

Textured shapes of several categories move over real-footage backgrounds, occlude each other
(z-order), enter and leave the frame, disappear (behind a larger object or out of the frame) and
come back. How often objects appear late, leave early and come back is set per object by
``p_late_entry``, ``p_early_exit`` and ``p_reappear``. Everything is a pure function of
``(config, seed, video index)``.

Layout written (the standard YouTube-VIS one)::

    ROOT/JPEGImages/<video name>/<frame:05d>.jpg   (or .png)
    ROOT/annotations.json                           videos / annotations / categories

Every annotation also carries a ``synth`` object (extra key, ignored by YouTube-VIS tools):
``first_frame``, ``last_frame``, ``appears_late``, ``leaves_early``, ``reappearances`` (all
derived from which frames of the annotation are null), ``visible_fraction`` per frame (visible
area / area of the unoccluded shape inside the frame), ``z`` (drawing order, higher is in front),
``role`` (``scripted``, or ``occluder`` for an object added only to hide another one, which has
no events of its own) and ``planned`` (the scripted entry, exit and gaps with their cause,
``border`` or ``occlusion``).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from daq_eval.tracking_metrics import presence_runs
from daq_eval.ytvis_format import Annotation, Category, Dataset, Video, encode_masks, write_dataset
from daq_train.synthetic_backgrounds import (VideoBackgrounds, default_background_dir, flat_clip,
                                             plain_clip)
from daq_train.synthetic_config import (BACKGROUNDS, CLASS_HUE, DEFAULT_CATEGORIES, PRESETS,
                                        SynthConfig, get_preset)
from daq_train.synthetic_motion import ObjectPlan, plan_video, object_pose
from daq_train.synthetic_shapes import SHAPES, draw_object

__all__ = ["BACKGROUNDS", "CLASS_HUE", "DEFAULT_CATEGORIES", "PRESETS", "SynthConfig", "SynthVideo",
           "get_preset", "make_backgrounds", "render_video", "video_annotations",
           "write_synthetic_dataset"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthVideo:
    """One rendered video: frames, the label map drawn, and what each object was meant to do."""

    frames: np.ndarray  # [T, H, W, 3] uint8
    labels: np.ndarray  # [T, H, W] int16: 0 background, k + 1 where object k is visible
    full_areas: np.ndarray  # [K, T] pixels of object k inside the frame before occlusion
    objects: list[ObjectPlan] = field(default_factory=list)


def _background(config: SynthConfig, rng: np.random.Generator,
                backgrounds: VideoBackgrounds | None) -> np.ndarray:
    T, H, W = config.frames, config.height, config.width
    if config.background == "video":
        if backgrounds is None:
            raise ValueError("background='video' needs a VideoBackgrounds source")
        return backgrounds.clip(rng, T, H, W)
    if config.background == "plain":
        return plain_clip(rng, T, H, W)
    return flat_clip(rng, T, H, W)


def make_backgrounds(config: SynthConfig) -> VideoBackgrounds | None:
    if config.background != "video":
        return None
    directory = Path(config.background_dir) if config.background_dir else default_background_dir()
    return VideoBackgrounds.from_dir(directory, short_side=int(1.25 * max(config.height, config.width)))


def render_video(config: SynthConfig, seed: int, index: int,
                 backgrounds: VideoBackgrounds | None = None) -> SynthVideo:
    """Render video ``index`` of the dataset made with ``seed`` (independent of other videos)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    frames = _background(config, rng, backgrounds).copy()
    objects = plan_video(config, rng)
    T, H, W = config.frames, config.height, config.width
    labels = np.zeros((T, H, W), dtype=np.int16)
    full = np.zeros((len(objects), T), dtype=np.int64)
    order = sorted(range(len(objects)), key=lambda k: objects[k].z)
    for t in range(T):
        for k in order:
            pose = object_pose(objects[k], t)
            if pose is None:
                continue
            cx, cy, radius, theta = pose
            obj = objects[k]
            full[k, t] = draw_object(frames[t], labels[t], k + 1, SHAPES[obj.category], obj.texture,
                                     cx, cy, radius, theta)
    return SynthVideo(frames, labels, full, objects)


def video_annotations(video: SynthVideo, config: SynthConfig, video_id: int,
                      first_annotation_id: int) -> list[Annotation]:
    """YouTube-VIS annotations of every object visible in at least one frame."""
    T = config.frames
    cat_id = {name: i + 1 for i, name in enumerate(config.categories)}
    K = len(video.objects)
    masks = np.stack([video.labels == k + 1 for k in range(K)], axis=1) if K else \
        np.zeros((T, 0, config.height, config.width), dtype=bool)  # [T, K, H, W]
    areas = masks.sum(axis=(2, 3))  # [T, K]
    rles = [encode_masks(masks[t]) for t in range(T)]
    boxes = [mask_utils.toBbox(rles[t]).tolist() if K else [] for t in range(T)]
    out = []
    for k, obj in enumerate(video.objects):
        present = areas[:, k] > 0
        if not present.any():
            continue
        runs = presence_runs(present)
        first, last = runs[0][0], runs[-1][1] - 1
        vis = [round(float(areas[t, k] / video.full_areas[k, t]), 4) if present[t] else None
               for t in range(T)]
        meta = {"first_frame": first, "last_frame": last, "appears_late": first > 0,
                "leaves_early": last < T - 1, "reappearances": len(runs) - 1,
                "visible_fraction": vis, "z": obj.z, "role": obj.role,
                "planned": {"enter": obj.start, "exit": obj.end,
                            "gaps": [[g0, g1, cause] for g0, g1, cause in obj.gaps]}}
        out.append(Annotation(
            id=first_annotation_id + len(out), video_id=video_id, category_id=cat_id[obj.category],
            iscrowd=0,
            segmentations=tuple(rles[t][k] if present[t] else None for t in range(T)),
            areas=tuple(int(areas[t, k]) if present[t] else None for t in range(T)),
            bboxes=tuple(tuple(float(x) for x in boxes[t][k]) if present[t] else None for t in range(T)),
            extra={"synth": meta}))
    return out


def write_synthetic_dataset(config: SynthConfig, out_dir: str | Path, seed: int = 0,
                            overwrite: bool = False,
                            progress: Callable[[int, int, float], None] | None = None) -> Path:
    """Render ``config.num_videos`` videos into ``out_dir``; returns the annotation file's path.

    ``progress(done, total, frames_per_second)`` is called after every video.
    """
    root = Path(out_dir)
    ann_path = root / "annotations.json"
    image_root = root / "JPEGImages"
    if ann_path.exists() or image_root.exists():
        if not overwrite:
            raise FileExistsError(f"{root} already holds a dataset (annotations.json or JPEGImages); "
                                  "pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(image_root, ignore_errors=True)
        ann_path.unlink(missing_ok=True)
    image_root.mkdir(parents=True, exist_ok=True)
    backgrounds = make_backgrounds(config)
    videos: list[Video] = []
    annotations: list[Annotation] = []
    ext = config.image_format
    start = time.perf_counter()
    for i in range(config.num_videos):
        video = render_video(config, seed, i, backgrounds)
        name = f"synth_{i:05d}"
        (image_root / name).mkdir(exist_ok=True)
        file_names = []
        for t, frame in enumerate(video.frames):
            rel = f"{name}/{t:05d}.{ext}"
            img = Image.fromarray(frame)
            if ext == "jpg":
                img.save(image_root / rel, quality=config.jpeg_quality)
            else:
                img.save(image_root / rel, compress_level=1)
            file_names.append(rel)
        videos.append(Video(i + 1, config.width, config.height, config.frames, tuple(file_names)))
        annotations += video_annotations(video, config, i + 1, len(annotations) + 1)
        if progress is not None:
            elapsed = time.perf_counter() - start
            progress(i + 1, config.num_videos, (i + 1) * config.frames / max(elapsed, 1e-9))
    categories = tuple(Category(i + 1, name, "shape") for i, name in enumerate(config.categories))
    info = {"description": "daq-label procedural synthetic videos", "seed": seed, "config": asdict(config)}
    write_dataset(Dataset(tuple(videos), tuple(annotations), categories, {"info": info}), ann_path)
    logger.info("wrote %d videos, %d annotations to %s", len(videos), len(annotations), root)
    return ann_path

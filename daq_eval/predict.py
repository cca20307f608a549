"""Run a DVIS-DAQ model over a YouTube-VIS-format folder and build the official prediction list.

For every video of the annotation file, its frames (``IMAGE_DIR/<file_name>``) are read in order
and pushed to a streaming session of :class:`daq_model.predictor.VideoPredictor` (the same code
path as the label job); the session's final :class:`~daq_model.outputs.VideoResult` becomes one
prediction per instance:

* ``video_id``: the annotation file's video id;
* ``category_id``: the dataset's category id of the instance's label (see :func:`category_map`);
* ``score``: the instance's video-level score;
* ``segmentations``: one COCO RLE per frame of the video, at the video's ``height x width``
  (``null`` where the instance has no mask or an empty one).

Masks: online models -- an instance's mask in frame t is its track's mask in that frame's
:class:`~daq_model.outputs.FrameTracks` (every entry of the track, valid or carried while absent,
as the official online post-processing); RLE-encoded as frames stream, so full-resolution masks
are never kept. Offline models -- :meth:`~daq_model.outputs.VideoResult.iter_frame_masks` (the
refiner's masks), decoded and encoded one frame at a time. Where the model config sets
``test.merge_fragments_iou`` (the shipped model does), instances that follow one object in turn
are then merged (:mod:`daq_model.fragment_merge`).

Class mapping (:func:`category_map`): by name when every class name of the model is a category
name of the dataset; otherwise (``order``) contiguous label i is the dataset's i-th category by
ascending id, the convention ``daq_train`` trains with (labels beyond the dataset's categories are
dropped, with a warning).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from daq_model.config import DAQConfig, TestConfig
from daq_model.fragment_merge import merge_fragments
from daq_model.outputs import FrameTracks, Instance, VideoInfo, VideoResult
from daq_model.predictor import VideoPredictor
from daq_eval.ytvis_format import Dataset, Prediction, Video, encode_masks

logger = logging.getLogger(__name__)

CATEGORY_MAPS = ("auto", "name", "order")


class PredictError(ValueError):
    """Frames cannot be read or the model's classes cannot be mapped (the message says which)."""


def category_map(cfg: DAQConfig, dataset: Dataset, how: str = "auto") -> list[int | None]:
    """Dataset category id of every contiguous label of the model (None: no such category).

    ``name``: each model class name must name exactly one dataset category. ``order``: label i ->
    the i-th category by ascending id. ``auto``: ``name`` when the model has class names and all
    of them are dataset categories, ``order`` when the model has no class names; a model whose
    names do not match raises (pass ``order`` to map by position anyway)."""
    if how not in CATEGORY_MAPS:
        raise ValueError(f"category map must be one of {CATEGORY_MAPS}, got {how!r}")
    by_name: dict[str, list[int]] = {}
    for c in dataset.categories:
        by_name.setdefault(c.name, []).append(c.id)
    names = cfg.class_names
    matches = bool(names) and all(len(by_name.get(n, ())) == 1 for n in names)
    if how == "name" or (how == "auto" and names):
        if not matches:
            missing = [n for n in names if len(by_name.get(n, ())) != 1][:5]
            raise PredictError(
                f"the model's class names do not all name one dataset category (e.g. {missing}; "
                f"dataset: {', '.join(sorted(by_name))[:200]}); pass --category-map order to map "
                "label i to the i-th category by id")
        return [by_name[n][0] for n in names]
    ordered = [c.id for c in sorted(dataset.categories, key=lambda c: c.id)]
    mapping: list[int | None] = [ordered[i] if i < len(ordered) else None
                                 for i in range(cfg.num_classes)]
    if cfg.num_classes > len(ordered):
        logger.warning("the model has %d classes, the dataset %d categories: instances of labels "
                       ">= %d are dropped", cfg.num_classes, len(ordered), len(ordered))
    return mapping


def read_frames(image_dir: Path, video: Video, start: int, stop: int) -> np.ndarray:
    """Frames ``[start, stop)`` of ``video`` as one (N, H, W, 3) uint8 RGB array."""
    frames = []
    for name in video.file_names[start:stop]:
        path = Path(image_dir) / name
        try:
            with Image.open(path) as img:
                frames.append(np.asarray(img.convert("RGB")))
        except (OSError, ValueError) as exc:
            raise PredictError(f"video {video.id}: cannot read frame {path}: {exc}") from exc
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise PredictError(f"video {video.id}: frames of different sizes {sorted(shapes)} "
                           f"in {Path(image_dir) / video.file_names[start]} ...")
    return np.stack(frames)


def iter_frame_batches(image_dir: Path, video: Video, batch: int) -> Iterator[np.ndarray]:
    for start in range(0, video.length, batch):
        yield read_frames(image_dir, video, start, min(video.length, start + batch))


class _TrackMasks:
    """Per-track RLEs from the FrameTracks stream (online models), keyed by (track id, frame)."""

    def __init__(self) -> None:
        self.rles: dict[int, dict[int, dict]] = {}

    def add(self, frame: FrameTracks) -> None:
        if len(frame) == 0:
            return
        nonempty = frame.masks.reshape(len(frame), -1).any(axis=1)
        if not nonempty.any():
            return
        encoded = encode_masks(frame.masks[nonempty])
        for rle, k in zip(encoded, np.flatnonzero(nonempty)):
            self.rles.setdefault(int(frame.track_ids[k]), {})[int(frame.frame_index)] = rle


@dataclass
class VideoPredictions:
    video_id: int
    predictions: list[Prediction]
    seconds: float
    stats: dict[str, float] = field(default_factory=dict)


def predict_video(predictor: VideoPredictor, image_dir: Path, video: Video,
                  categories: Sequence[int | None], frames_per_push: int = 8) -> VideoPredictions:
    """The predictions of one video (see the module docstring)."""
    start_time = time.perf_counter()
    first = read_frames(image_dir, video, 0, min(video.length, frames_per_push))
    info = VideoInfo(height=int(first.shape[1]), width=int(first.shape[2]), num_frames=video.length)
    online = not predictor.cfg.offline
    session = predictor.start_video(info, output_size=(video.height, video.width), frame_masks=online)
    tracks = _TrackMasks()

    def batches() -> Iterator[np.ndarray]:
        yield first
        for start in range(frames_per_push, video.length, frames_per_push):
            yield read_frames(image_dir, video, start, min(video.length, start + frames_per_push))

    for batch in batches():
        for frame in session.push(batch):
            if online:
                tracks.add(frame)
    for frame in session.flush():
        if online:
            tracks.add(frame)
    result = session.finish(replay=lambda: iter_frame_batches(image_dir, video, frames_per_push))
    segs = _instance_segmentations(result, tracks, video.length)
    instances = list(result.instances)
    if predictor.cfg.test.merge_fragments_iou > 0:
        instances, segs = merge_fragment_segmentations(instances, segs, predictor.cfg.test)
    predictions = []
    for inst, seg in zip(instances, segs):
        category = categories[inst.label] if inst.label < len(categories) else None
        if category is None:
            continue
        predictions.append(Prediction(video.id, int(category), float(inst.score), tuple(seg)))
    return VideoPredictions(video.id, predictions, time.perf_counter() - start_time,
                            dict(result.stats))


def merge_fragment_segmentations(instances: list[Instance], segs: list[list[dict | None]], test: TestConfig
                                 ) -> tuple[list[Instance], list[list[dict | None]]]:
    """Instances and per-frame RLEs after :mod:`daq_model.fragment_merge` (each merged instance
    keeps its highest-scoring member's entry)."""
    merged = merge_fragments(
        instances, [int(i.label) for i in instances], [float(i.score) for i in instances],
        [{t: r for t, r in enumerate(seg) if r} for seg in segs],
        lambda r: {"size": r["size"], "counts": r["counts"].encode("ascii")},
        test.merge_fragments_iou, test.merge_fragments_agree)
    length = len(segs[0]) if segs else 0
    return [inst for inst, _ in merged], [[frames.get(t) for t in range(length)] for _, frames in merged]


def _instance_segmentations(result: VideoResult, tracks: _TrackMasks, length: int
                            ) -> list[list[dict | None]]:
    segs: list[list[dict | None]] = [[None] * length for _ in result.instances]
    if result.mask_source == "tracker":
        for i, inst in enumerate(result.instances):
            for t, rle in tracks.rles.get(int(inst.track_id), {}).items():
                segs[i][t] = rle
        return segs
    for frame in result.iter_frame_masks():
        masks = frame.masks
        if len(masks) == 0:
            continue
        nonempty = masks.reshape(len(masks), -1).any(axis=1)
        if nonempty.any():
            for rle, i in zip(encode_masks(masks[nonempty]), np.flatnonzero(nonempty)):
                segs[int(i)][int(frame.frame_index)] = rle
    return segs


def predict_dataset(predictor: VideoPredictor, dataset: Dataset, image_dir: Path,
                    category_mapping: str = "auto", frames_per_push: int = 8,
                    progress: Callable[[int, int, VideoPredictions], None] | None = None,
                    ) -> list[Prediction]:
    """Predictions of every video of ``dataset`` (frames under ``image_dir``), in video order."""
    categories = category_map(predictor.cfg, dataset, category_mapping)
    out: list[Prediction] = []
    for n, video in enumerate(dataset.videos, start=1):
        if video.length == 0:
            continue
        done = predict_video(predictor, image_dir, video, categories, frames_per_push)
        out.extend(done.predictions)
        if progress is not None:
            progress(n, len(dataset.videos), done)
    return out

"""Result types passed between the model's stages and out to its users (the pipeline).

The streaming inference API (``daq_model.predictor``) works like SAM 2's video predictor::

    predictor = VideoPredictor.from_checkpoint(checkpoint, config)       # once per process
    session = predictor.start_video(VideoInfo(height=H, width=W))        # once per video
    for batch in decoded_frames:                                         # (N, H, W, 3) uint8 RGB
        for frame in session.push(batch):                                # FrameTracks, in order
            ...                                                          # online result per frame
    result = session.finish(replay=...)                                  # VideoResult

* ``push`` yields one :class:`FrameTracks` per frame as soon as the tracker has processed it (it
  may hold frames back until a segmenter batch is full; ``finish`` flushes them first).
* ``finish`` runs what needs the whole video (track filtering and scoring, and for offline models
  the temporal refiner) and returns the final :class:`VideoResult`.
* Memory held by a session grows with video length only by the small per-frame state the final
  step needs (documented in ``daq_model/README.md``), never by full-resolution features, except
  within the configured feature-cache budget of offline models. When an offline video outgrows it,
  ``finish`` needs ``replay``: a zero-argument callable returning a fresh iterable of the same
  frames (same batches or not), used for a second pass that recomputes the mask features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from torch import Tensor


@dataclass(frozen=True)
class VideoInfo:
    """What a session needs to know about a video before its frames arrive.

    ``height``/``width``: size of the frames that will be pushed (after any display rotation) and of
    the masks returned. ``num_frames``: expected count if known (progress, pre-allocation only).
    """

    height: int
    width: int
    num_frames: int | None = None
    fps: float | None = None


@dataclass
class SegmenterOutput:
    """Per-frame segmenter (Mask2Former) outputs for a batch of frames (batch axis = frames).

    ``pred_embds`` are the decoder-normed query features (what the tracker and refiner consume);
    ``mask_features`` are the raw pixel-decoder mask features (not the tracker's projection);
    ``aux_logits``/``aux_masks`` are the earlier decoder stages (index 0 = prediction from the
    learnable queries before any layer), kept for training and for the reference comparison.
    ``image_size`` is the (h, w) of the resized frames before padding; the tensors are at the padded
    size / 4.
    """

    pred_logits: Tensor  # (B, Q, K+1)
    pred_masks: Tensor  # (B, Q, h, w)
    pred_embds: Tensor  # (B, Q, C)
    mask_features: Tensor  # (B, C, h, w)
    aux_logits: list[Tensor] = field(default_factory=list)  # each (B, Q, K+1)
    aux_masks: list[Tensor] = field(default_factory=list)  # each (B, Q, h, w)
    image_size: tuple[int, int] = (0, 0)


@dataclass
class FrameTracks:
    """The online tracker's result for one frame: every track with an entry in this frame.

    A track has an entry in frame t if the tracker judged it present (``valid``) or carried it
    while absent; a track killed in frame t (its ``kick_out_frame_num``-th consecutive absent
    frame) has none, as in the official track records.

    ``track_ids`` are per-video ids, stable across frames (with ``inference.track_ids ==
    "sequential"``: 0, 1, 2, ... in creation order). ``valid`` is False for a track the tracker
    keeps alive although it judged the object absent in this frame (official behaviour: up to
    ``kick_out_frame_num - 1`` such frames); its mask and scores are still the model's prediction.
    ``scores``/``labels``: per-frame foreground score (max over classes of softmax, no-object
    excluded) and its class. ``masks`` are binary at the video's output size (``VideoInfo``), or
    ``(n, 0, 0)`` from a session started with ``frame_masks=False``.
    """

    frame_index: int
    track_ids: np.ndarray  # (n,) int64
    valid: np.ndarray  # (n,) bool
    scores: np.ndarray  # (n,) float32
    labels: np.ndarray  # (n,) int64
    masks: np.ndarray  # (n, H, W) bool

    def __len__(self) -> int:
        return int(self.track_ids.shape[0])


@dataclass(frozen=True)
class Instance:
    """One entry of the final video-level result (official VIS semantics).

    The official post-processing takes the top ``test.max_num`` (track, class) pairs by score, so
    one track may appear more than once with different labels. ``instance_id`` is the entry's index
    in :attr:`VideoResult.instances`; ``track_id`` is the tracker id of its track (the id used in
    :class:`FrameTracks`), or -1 for offline candidates that no tracker track backs (the refiner's
    MinVIS fill-up candidates).
    """

    instance_id: int
    track_id: int
    label: int
    score: float


@dataclass
class FrameMasks:
    """Final masks of every instance for one frame: ``masks[i]`` belongs to ``instances[i]``."""

    frame_index: int
    masks: np.ndarray  # (N, H, W) bool


@dataclass
class VideoResult:
    """The final result of one video.

    ``instances``: the official top-``max_num`` (track, class) entries, ordered by descending
    score. ``mask_source``: ``"tracker"`` for online models (an instance's mask in frame t is its
    track's mask in that frame's :class:`FrameTracks`, empty where the track did not exist) or
    ``"refiner"`` for offline models, whose masks are recomputed over the whole video;
    :meth:`iter_frame_masks` yields them frame by frame either way.
    ``num_frames``: frames processed. ``stats``: counters for logs and health figures (tracks
    started, tracks killed, ...).
    """

    instances: list[Instance]
    num_frames: int
    mask_source: str
    frame_masks: Iterator[FrameMasks] | None = None
    stats: dict[str, float] = field(default_factory=dict)

    def iter_frame_masks(self) -> Iterator[FrameMasks]:
        if self.frame_masks is None:
            raise RuntimeError(
                "this result carries no final masks: for online models, take each instance's "
                "masks from the FrameTracks of its track_id"
            )
        return self.frame_masks

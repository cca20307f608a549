"""Streaming inference (the API described in :mod:`daq_model.outputs`), SAM 2 video-predictor style.

::

    predictor = VideoPredictor.from_checkpoint("model.pt", "ovis_offline_r50")
    session = predictor.start_video(VideoInfo(height=720, width=1280))
    for batch in decoded_batches:                # (N, H, W, 3) uint8 RGB
        for frame in session.push(batch):        # FrameTracks, in frame order
            ...
    for frame in session.flush():                # frames still held back (partial batch)
        ...
    result = session.finish(replay=lambda: decode_again())   # VideoResult

Frames go through the segmenter in batches of ``cfg.inference.frame_batch_size``; ``push`` copies
its frames at call time and processes complete batches while its iterator is consumed. Frames
still waiting for a full batch are processed by :meth:`VideoSession.flush` (or by ``finish``, which
then cannot hand out their :class:`FrameTracks`; call ``flush`` first if you need them). If
``VideoInfo.num_frames`` is given, the last partial batch is processed as soon as it arrives.

Precision: CPU runs float32 (bf16 autocast only if asked for); CUDA runs under ``torch.autocast``
(fp16 for ``auto``/``fp16``, bf16 for ``bf16``) with the pixel decoder in float32, as the official
evaluation does. Everything runs under ``torch.inference_mode``.
"""

from __future__ import annotations

import contextlib
import logging
import random
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from daq_model.config import DAQConfig, load_config
from daq_model.dvis_daq import DVISDAQ, create_model
from daq_model.feature_cache import (DEFAULT_FEATURE_CACHE_MB, FeatureCache,
                                     FrameEmbeddingStore, ReplayFn)
from daq_model.offline import MinVISLinker
from daq_model.outputs import FrameTracks, VideoInfo, VideoResult
from daq_model.postprocess import MaskGeometry, masks_to_output
from daq_model.preprocess import padded_size, resized_size
from daq_model.tracking import TrackStep, make_id_source, make_video_tracker
from daq_model.video_results import offline_result, online_result

logger = logging.getLogger(__name__)


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast region for ``cfg.inference.precision`` on ``device``."""
    if precision not in ("auto", "fp32", "fp16", "bf16"):
        raise ValueError(f"inference.precision must be auto|fp32|fp16|bf16, got {precision!r}")
    if device.type == "cuda" and precision != "fp32":
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    if device.type == "cpu" and precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if precision == "fp16":
        logger.warning("fp16 autocast is CUDA-only; running %s in float32", device.type)
    return contextlib.nullcontext()


class VideoPredictor:
    """A loaded model plus the settings shared by its video sessions (one per process)."""

    def __init__(self, model: DVISDAQ, feature_cache_mb: float = DEFAULT_FEATURE_CACHE_MB,
                 id_rng: random.Random | None = None,
                 empty_on_single_candidate: bool = True) -> None:
        """``feature_cache_mb``: budget for offline mask features kept between the frames and
        ``finish`` (beyond it ``finish`` needs ``replay``). ``id_rng``: generator of the official
        ids (``inference.track_ids == "official"``; seed it to reproduce official ids).
        ``empty_on_single_candidate``: the official offline quirk (exactly one refiner candidate
        gives an empty result); False scores that candidate normally."""
        self.model = model.eval()
        self.empty_on_single_candidate = empty_on_single_candidate
        self.cfg: DAQConfig = model.cfg
        self.device = model.device
        self.feature_cache_mb = feature_cache_mb
        # official ids: one generator and one issued-id set for the predictor's lifetime, like
        # the official model object (see daq_model/README.md)
        self._official_ids = make_id_source("official", id_rng or random.Random())

    @classmethod
    def from_checkpoint(cls, checkpoint: str | None, config: "str | DAQConfig",
                        device: str | torch.device = "cpu", **kwargs) -> "VideoPredictor":
        """Build the model of ``config`` (preset name, yaml or :class:`DAQConfig`), load
        ``checkpoint`` strictly (None: random weights, for tests) and move it to ``device``."""
        cfg = load_config(config)
        return cls(create_model(cfg, checkpoint, device=device), **kwargs)

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast_context(torch.device(self.device), self.cfg.inference.precision)

    def start_video(self, info: VideoInfo, output_size: tuple[int, int] | None = None,
                    frame_masks: bool = True) -> "VideoSession":
        """A new session. ``output_size`` overrides the (H, W) of returned masks (default: the
        frame size of ``info``). ``frame_masks=False``: the streamed :class:`FrameTracks` carry no
        masks (``(n, 0, 0)``), which saves resizing every track's mask to the output size each
        frame when they are not used (offline models, whose final masks come from the refiner)."""
        return VideoSession(self, info, output_size, frame_masks)

    def mask_features(self, frames: np.ndarray) -> Tensor:
        """Raw pixel-decoder mask features (N, C, h, w) of RGB frames (replay passes)."""
        with torch.inference_mode(), self.autocast():
            pre = self.model.preprocess(frames)
            features = self.model.backbone(pre.images)
            mask_features, _ = self.model.sem_seg_head.pixel_decoder(features)
        return mask_features.float()


class VideoSession:
    """Per-video state of the streaming predictor. Not thread-safe; one video at a time."""

    def __init__(self, predictor: VideoPredictor, info: VideoInfo,
                 output_size: tuple[int, int] | None = None, frame_masks: bool = True) -> None:
        cfg = predictor.cfg
        self.predictor = predictor
        self.frame_masks = frame_masks
        self.cfg = cfg
        self.info = info
        image = resized_size(info.height, info.width, cfg.input.min_size_test,
                             cfg.input.max_size_test)
        self.geometry = MaskGeometry(
            padded=padded_size(*image, cfg.segmenter.size_divisibility), image=image,
            output=tuple(output_size) if output_size else (info.height, info.width))
        mode = cfg.inference.track_ids
        ids = predictor._official_ids if mode == "official" else make_id_source(mode)
        model = predictor.model
        self.tracker = make_video_tracker(model.tracker, cfg,
                                          model.sem_seg_head.predictor.query_feat.weight, ids,
                                          keep_embeds=cfg.offline)
        self.batch_size = max(1, int(cfg.inference.frame_batch_size))
        self._pending: list[np.ndarray] = []
        self._received = 0
        self._finished = False
        # offline: what the refiner needs at finish
        self._frame_embeds = FrameEmbeddingStore(info.num_frames)  # (T, Q, C) float32, CPU
        self._minvis = MinVISLinker()  # streaming MinVIS link for the refiner's fill-up
        self.cache = FeatureCache(predictor.feature_cache_mb if cfg.offline else 0.0)

    @property
    def num_frames(self) -> int:
        """Frames processed by the tracker so far."""
        return self.tracker.num_frames

    # ---------------------------------------------------------------------------------------
    # frames in

    def push(self, frames: np.ndarray) -> Iterator[FrameTracks]:
        """Queue RGB uint8 frames ``(N, H, W, 3)`` (or one ``(H, W, 3)``); the returned iterator
        processes complete segmenter batches and yields their :class:`FrameTracks` in order."""
        if self._finished:
            raise RuntimeError("push() after finish(): start a new session per video")
        array = np.asarray(frames)
        if array.ndim == 3:
            array = array[None]
        expected = (self.info.height, self.info.width, 3)
        if array.ndim != 4 or tuple(array.shape[1:]) != expected or array.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames of shape (N, {expected[0]}, {expected[1]}, "
                             f"3) as declared in VideoInfo, got {array.dtype} {array.shape}")
        self._pending.extend(np.array(f, copy=True) for f in array)
        self._received += array.shape[0]
        return self._drain(final=self.info.num_frames is not None
                           and self._received >= self.info.num_frames)

    def flush(self) -> Iterator[FrameTracks]:
        """Process frames still waiting for a full batch and yield their FrameTracks."""
        return self._drain(final=True)

    def _drain(self, final: bool) -> Iterator[FrameTracks]:
        while len(self._pending) >= self.batch_size or (final and self._pending):
            batch = np.stack(self._pending[: self.batch_size])
            del self._pending[: self.batch_size]
            yield from self._process(batch)

    def _process(self, frames: np.ndarray) -> list[FrameTracks]:
        model = self.predictor.model
        out: list[FrameTracks] = []
        with torch.inference_mode(), self.predictor.autocast():
            pre = model.preprocess(frames)
            seg = model.forward_features(pre.images, pre.image_size)
            for b in range(frames.shape[0]):
                step = self.tracker.step(seg.pred_logits[b], seg.pred_masks[b],
                                         seg.pred_embds[b], seg.mask_features[b])
                if self.cfg.offline:
                    self._frame_embeds.append(seg.pred_embds[b])
                    self._minvis.add(seg.pred_embds[b], seg.pred_logits[b])
                    self.cache.offer(seg.mask_features[b])
                out.append(self._frame_tracks(step))
        return out

    def _frame_tracks(self, step: TrackStep) -> FrameTracks:
        """The tracks with an entry in this frame: scores/labels from the tracker's logits,
        masks through the official resize chain to the output size."""
        entries = step.decision.entries
        rows = torch.as_tensor([e[0] for e in entries], dtype=torch.long,
                               device=step.output.logits.device)
        probs = step.output.logits[rows].float().softmax(-1)[:, :-1]
        if len(entries):
            scores, labels = probs.max(-1)
        else:
            scores, labels = probs.new_zeros(0), torch.zeros(0, dtype=torch.long)
        if self.frame_masks:
            masks = masks_to_output(step.output.masks[rows], self.geometry).cpu().numpy()
        else:
            masks = np.zeros((len(entries), 0, 0), dtype=bool)
        return FrameTracks(
            frame_index=step.frame_index,
            track_ids=np.asarray([e[1] for e in entries], dtype=np.int64),
            valid=np.asarray([e[2] for e in entries], dtype=bool),
            scores=scores.cpu().numpy().astype(np.float32),
            labels=labels.cpu().numpy().astype(np.int64),
            masks=masks,
        )

    # ---------------------------------------------------------------------------------------
    # result out

    def finish(self, replay: ReplayFn | None = None) -> VideoResult:
        """Process held-back frames, then build the video result (online: track scores; offline:
        candidate assembly and the refiner; its masks are decoded lazily by
        ``result.iter_frame_masks()``, using ``replay`` for frames beyond the feature cache)."""
        held = len(self._pending)
        for _ in self.flush():
            pass
        if held:
            logger.info("finish(): processed %d held-back frames whose FrameTracks were not "
                        "handed out (call flush() before finish() to receive them)", held)
        self._finished = True
        if self.num_frames == 0:
            raise ValueError("finish() on a session that received no frames")
        stats = {"tracks_started": float(self.tracker.hub.num_started),
                 "tracks_killed": float(self.tracker.hub.num_killed),
                 "state_bytes": float(self.state_nbytes())}
        if not self.cfg.offline:
            return online_result(self.tracker, self.cfg, stats)
        if self.cache.overflowed and replay is None:
            raise RuntimeError(
                f"{self.num_frames} frames outgrew the {self.predictor.feature_cache_mb:.0f} MB "
                "mask-feature cache: finish() needs replay= (a callable returning the frames "
                "again) to decode the refined masks")
        frame_embeds = self._frame_embeds.view()
        with torch.inference_mode(), self.predictor.autocast():
            return offline_result(
                self.predictor, self.tracker, frame_embeds,
                self._minvis, self.cache, replay, self.geometry, stats,
                empty_on_single_candidate=self.predictor.empty_on_single_candidate)

    def state_nbytes(self) -> int:
        """Bytes of tensor data this session holds (records, per-frame embeddings and logits,
        cached mask features); see daq_model/README.md for the per-frame figures."""
        per_frame = self._frame_embeds.nbytes()  # allocated (T rounded up, see README)
        per_frame += self._minvis.nbytes()
        return self.tracker.hub.nbytes() + per_frame + self.cache.nbytes

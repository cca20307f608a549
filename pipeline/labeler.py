"""Label one video: stream-decode, push frames to a DVIS-DAQ session, finish, build the tables.

This is the body of the RunInference step (:mod:`pipeline.handler`): decoding happens here, in
the process that holds the model, so frames never cross a process boundary; only the compact
result (RLE masks as Arrow tables) leaves it. Per-video failures become a ``failed`` (or
``partial``) row with the reason; they never raise.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from daq_model.config import DAQConfig
from daq_model.outputs import VideoInfo, VideoResult
from pipeline import decode
from pipeline.decode import DecodeStats, StreamInfo, StreamingDecoder, VideoError, classify_decode
from pipeline.inputs import BAD_INPUT_LINE, VideoRef
from pipeline.limits import VideoLimits
from pipeline.tables import (
    EMPTY_HEALTH,
    LabelledInstance,
    Provenance,
    VideoLabels,
    health,
    summary_table,
    tracks_table,
    videos_table,
)
from pipeline.tracks import TrackStream, merge_fragment_rows, rows_from_frame_masks
from schemas.tables import TRACK_SUMMARY_V1, TRACKS_V1

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelSettings:
    """How videos are fed to the model: the feeding (none of it changes the labels) and the
    limits (:mod:`pipeline.limits`: rejections, the downscale of large frames, the length cap;
    ``chunked``: the job labels long videos in chunks, so only the pixel budget bounds length)."""

    frames_per_push: int = 8
    prefetch_batches: int = 2
    progress_every_frames: int = 1000
    storage_options: tuple[tuple[str, Any], ...] = ()
    limits: VideoLimits = field(default_factory=VideoLimits)
    chunked: bool = False

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.storage_options)

    def decoder(self, url: str) -> StreamingDecoder:
        """A decoder of ``url`` with these settings' batch size, storage options and limits."""
        return StreamingDecoder(url, self.frames_per_push, self.options, self.limits, self.chunked)


@dataclass
class _Timings:
    model: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def _video_row(ref: VideoRef, provenance: Provenance, info: StreamInfo | None, stats: DecodeStats,
               status: str, kind: str | None, message: str | None, figures: dict[str, Any],
               model_seconds: float, model_stats: dict[str, float]) -> dict[str, Any]:
    started = model_stats.get("tracks_started")
    return {
        "video_id": ref.video_id,
        "source_url": ref.url,
        "status": status,
        "error_type": kind,
        "error_message": message,
        "frames_decoded": stats.frames,
        "frames_expected": info.frames_expected if info else None,
        "frames_expected_source": info.frames_expected_source if info else None,
        "decode_errors": stats.errors,
        "width": stats.width,
        "height": stats.height,
        "rotation": stats.rotation if stats.width is not None else None,
        "fps": info.fps if info else None,
        "duration_s": info.duration_s if info else None,
        "codec": info.codec if info else None,
        "container_format": info.container_format if info else None,
        "file_bytes": info.file_bytes if info else None,
        "source_width": stats.source_width,
        "source_height": stats.source_height,
        **provenance.as_columns(),
        "decode_seconds": round(stats.seconds, 6),
        "model_seconds": round(model_seconds, 6),
        **figures,
        "tracker_tracks_started": int(started) if started is not None else None,
    }


def failed_labels(ref: VideoRef, provenance: Provenance, kind: str, message: str,
                  info: StreamInfo | None = None, stats: DecodeStats | None = None,
                  model_seconds: float = 0.0) -> VideoLabels:
    """A video that could not be labelled: a ``failed`` row and empty track tables."""
    row = _video_row(ref, provenance, info, stats or DecodeStats(), "failed", kind, message,
                     dict(EMPTY_HEALTH), model_seconds, {})
    return VideoLabels(ref.video_id, row, TRACKS_V1.empty_table(), TRACK_SUMMARY_V1.empty_table())


def _replay(ref: VideoRef, settings: LabelSettings) -> Callable[[], Iterator[np.ndarray]]:
    """Second pass over the same frames, for offline models whose features outgrew the cache."""

    def frames() -> Iterator[np.ndarray]:
        logger.info("%s: replaying the video for the offline refiner", ref.url)
        with settings.decoder(ref.url) as again:  # the same limits: the same frames and sizes
            for batch in again.batches():
                yield batch.frames

    return frames


def label_video(ref: VideoRef, predictor: Any, cfg: DAQConfig, provenance: Provenance,
                settings: LabelSettings) -> VideoLabels:
    """Label one video; never raises for a bad video (the row says why)."""
    if ref.input_error is not None:  # a malformed URL-list line: nothing to open
        return failed_labels(ref, provenance, BAD_INPUT_LINE, ref.input_error)
    decoder = settings.decoder(ref.url)
    try:
        decoder.__enter__()
    except VideoError as exc:  # opening errors and limits broken by the header
        logger.warning("%s (%s): failed: %s", ref.url, ref.video_id, exc)
        return failed_labels(ref, provenance, exc.kind, str(exc), info=decoder.info, stats=decoder.stats)
    info = decoder.info
    stream = TrackStream(encode_masks=not cfg.offline)
    timings = _Timings()
    timestamps: list[float] = []
    session = None
    next_progress = settings.progress_every_frames
    try:
        try:
            # the decoder owns the prefetch thread: close() below stops and joins it before
            # the container is freed, whatever ends this block (model error, interrupt, ...)
            for batch in decoder.batches(prefetch=settings.prefetch_batches):
                if session is None:
                    h, w = int(batch.frames.shape[1]), int(batch.frames.shape[2])
                    # offline models' masks come from the refiner: skip per-frame track masks
                    session = predictor.start_video(VideoInfo(
                        height=h, width=w, num_frames=info.frames_expected if info else None,
                        fps=info.fps if info else None), frame_masks=stream.encode)
                timestamps.extend(batch.timestamps)
                _push(session, batch.frames, stream, timings)
                if decoder.stats.frames >= next_progress:
                    next_progress += settings.progress_every_frames
                    logger.info("%s: %d/%s frames labelled", ref.video_id, decoder.stats.frames,
                                info.frames_expected if info else "?")
            if session is not None:  # frames held back for a full segmenter batch
                _consume(session.flush(), stream, timings)
        finally:
            decoder.close()
        status, kind, message = classify_decode(decoder.stats, info)
        if status == "failed" or session is None:
            message = f"{ref.url}: {message}"
            logger.warning("%s (%s): failed: %s", ref.url, ref.video_id, message)
            return failed_labels(ref, provenance, kind or decode.NO_FRAMES, message, info, decoder.stats)
        start = time.perf_counter()
        result: VideoResult = session.finish(replay=_replay(ref, settings) if cfg.offline else None)
        timings.model += time.perf_counter() - start
        instances = _labelled_instances(result, stream, cfg, timings,
                                        (int(decoder.stats.height or 0), int(decoder.stats.width or 0)))
    except Exception as exc:  # noqa: BLE001 - a model failure fails this video only
        logger.exception("%s (%s): model failed", ref.url, ref.video_id)
        return failed_labels(ref, provenance, decode.MODEL_ERROR,
                             f"{ref.url}: model failed: {type(exc).__name__}: {exc}", info,
                             decoder.stats, timings.model)
    if message is not None:
        message = f"{ref.url}: {message}"
    figures = health(instances, decoder.stats.frames)
    row = _video_row(ref, provenance, info, decoder.stats, status, kind, message, figures,
                     timings.model, dict(result.stats or {}))
    fps = info.fps if info else None
    tracks = tracks_table(ref.video_id, instances, timestamps, fps, provenance.key,
                          int(decoder.stats.height or 0), int(decoder.stats.width or 0))
    summary = summary_table(ref.video_id, instances, timestamps, fps, provenance.key)
    logger.info("labelled %s (%s): %s, %d/%s frames, %d tracks, decode %.2fs, model %.2fs",
                ref.url, ref.video_id, status, decoder.stats.frames,
                info.frames_expected if info else "?", figures["num_tracks"],
                decoder.stats.seconds, timings.model)
    videos_table(row)  # checks the row is complete before anything is written
    return VideoLabels(ref.video_id, row, tracks, summary)


def _push(session: Any, frames: np.ndarray, stream: TrackStream, timings: _Timings) -> None:
    """Push a batch; time the model (not our RLE encoding of its output)."""
    clock = time.perf_counter()
    results = session.push(frames)
    timings.model += time.perf_counter() - clock
    _consume(results, stream, timings)


def _consume(results: Iterator[Any], stream: TrackStream, timings: _Timings) -> None:
    clock = time.perf_counter()
    for frame_tracks in results:
        timings.model += time.perf_counter() - clock
        stream.add(frame_tracks)
        clock = time.perf_counter()
    timings.model += time.perf_counter() - clock


def _labelled_instances(result: VideoResult, stream: TrackStream, cfg: DAQConfig,
                        timings: _Timings, size: tuple[int, int]) -> list[LabelledInstance]:
    instances = list(result.instances)
    if result.mask_source == "tracker" and stream.encode:
        rows = [stream.rows_for(inst) for inst in instances]
    else:
        # Refiner masks (offline): the iterator may compute lazily, so time it as model work.
        clock = time.perf_counter()
        rows = rows_from_frame_masks(instances, result.iter_frame_masks(), stream)
        timings.model += time.perf_counter() - clock
    if cfg.test.merge_fragments_iou > 0:
        instances, rows = merge_fragment_rows(instances, rows, size, cfg.test)
    return [
        LabelledInstance(inst, int(inst.label) + 1, cfg.class_name(int(inst.label)), inst_rows)
        for inst, inst_rows in zip(instances, rows)
    ]

"""Label one chunk of a long video (:mod:`pipeline.chunking`): decode its frames, run one model
session over them, keep the result as a compact ``tracks`` table with frame indices of the whole
video, for :mod:`pipeline.stitching`.

A chunk's memory is bounded by its own frames: the session (tracker state, the offline model's
per-frame embeddings and feature cache) only ever sees the chunk's frames, and decoded frames
before the chunk are dropped as they come.

Decoding a chunk decodes the video from its first frame and drops the frames before the chunk
(:class:`pipeline.decode.StreamingDecoder`, whose frame counting and damaged-packet handling are
the whole-video decode's, so frame indices agree exactly with an unchunked run). It costs the
decode (not the model) time of the frames before the chunk; the last chunk, which decodes the
whole stream, also gives the whole video's decode figures (frames, errors) for its ``videos`` row.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa

from daq_model.config import DAQConfig
from daq_model.outputs import VideoInfo
from pipeline import decode
from pipeline.chunking import Chunk
from pipeline.decode import DecodeStats, StreamInfo, StreamingDecoder, VideoError, prefetch
from pipeline.inputs import VideoRef
from pipeline.limits import VideoLimits
from pipeline.tables import LabelledInstance, tracks_table
from pipeline.tracks import MaskRow, TrackStream, merge_fragment_rows, rows_from_frame_masks
from schemas.tables import TRACKS_V1

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkTask:
    """One element of the fan-out: a chunk of a video to label."""

    ref: VideoRef
    chunk: Chunk


@dataclass
class ChunkLabels:
    """What a chunk sends to the stitcher (small: RLE rows, timestamps, figures)."""

    ref: VideoRef
    chunk: Chunk
    tracks: pa.Table  # schema tracks v1, frame indices of the whole video
    timestamps: list[float] = field(default_factory=list)  # of frames chunk.start, start + 1, ...
    info: StreamInfo | None = None
    stats: DecodeStats = field(default_factory=DecodeStats)
    error_kind: str | None = None
    error_message: str | None = None
    model_seconds: float = 0.0
    model_stats: dict[str, float] = field(default_factory=dict)
    size: tuple[int, int] = (0, 0)

    @property
    def failed(self) -> bool:
        return self.error_kind is not None

    @property
    def frames_labelled(self) -> int:
        return len(self.timestamps)


class _ChunkTimes:
    """Timestamps of a chunk's frames, indexed by whole-video frame index (for tracks_table)."""

    def __init__(self, start: int, times: list[float]) -> None:
        self.start, self.times = start, times

    def __len__(self) -> int:
        return self.start + len(self.times)

    def __getitem__(self, frame: int) -> float:
        return self.times[frame - self.start]


def chunk_batches(decoder: StreamingDecoder, chunk: Chunk) -> Iterator[tuple[np.ndarray, list[float]]]:
    """The chunk's frames ``(N, H, W, 3)`` and timestamps, batch by batch, from an open decoder;
    frames before ``chunk.start`` are dropped, decoding stops after ``chunk.end`` (open end: at
    the end of the stream)."""
    for batch in decoder.batches():
        first = batch.start_index
        last = first + batch.frames.shape[0]
        lo = max(chunk.start, first)
        hi = last if chunk.open_end else min(chunk.end, last)
        if lo < hi:
            yield batch.frames[lo - first:hi - first], batch.timestamps[lo - first:hi - first]
        if not chunk.open_end and last >= chunk.end:
            return


def _replay(url: str, chunk: Chunk, batch_size: int, options: dict[str, Any],
            limits: VideoLimits | None = None) -> Callable[[], Iterator[np.ndarray]]:
    """The chunk's frames again, for offline refiners whose features outgrew the cache."""

    def frames() -> Iterator[np.ndarray]:
        logger.info("%s: replaying chunk %d for the offline refiner", url, chunk.index)
        with StreamingDecoder(url, batch_size, options, limits, chunked=True) as again:
            for batch, _times in chunk_batches(again, chunk):
                yield batch

    return frames


def chunk_instances(result: Any, stream: TrackStream, cfg: DAQConfig, size: tuple[int, int],
                    start: int) -> list[LabelledInstance]:
    """The session's final instances with their mask rows, frames shifted by ``start``."""
    instances = list(result.instances)
    if result.mask_source == "tracker" and stream.encode:
        rows = [stream.rows_for(inst) for inst in instances]
    else:
        rows = rows_from_frame_masks(instances, result.iter_frame_masks(), stream)
    if cfg.test.merge_fragments_iou > 0:
        instances, rows = merge_fragment_rows(instances, rows, size, cfg.test)
    return [LabelledInstance(inst, int(inst.label) + 1, cfg.class_name(int(inst.label)),
                             [MaskRow(r.frame_index + start, r.counts, r.area, r.bbox, r.frame_score,
                                      r.tracker_valid) for r in inst_rows])
            for inst, inst_rows in zip(instances, rows)]


def label_chunk(task: ChunkTask, predictor: Any, cfg: DAQConfig, provenance_key: str,
                frames_per_push: int = 8, storage_options: dict[str, Any] | None = None,
                prefetch_batches: int = 2, limits: VideoLimits | None = None) -> ChunkLabels:
    """Label one chunk; never raises for a bad video or a model failure (the result says why).
    ``limits`` (:mod:`pipeline.limits`) as for a video labelled whole, its length bounded by the
    pixel budget only."""
    ref, chunk = task.ref, task.chunk
    options = dict(storage_options or {})
    out = ChunkLabels(ref, chunk, TRACKS_V1.empty_table())
    decoder = StreamingDecoder(ref.url, frames_per_push, options, limits, chunked=True)
    try:
        decoder.__enter__()
    except VideoError as exc:
        out.error_kind, out.error_message, out.stats = exc.kind, str(exc), decoder.stats
        out.info = decoder.info
        return out
    out.info = decoder.info
    stream = TrackStream(encode_masks=not cfg.offline)
    session = None
    batches: Iterator[tuple[np.ndarray, list[float]]] = chunk_batches(decoder, chunk)
    if prefetch_batches > 0:
        batches = prefetch(batches, prefetch_batches)
    try:
        try:
            for frames, times in batches:
                if session is None:
                    out.size = (int(frames.shape[1]), int(frames.shape[2]))
                    session = predictor.start_video(VideoInfo(
                        height=out.size[0], width=out.size[1],
                        num_frames=None if chunk.open_end else chunk.frames,
                        fps=out.info.fps if out.info else None), frame_masks=stream.encode)
                out.timestamps.extend(float(t) for t in times)
                clock = time.perf_counter()
                stream.add_all(session.push(frames))
                out.model_seconds += time.perf_counter() - clock
            if session is not None:
                clock = time.perf_counter()
                stream.add_all(session.flush())
                out.model_seconds += time.perf_counter() - clock
        finally:
            close = getattr(batches, "close", None)
            if close is not None:  # stop the prefetch thread before the decoder goes
                close()
            decoder.close()
            out.stats = decoder.stats
        if session is None and decoder.stats.rejected is not None:  # a size limit (first frame)
            out.error_kind = decoder.stats.rejected[0]
            out.error_message = f"{ref.url}: {decoder.stats.rejected[1]}"
            return out
        if session is None:
            out.error_kind = decode.NO_FRAMES
            out.error_message = (f"{ref.url}: chunk {chunk.index + 1}/{chunk.count} (frames {chunk.start}-"
                                 f"{chunk.end}) got no frame; the video has {decoder.stats.frames}")
            return out
        clock = time.perf_counter()
        result = session.finish(replay=_replay(ref.url, chunk, frames_per_push, options, limits)
                                if cfg.offline else None)
        instances = chunk_instances(result, stream, cfg, out.size, chunk.start)
        out.model_seconds += time.perf_counter() - clock
        out.model_stats = dict(result.stats or {})
    except Exception as exc:  # noqa: BLE001 - a model failure fails this chunk (and its video) only
        logger.exception("%s (%s): chunk %d: model failed", ref.url, ref.video_id, chunk.index)
        out.error_kind = decode.MODEL_ERROR
        out.error_message = (f"{ref.url}: chunk {chunk.index + 1}/{chunk.count}: model failed: "
                             f"{type(exc).__name__}: {exc}")
        out.tracks = TRACKS_V1.empty_table()
        return out
    fps = out.info.fps if out.info else None
    out.tracks = tracks_table(ref.video_id, instances, _ChunkTimes(chunk.start, out.timestamps), fps,
                              provenance_key, out.size[0], out.size[1])
    logger.info("%s (%s): chunk %d/%d, frames %d-%d: %d frames, %d tracks, model %.2fs", ref.url,
                ref.video_id, chunk.index + 1, chunk.count, chunk.start, chunk.start + out.frames_labelled,
                out.frames_labelled, len(instances), out.model_seconds)
    return out

"""The label job's fan-out for long videos (``--chunk-frames``): a video longer than the chunk
length is labelled as several elements, one per chunk, on any workers; its chunks are grouped
back by ``video_id``, stitched (:mod:`pipeline.stitching`) and written once.

=====================  ==========================================================================
SplitLongVideos        VideoRef -> VideoRef (short, unknown length, unreadable: labelled whole by
                       LabelVideos) or ChunkTask x n (header frame count > chunk length)
                       ``videos_chunked``, ``chunks_planned``
LabelChunks            RunInference(ChunkModelHandler): ChunkTask -> (video_id, ChunkLabels)
                       ``chunks_labelled``, ``chunks_failed``, ``chunk_frames_labelled``
StitchChunks           GroupByKey(video_id) -> VideoLabels, as LabelVideos gives them
                       ``stitch_matches``, ``videos_stitched``
=====================  ==========================================================================

A chunk element carries only its chunk's compact results (RLE rows), never frames; the model
session of a chunk sees only the chunk's frames (memory bounded by the chunk length).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, Iterable, Iterator, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from pipeline import decode
from pipeline.chunk_label import ChunkLabels, ChunkTask, label_chunk
from pipeline.chunking import ChunkSettings, plan_chunks
from pipeline.decode import StreamingDecoder, VideoError, classify_decode
from pipeline.handler import METRICS_NAMESPACE, load_predictor
from pipeline.inputs import VideoRef
from pipeline.labeler import LabelSettings, failed_labels
from pipeline.limits import VideoLimits
from pipeline.model_source import ModelSpec
from pipeline.stitching import ChunkTracks, StitchReport, StitchSettings, stitch
from pipeline.tables import Provenance, VideoLabels, health, summary_table, tracks_table, videos_table

logger = logging.getLogger(__name__)

CHUNK_TAG = "chunks"


def _counter(name: str) -> Any:
    return Metrics.counter(METRICS_NAMESPACE, name)


class _SplitFn(beam.DoFn):
    def __init__(self, settings: ChunkSettings, storage_options: dict[str, Any],
                 limits: VideoLimits | None = None) -> None:
        self.settings = settings
        self.storage_options = storage_options
        self.limits = limits
        self.chunked = _counter("videos_chunked")
        self.planned = _counter("chunks_planned")

    def process(self, ref: VideoRef) -> Iterator[Any]:
        frames = None
        if ref.input_error is None and ref.quarantined is None:  # never open a poison video
            try:  # the header only: no frame is decoded here
                with StreamingDecoder(ref.url, 1, self.storage_options, self.limits, chunked=True) as probe:
                    frames = probe.info.frames_expected if probe.info else None
                    size = probe.info.file_bytes if probe.info else None
                if frames and size is not None and size < frames:  # fewer bytes than frames
                    logger.warning("%s (%s): the header claims %d frames in %d bytes; not trusted to "
                                   "plan chunks (labelled whole, its decoded length bounded by the "
                                   "limits)", ref.url, ref.video_id, frames, size)
                    frames = None
            except VideoError:
                frames = None  # LabelVideos records why (a limit broken by the header included)
        chunks = plan_chunks(frames, self.settings)
        if len(chunks) == 1:
            yield ref
            return
        self.chunked.inc()
        self.planned.inc(len(chunks))
        logger.info("%s (%s): %d frames in %d chunks of <= %d (%d shared)", ref.url, ref.video_id,
                    frames, len(chunks), self.settings.max_frames, self.settings.overlap)
        for chunk in chunks:
            yield beam.pvalue.TaggedOutput(CHUNK_TAG, ChunkTask(ref, chunk))


class SplitLongVideos(beam.PTransform):
    """Videos whose header says they are longer than the chunk length -> one element per chunk
    (tagged ``chunks``); every other video passes through (main output)."""

    def __init__(self, settings: ChunkSettings, storage_options: dict[str, Any] | None = None,
                 limits: VideoLimits | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.storage_options = dict(storage_options or {})
        self.limits = limits

    def expand(self, refs: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return refs | "Plan" >> beam.ParDo(_SplitFn(self.settings, self.storage_options, self.limits)).with_outputs(
            CHUNK_TAG, main="whole")


class ChunkModelHandler(ModelHandler[ChunkTask, ChunkLabels, Any]):
    """Loads DVIS-DAQ once per process; labels one chunk per element (in this process)."""

    def __init__(self, spec: ModelSpec, provenance: Provenance, settings: LabelSettings,
                 device: str = "auto", torch_threads: int = 0) -> None:
        super().__init__(min_batch_size=1, max_batch_size=1)
        self._spec = spec
        self._provenance = provenance
        self._settings = settings
        self._device = device
        self._torch_threads = torch_threads

    @property
    def limits(self) -> VideoLimits:
        return self._settings.limits

    def load_model(self) -> Any:
        if self._torch_threads > 0:
            import torch

            torch.set_num_threads(self._torch_threads)
        start = time.perf_counter()
        model = load_predictor(self._spec, self._device, self._settings.options)
        logger.info("chunk labeller: loaded model %s on %s in %.1fs", self._spec.model_name,
                    model.device, time.perf_counter() - start)
        return model

    def run_inference(self, batch: Sequence[ChunkTask], model: Any,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        labelled, failed = _counter("chunks_labelled"), _counter("chunks_failed")
        frames = _counter("chunk_frames_labelled")  # shared frames count once per chunk
        for task in batch:
            out = label_chunk(task, model.predictor, model.config, self._provenance.key,
                              self._settings.frames_per_push, self._settings.options,
                              self._settings.prefetch_batches, self._settings.limits)
            (failed if out.failed else labelled).inc()
            frames.inc(out.frames_labelled)
            yield PredictionResult(task, out, model_id=self._provenance.key)

    def get_num_bytes(self, batch: Sequence[ChunkTask]) -> int:
        return sum(len(task.ref.url) + 64 for task in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": 1, "max_batch_size": 1}


class LabelChunks(beam.PTransform):
    """ChunkTask -> (video_id, ChunkLabels), spread over the workers (Reshuffle first)."""

    def __init__(self, handler: ChunkModelHandler) -> None:
        super().__init__()
        self.handler = handler

    def expand(self, tasks: beam.PCollection) -> beam.PCollection:
        return (tasks
                | "Spread" >> beam.Reshuffle()
                | "RunInference" >> RunInference(self.handler)
                | "KeyByVideo" >> beam.Map(lambda result: (result.inference.ref.video_id, result.inference)))


def stitched_labels(parts: Sequence[ChunkLabels], provenance: Provenance,
                    stitch_settings: StitchSettings = StitchSettings()
                    ) -> tuple[VideoLabels, StitchReport | None]:
    """One video's :class:`VideoLabels` (as LabelVideos gives them) from all its chunks' results,
    and what stitching did. Never raises for a bad chunk: the video is recorded failed with the
    chunk's reason (a rerun with ``--retry-failed`` labels it again)."""
    parts = sorted(parts, key=lambda p: p.chunk.index)
    ref, last = parts[0].ref, parts[-1]  # the last chunk decoded the whole stream
    count = parts[0].chunk.count
    model_seconds = sum(p.model_seconds for p in parts)
    if [p.chunk.index for p in parts] != list(range(count)):
        return failed_labels(ref, provenance, decode.MODEL_ERROR,
                             f"{ref.url}: chunks {[p.chunk.index for p in parts]} of {count} came back",
                             model_seconds=model_seconds), None
    # chunks past the end of a video shorter than its header said got no frame: drop them, the
    # new last chunk keeps every frame it has
    while len(parts) > 1 and parts[-1].error_kind == decode.NO_FRAMES and parts[-2].frames_labelled:
        parts = parts[:-1]
    bad = next((p for p in parts if p.failed), None)
    if bad is not None:
        return failed_labels(ref, provenance, str(bad.error_kind), str(bad.error_message), bad.info,
                             bad.stats, model_seconds), None
    if len(parts) < count:
        n = len(parts)
        chunks = [replace(p.chunk, count=n) for p in parts[:-1]]
        chunks.append(replace(parts[-1].chunk, count=n, keep_end=parts[-1].chunk.end, open_end=True))
    else:
        chunks = [p.chunk for p in parts]
    result = stitch([ChunkTracks(c, p.tracks) for c, p in zip(chunks, parts)], stitch_settings)
    stats, info = last.stats, last.info
    status, kind, message = classify_decode(stats, info)
    if message is not None:
        message = f"{ref.url}: {message}"
    frames = stats.frames
    timestamps = [0.0] * frames
    for chunk, part in zip(chunks, parts):
        for offset, t in enumerate(part.timestamps):
            index = chunk.start + offset
            if index < frames and chunk.keeps(index):
                timestamps[index] = t
    height, width = parts[0].size
    figures = health(result.instances, frames)
    started = sum(p.model_stats.get("tracks_started", 0.0) for p in parts)
    row = {
        "video_id": ref.video_id, "source_url": ref.url, "status": status, "error_type": kind,
        "error_message": message, "frames_decoded": frames,
        "frames_expected": info.frames_expected if info else None,
        "frames_expected_source": info.frames_expected_source if info else None,
        "decode_errors": stats.errors, "width": stats.width, "height": stats.height,
        "rotation": stats.rotation if stats.width is not None else None,
        "fps": info.fps if info else None, "duration_s": info.duration_s if info else None,
        "codec": info.codec if info else None, "container_format": info.container_format if info else None,
        "file_bytes": info.file_bytes if info else None, "source_width": stats.source_width,
        "source_height": stats.source_height, **provenance.as_columns(),
        "decode_seconds": round(sum(p.stats.seconds for p in parts), 6),
        "model_seconds": round(model_seconds, 6), **figures, "tracker_tracks_started": int(started),
    }
    videos_table(row)  # the row is complete
    fps = info.fps if info else None
    logger.info("%s (%s): stitched %d chunks: %d tracks, %s", ref.url, ref.video_id, len(parts),
                figures["num_tracks"], result.report.as_dict())
    labels = VideoLabels(ref.video_id, row,
                         tracks_table(ref.video_id, result.instances, timestamps, fps, provenance.key,
                                      height, width),
                         summary_table(ref.video_id, result.instances, timestamps, fps, provenance.key))
    return labels, result.report


class _StitchFn(beam.DoFn):
    def __init__(self, provenance: Provenance, settings: StitchSettings) -> None:
        self.provenance = provenance
        self.settings = settings
        self.stitched = _counter("videos_stitched")
        self.matches = _counter("stitch_matches")

    def process(self, item: tuple[str, Iterable[ChunkLabels]]) -> Iterator[VideoLabels]:
        _video_id, parts = item
        labels, report = stitched_labels(list(parts), self.provenance, self.settings)
        self.stitched.inc()
        if report is not None:
            self.matches.inc(report.matched)
        yield labels


class StitchChunks(beam.PTransform):
    """(video_id, ChunkLabels) -> one :class:`VideoLabels` per video (GroupByKey, stitch)."""

    def __init__(self, provenance: Provenance, settings: StitchSettings = StitchSettings()) -> None:
        super().__init__()
        self.provenance = provenance
        self.settings = settings

    def expand(self, keyed: beam.PCollection) -> beam.PCollection:
        return (keyed
                | "GroupByVideo" >> beam.GroupByKey()
                | "Stitch" >> beam.ParDo(_StitchFn(self.provenance, self.settings)))


class LabelVideosInChunks(beam.PTransform):
    """LabelVideos with the fan-out: short videos through ``label_whole`` (the job's
    :class:`~pipeline.transforms.LabelVideos`), long ones split, labelled chunk by chunk on any
    workers and stitched; one PCollection of :class:`VideoLabels` either way."""

    def __init__(self, label_whole: beam.PTransform, chunk_handler: ChunkModelHandler,
                 chunking: ChunkSettings, provenance: Provenance,
                 storage_options: dict[str, Any] | None = None,
                 stitch_settings: StitchSettings = StitchSettings()) -> None:
        super().__init__()
        self.label_whole = label_whole
        self.chunk_handler = chunk_handler
        self.chunking = chunking
        self.provenance = provenance
        self.storage_options = dict(storage_options or {})
        self.stitch_settings = stitch_settings

    def expand(self, refs: beam.PCollection) -> beam.PCollection:
        split = refs | "SplitLongVideos" >> SplitLongVideos(self.chunking, self.storage_options,
                                                            self.chunk_handler.limits)
        whole = split.whole | "LabelVideos" >> self.label_whole
        stitched = (split[CHUNK_TAG]
                    | "LabelChunks" >> LabelChunks(self.chunk_handler)
                    | "StitchChunks" >> StitchChunks(self.provenance, self.stitch_settings))
        return (whole, stitched) | "AllVideos" >> beam.Flatten()

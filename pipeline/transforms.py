"""The label job's PTransforms, each one job with its Beam metrics counters (namespace
``daq_label``):

=====================  ==========================================================================
MatchVideos            INPUT -> video URLs (listing on a worker)           ``inputs_matched``
AssignVideoIds         URL -> VideoRef(video_id, canonical URL)             ``videos_identified``
SkipDone               drop videos OUTPUT holds as done (resume), dedupe   ``videos_already_done``,
                                                                            ``videos_to_label``,
                                                                            ``duplicate_inputs``
ClaimVideos            claim each video (pipeline/claims.py); quarantine   ``videos_claimed_elsewhere``,
                       videos started max_attempts times, never done       ``videos_done_elsewhere``,
                                                                            ``videos_quarantined``
LabelVideos            RunInference(DAQModelHandler): decode+model+RLE     (handler's counters)
WriteVideoTables       three Parquet files per video, temp then commit     ``tables_written``,
                                                                            ``rows_written_*``
MarkDone               the done marker, written last; releases the claim   ``videos_ok|partial|
                                                                            failed``, ``tracks``,
                                                                            ``error_type.<kind>``,
                                                                            ``video_ms``, ``cpu_ms``,
                                                                            distributions per video
=====================  ==========================================================================
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable, Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference

from pipeline.claims import VideoClaims
from pipeline.handler import METRICS_NAMESPACE, DAQModelHandler
from pipeline.inputs import InputSpec, VideoRef, make_ref
from pipeline.storage import OutputLayout, is_fatal_write_error
from pipeline.tables import Provenance, VideoLabels, videos_table
from schemas.tables import TABLES

logger = logging.getLogger(__name__)

#: Counter name prefix of the counts by ``videos.error_type`` (``error_type.timeout``, ...)
ERROR_TYPE_COUNTER = "error_type."

#: Target uncompressed bytes per Parquet row group (readers fetch and decode row groups whole).
ROW_GROUP_BYTES = 64 * 1024 * 1024
ROW_GROUP_MIN_ROWS = 1024


def _counter(name: str) -> Any:
    return Metrics.counter(METRICS_NAMESPACE, name)


class _ExpandInputFn(beam.DoFn):
    def __init__(self) -> None:
        self.matched = _counter("inputs_matched")

    def process(self, spec: InputSpec) -> Iterator[Any]:
        for entry in spec.entries():  # URLs, and malformed list lines kept by skip_bad_lines
            self.matched.inc()
            yield entry


class MatchVideos(beam.PTransform):
    """INPUT (glob, directory, URL list or file; see :mod:`pipeline.inputs`) -> video URLs."""

    def __init__(self, spec: InputSpec) -> None:
        super().__init__()
        self.spec = spec

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (pbegin
                | "Input" >> beam.Create([self.spec])
                | "Expand" >> beam.ParDo(_ExpandInputFn()))


class _AssignIdFn(beam.DoFn):
    def __init__(self, storage_options: dict[str, Any]) -> None:
        self.storage_options = storage_options
        self.identified = _counter("videos_identified")

    def process(self, url: Any) -> Iterator[VideoRef]:
        self.identified.inc()
        yield make_ref(url, self.storage_options)  # a URL or a BadInputLine


class AssignVideoIds(beam.PTransform):
    """URL -> :class:`VideoRef` with the stable ``video_id`` (sha256 of the canonical URL)."""

    def __init__(self, storage_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.storage_options = dict(storage_options or {})

    def expand(self, urls: beam.PCollection) -> beam.PCollection:
        return urls | "VideoId" >> beam.ParDo(_AssignIdFn(self.storage_options))


class _ListDoneFn(beam.DoFn):
    def process(self, layout: OutputLayout) -> Iterator[tuple[str, str]]:
        yield from layout.iter_done_ids()


class _KeepUndoneFn(beam.DoFn):
    def __init__(self, layout: OutputLayout, retry_failed: bool) -> None:
        self.layout = layout
        self.retry_failed = retry_failed
        self.done = _counter("videos_already_done")
        self.todo = _counter("videos_to_label")
        self.duplicates = _counter("duplicate_inputs")
        self.retried = _counter("failed_videos_retried")

    def process(self, item: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[VideoRef]:
        _video_id, grouped = item
        refs = list(grouped["video"])
        markers = list(grouped["done"])
        if len(refs) > 1:
            self.duplicates.inc(len(refs) - 1)
        if refs and markers and not (self.retry_failed and self._failed(markers[0])):
            self.done.inc()
        elif refs:  # (a marker of a video this INPUT does not name is ignored)
            if markers:
                self.retried.inc()
            self.todo.inc()
            yield refs[0]

    def _failed(self, marker_path: str) -> bool:
        try:
            return self.layout.read_json(marker_path).get("status") == "failed"
        except (OSError, ValueError):
            return True  # an unreadable marker: label again


class SkipDone(beam.PTransform):
    """Drop videos whose done marker OUTPUT holds (resume), and inputs named twice.

    Done markers are listed once and joined by ``video_id`` (CoGroupByKey), which scales to
    millions of videos. With ``retry_failed`` videos whose marker says ``failed`` are labelled
    again.
    """

    def __init__(self, layout: OutputLayout, retry_failed: bool = False) -> None:
        super().__init__()
        self.layout = layout
        self.retry_failed = retry_failed

    def expand(self, refs: beam.PCollection) -> beam.PCollection:
        keyed = refs | "KeyVideos" >> beam.Map(lambda ref: (ref.video_id, ref))
        done = (refs.pipeline
                | "OutputDir" >> beam.Create([self.layout])
                | "ListDone" >> beam.ParDo(_ListDoneFn()))
        return ({"video": keyed, "done": done}
                | "Join" >> beam.CoGroupByKey()
                | "KeepUndone" >> beam.ParDo(_KeepUndoneFn(self.layout, self.retry_failed)))


class _ClaimFn(beam.DoFn):
    def __init__(self, claims: VideoClaims, provenance: Provenance, retry_failed: bool) -> None:
        self.claims = claims
        self.provenance = provenance
        self.retry_failed = retry_failed
        self.elsewhere = _counter("videos_claimed_elsewhere")
        self.done_elsewhere = _counter("videos_done_elsewhere")
        self.quarantined = _counter("videos_quarantined")

    def process(self, ref: VideoRef) -> Iterator[Any]:
        claims = self.claims
        claimed, holder = claims.try_claim(ref.video_id)
        if not claimed:
            self.elsewhere.inc()
            logger.info("%s (%s): being labelled by job %s (%s, pid %s); skipped", ref.url,
                        ref.video_id, (holder or {}).get("job_id"), (holder or {}).get("host"),
                        (holder or {}).get("pid"))
            return
        if self._done_meanwhile(ref.video_id):  # by a job that released its claim since SkipDone
            self.done_elsewhere.inc()
            claims.release(ref.video_id)
            return
        attempts = claims.attempts(ref.video_id)
        if attempts >= claims.settings.max_attempts:
            self.quarantined.inc()
            message = (f"{ref.url}: started {attempts} time(s) without finishing (each time the "
                       "worker labelling it died); recorded failed without running it again "
                       "(--max-attempts; --retry-failed labels it again)")
            logger.error("%s (%s): quarantined: %s", ref.url, ref.video_id, message)
            # through LabelVideos like any video (recorded failed there, never run): one chain
            # of steps, so each video's results are committed as soon as it is labelled
            yield dataclasses.replace(ref, quarantined=message)
            return
        yield ref  # the attempt is recorded when its labelling starts (DAQModelHandler)

    def _done_meanwhile(self, video_id: str) -> bool:
        layout = self.claims.layout
        path = layout.done_path(video_id)
        try:
            if not layout.fs.exists(path):
                return False
            marker = layout.read_json(path)
        except (OSError, ValueError):
            return False  # an unreadable marker: label again
        if marker.get("job_id") == self.claims.job_id:
            return True
        return not (self.retry_failed and marker.get("status") == "failed")


class ClaimVideos(beam.PTransform):
    """Claim each video before it starts (concurrent jobs split the work) and quarantine videos
    that were started ``max_attempts`` times without finishing: VideoRefs to label, quarantined
    ones marked (``VideoRef.quarantined``) for LabelVideos to record failed without running."""

    def __init__(self, claims: VideoClaims, provenance: Provenance, retry_failed: bool = False) -> None:
        super().__init__()
        self.claims = claims
        self.provenance = provenance
        self.retry_failed = retry_failed

    def expand(self, refs: beam.PCollection) -> beam.PCollection:
        return refs | "Claim" >> beam.ParDo(_ClaimFn(self.claims, self.provenance, self.retry_failed))


class LabelVideos(beam.PTransform):
    """RunInference with :class:`DAQModelHandler`: VideoRef -> :class:`VideoLabels`."""

    def __init__(self, handler: DAQModelHandler) -> None:
        super().__init__()
        self.handler = handler

    def expand(self, refs: beam.PCollection) -> beam.PCollection:
        return (refs
                | "RunInference" >> RunInference(self.handler)
                | "Labels" >> beam.Map(lambda result: result.inference))


def row_group_rows(table: pa.Table) -> int:
    """Rows per row group so that a group holds about :data:`ROW_GROUP_BYTES` uncompressed."""
    if table.num_rows == 0:
        return ROW_GROUP_MIN_ROWS
    per_row = max(1, table.nbytes // table.num_rows)
    return max(ROW_GROUP_MIN_ROWS, ROW_GROUP_BYTES // per_row)


def write_parquet(layout: OutputLayout, path: str, table: pa.Table) -> int:
    """zstd Parquet, written under a temporary name and committed to ``path``."""

    def write(handle: Any) -> None:
        pq.write_table(table, handle, compression="zstd", row_group_size=row_group_rows(table),
                       write_statistics=True)

    return layout.write_atomic(path, write)


class _WriteTablesFn(beam.DoFn):
    def __init__(self, layout: OutputLayout) -> None:
        self.layout = layout
        self.tables = _counter("tables_written")
        self.bytes = _counter("bytes_written")
        self.rows = {spec.name: _counter(f"rows_written_{spec.name}") for spec in TABLES}
        self.not_written = _counter("videos_not_written")

    def process(self, labels: VideoLabels) -> Iterator[VideoLabels]:
        contents = {"tracks": labels.tracks, "track_summary": labels.track_summary,
                    "videos": videos_table(labels.video_row)}
        for spec in TABLES:  # write order: tracks, track_summary, videos
            table = contents[spec.name]
            if not table.schema.equals(spec.schema, check_metadata=True):
                raise ValueError(f"{spec.name} table of {labels.video_id} does not match schema v{spec.version}")
            path = self.layout.table_path(spec.name, labels.video_id)
            try:
                self.bytes.inc(write_parquet(self.layout, path, table))
            except OSError as exc:
                check_write_error(exc, labels.video_id, path, self.not_written)
                return  # not done: no marker, a rerun labels it again
            self.tables.inc()
            self.rows[spec.name].inc(table.num_rows)
        yield labels


class OutputWriteError(RuntimeError):
    """OUTPUT stopped taking writes (disk full, quota, read-only): the job stops."""


def check_write_error(exc: OSError, video_id: str, path: str, counter: Any) -> None:
    """A write of one video failed: stop the job on errors no retry fixes, else leave the video
    not done (counted in ``videos_not_written``) and go on."""
    counter.inc()
    if is_fatal_write_error(exc):
        raise OutputWriteError(f"OUTPUT cannot take more results: writing {path} failed "
                               f"({type(exc).__name__}: {exc}); videos written so far are kept, "
                               f"free space and rerun to label the rest") from exc
    logger.error("could not write %s (%s: %s): video %s left not done; a rerun labels it",
                 path, type(exc).__name__, exc, video_id)


class WriteVideoTables(beam.PTransform):
    """Write one video's ``tracks``, ``track_summary`` and ``videos`` files (empty track tables for
    failed videos, so a rerun replaces stale files); deterministic names per video."""

    def __init__(self, layout: OutputLayout) -> None:
        super().__init__()
        self.layout = layout

    def expand(self, labels: beam.PCollection) -> beam.PCollection:
        return labels | "WriteTables" >> beam.ParDo(_WriteTablesFn(self.layout))


class _MarkDoneFn(beam.DoFn):
    def __init__(self, layout: OutputLayout, claims: VideoClaims | None = None) -> None:
        self.layout = layout
        self.claims = claims
        self.status = {s: _counter(f"videos_{s}") for s in ("ok", "partial", "failed")}
        self.frames = _counter("frames_labelled")
        self.tracks = _counter("tracks")
        self.not_written = _counter("videos_not_written")
        self.figures = _VideoFigures()

    def process(self, labels: VideoLabels) -> Iterator[dict[str, Any]]:
        row = labels.video_row
        marker = {
            "video_id": labels.video_id,
            "source_url": row["source_url"],
            "status": row["status"],
            "error_type": row["error_type"],
            "frames_decoded": row["frames_decoded"],
            "num_tracks": row["num_tracks"],
            "provenance_key": row["provenance_key"],
            "tables": [spec.name for spec in TABLES],
            "job_id": self.claims.job_id if self.claims else None,
            # what the launcher's progress and summary read (pipeline/progress.py)
            "duration_s": row.get("duration_s"),
            "model_seconds": row.get("model_seconds"),
            "decode_seconds": row.get("decode_seconds"),
            "cpu_seconds": labels.cpu_seconds,
        }
        path = self.layout.done_path(labels.video_id)
        try:
            self.layout.write_json_atomic(path, marker)
        except OSError as exc:
            check_write_error(exc, labels.video_id, path, self.not_written)
            return
        if self.claims is not None:
            self.claims.release(labels.video_id)
        self.status[labels.status].inc()
        if row["error_type"]:
            _counter(ERROR_TYPE_COUNTER + str(row["error_type"])).inc()
        if labels.status != "failed":
            self.frames.inc(int(row["frames_decoded"]))
        self.tracks.inc(int(row["num_tracks"]))
        self.figures.update(labels)
        yield marker


class _VideoFigures:
    """Per-video Beam metrics of every video recorded done (Dataflow shows them on the job page):
    distributions ``frames_per_video``, ``tracks_per_video``, ``video_ms_per_video`` (duration),
    ``model_fps`` (frames per model second), ``cpu_ms_per_video``; counters ``video_ms``,
    ``model_ms``, ``cpu_ms`` (sums: CPU or model seconds per video-minute = cpu_ms / video_ms x 60)."""

    def __init__(self) -> None:
        dist = lambda name: Metrics.distribution(METRICS_NAMESPACE, name)  # noqa: E731
        self.frames, self.tracks = dist("frames_per_video"), dist("tracks_per_video")
        self.duration, self.fps, self.cpu = dist("video_ms_per_video"), dist("model_fps"), dist("cpu_ms_per_video")
        self.video_ms, self.model_ms, self.cpu_ms = _counter("video_ms"), _counter("model_ms"), _counter("cpu_ms")

    def update(self, labels: VideoLabels) -> None:
        row = labels.video_row
        frames = int(row["frames_decoded"]) if labels.status != "failed" else 0
        self.frames.update(frames)
        self.tracks.update(int(row["num_tracks"]))
        model_s = float(row.get("model_seconds") or 0.0)
        self.model_ms.inc(int(model_s * 1000))
        if row.get("duration_s"):
            self.duration.update(int(row["duration_s"] * 1000))
            self.video_ms.inc(int(row["duration_s"] * 1000))
        if frames and model_s > 0:
            self.fps.update(int(round(frames / model_s)))
        if labels.cpu_seconds is not None:
            self.cpu.update(int(labels.cpu_seconds * 1000))
            self.cpu_ms.inc(int(labels.cpu_seconds * 1000))


class MarkDone(beam.PTransform):
    """Write ``_done/<video_id>.json`` after the video's tables: resume skips the video. Then
    drop the video's claim and attempt markers."""

    def __init__(self, layout: OutputLayout, claims: VideoClaims | None = None) -> None:
        super().__init__()
        self.layout = layout
        self.claims = claims

    def expand(self, labels: beam.PCollection) -> beam.PCollection:
        return labels | "MarkDone" >> beam.ParDo(_MarkDoneFn(self.layout, self.claims))

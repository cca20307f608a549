"""The label job end to end: pre-flight checks, the pipeline graph, running it, the summary.

Graph::

    MatchVideos -> AssignVideoIds -> SkipDone -> Reshuffle -> LabelVideos (RunInference)
                -> WriteVideoTables -> MarkDone

Pre-flight (before any worker starts; raise :class:`JobSetupError`): INPUT exists and matches at
least one file, OUTPUT is writable and holds no labels of another provenance key, the checkpoint
and config load.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter

from pipeline.chunking import ChunkSettings
from pipeline.handler import METRICS_NAMESPACE, DAQModelHandler, load_predictor
from pipeline.claims import ClaimSettings, VideoClaims, clear_stale_tmp
from pipeline.inputs import InputError, InputSpec
from pipeline.isolation import IsolationSettings
from pipeline.labeler import LabelSettings
from pipeline.model_source import ModelSpec
from pipeline.runner import RunnerSetup
from pipeline.storage import OutputLayout
from pipeline.storage_access import describe_storage_error
from pipeline.tables import Provenance
from pipeline.transforms import ERROR_TYPE_COUNTER, ClaimVideos
from pipeline.transforms import AssignVideoIds, LabelVideos, MarkDone, MatchVideos, SkipDone, WriteVideoTables
from schemas.tables import TABLES

logger = logging.getLogger(__name__)


class JobSetupError(ValueError):
    """Unusable arguments: the job does not start."""


@dataclass
class LabelJob:
    input_url: str
    output_url: str
    model: ModelSpec
    settings: LabelSettings = field(default_factory=LabelSettings)
    device: str = "auto"
    retry_failed: bool = False
    storage_options: dict[str, Any] = field(default_factory=dict)
    skip_bad_input_lines: bool = False
    isolation: IsolationSettings = field(default_factory=IsolationSettings)
    claim_settings: ClaimSettings = field(default_factory=ClaimSettings)
    chunking: ChunkSettings = field(default_factory=ChunkSettings)  # long videos (off by default)

    def __post_init__(self) -> None:
        self.provenance: Provenance = self.model.provenance()
        self.layout = OutputLayout(self.output_url, self.storage_options)
        self.job_id = uuid.uuid4().hex[:16]  # this run: claims and done markers name it
        self.claims = VideoClaims(self.layout, self.job_id, self.claim_settings)

    # ------------------------------------------------------------------ pre-flight

    def resolve_input(self, list_input: bool = True) -> InputSpec:
        """INPUT's kind; with ``list_input`` also its first video and a URL list's lines checked
        (remote runs pass False: the listing runs in the job, not on the launcher)."""
        try:
            spec = InputSpec.resolve(self.input_url, self.storage_options, self.skip_bad_input_lines)
            if not list_input:
                logger.info("INPUT %s is a %s (listed by the job)", self.input_url, spec.kind)
                return spec
            spec.check_url_list()  # malformed lines named before anything starts
            first = spec.first_match()
        except InputError as exc:
            raise JobSetupError(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - a storage failure while listing: say which
            raise JobSetupError(describe_storage_error(exc, self.input_url, self.storage_options,
                                                       "INPUT", "cannot be listed")) from exc
        if first is None:
            what = {"glob": "matches no file", "directory": "holds no video file (by extension)",
                    "url_list": "lists no URL"}.get(spec.kind, "matches nothing")
            raise JobSetupError(f"INPUT {self.input_url!r} ({spec.kind}) {what}")
        logger.info("INPUT %s is a %s (first video: %s)", self.input_url, spec.kind, first)
        return spec

    def prepare_output(self, write: bool = True) -> None:
        """Check or record the provenance of OUTPUT; clear leftovers of killed runs. Without
        ``write`` (a dry run) only check: nothing is created, written or removed."""
        layout = self.layout
        record = {
            "provenance_key": self.provenance.key,
            **self.provenance.as_columns(),
            "checkpoint": self.model.checkpoint,
            "model_origin": self.model.origin,
            "config": self.model.config.to_dict(),
            "schemas": {spec.name: spec.version for spec in TABLES},
        }
        try:
            if write:
                layout.fs.makedirs(layout.root, exist_ok=True)
            if layout.fs.exists(layout.provenance_path):
                previous = layout.read_json(layout.provenance_path)
                if previous.get("provenance_key") != self.provenance.key:
                    raise JobSetupError(
                        f"OUTPUT {layout.url} holds labels of another model or version (provenance "
                        f"{previous.get('provenance_key')}: model {previous.get('model_name')}, checkpoint "
                        f"{str(previous.get('checkpoint_sha256'))[:12]}..., config {previous.get('config_hash')}, "
                        f"daq-label {previous.get('package_version')}); this run is {self.provenance.key}. "
                        "Write to another OUTPUT directory so labels never mix.")
            elif write:
                layout.write_json_atomic(layout.provenance_path, record)
            if not write:
                return
            removed = clear_stale_tmp(layout, self.claims)  # not what a live job is writing
            layout.check_writable()
        except JobSetupError:
            raise
        except Exception as exc:  # noqa: BLE001 - any storage failure
            raise JobSetupError(describe_storage_error(exc, self.output_url, self.storage_options,
                                                       "OUTPUT", "is not writable")) from exc
        if removed:
            logger.info("removed %d temporary file(s) left by an interrupted run", removed)

    def check_model(self) -> None:
        """Load the model once here so a bad checkpoint fails before any worker starts."""
        start = time.perf_counter()
        try:
            load_predictor(self.model, "cpu", self.storage_options)
        except Exception as exc:  # noqa: BLE001 - CheckpointError and whatever loading raises
            raise JobSetupError(f"cannot load the model from {self.model.checkpoint}: "
                                f"{type(exc).__name__}: {exc}") from exc
        logger.info("model %s loads (%.1fs); provenance key %s", self.model.model_name,
                    time.perf_counter() - start, self.provenance.key)

    # ------------------------------------------------------------------ graph

    def handler(self, torch_threads: int = 0) -> DAQModelHandler:
        return DAQModelHandler(self.model, self.provenance, self.settings, self.device, torch_threads,
                               self.isolation, self.claims)

    def label_videos(self, torch_threads: int = 0) -> beam.PTransform:
        """LabelVideos; with chunking on, long videos fan out in chunks (pipeline/chunked.py)."""
        whole = LabelVideos(self.handler(torch_threads))
        if not self.chunking.enabled:
            return whole
        from pipeline.chunked import ChunkModelHandler, LabelVideosInChunks

        chunk_handler = ChunkModelHandler(self.model, self.provenance, self.settings, self.device, torch_threads)
        return LabelVideosInChunks(whole, chunk_handler, self.chunking, self.provenance, self.storage_options)

    def build(self, pipeline: beam.Pipeline, spec: InputSpec, torch_threads: int = 0) -> beam.PCollection:
        claimed = (pipeline
                   | "MatchVideos" >> MatchVideos(spec)
                   | "AssignVideoIds" >> AssignVideoIds(self.storage_options)
                   | "SkipDone" >> SkipDone(self.layout, self.retry_failed)
                   | "Reshuffle" >> beam.Reshuffle()
                   | "ClaimVideos" >> ClaimVideos(self.claims, self.provenance, self.retry_failed))
        # one chain from here to MarkDone (no Flatten, no shuffle): Beam fuses it, so each
        # video's tables and done marker are committed as soon as it is labelled, not at the
        # end of its bundle (what a kill loses, what progress sees)
        return (claimed
                | "LabelVideos" >> self.label_videos(torch_threads)
                | "WriteVideoTables" >> WriteVideoTables(self.layout)
                | "MarkDone" >> MarkDone(self.layout, self.claims))

    def run(self, setup: RunnerSetup, check_model: bool = True) -> "JobSummary":
        spec = self.resolve_input()
        if check_model:
            self.check_model()
        self.prepare_output()
        logger.info("labelling %s -> %s on %s", self.input_url, self.layout.url, setup.description)
        start = time.perf_counter()
        pipeline = beam.Pipeline(runner=setup.runner, options=setup.options)
        self.build(pipeline, spec, setup.torch_threads)
        try:
            result = pipeline.run()
            result.wait_until_finish()
        finally:  # a run that stopped (a full disk...) leaves no claim this process still refreshes
            self.claims.abandon()
        clear_stale_tmp(self.layout, self.claims)  # what this run's killed predecessors left
        summary = JobSummary.from_result(result, time.perf_counter() - start, self.layout.url)
        return summary


@dataclass
class JobSummary:
    ok: int
    partial: int
    failed: int
    already_done: int
    frames: int
    tracks: int
    wall_s: float
    output: str
    state: str = "DONE"
    not_written: int = 0  # labelled but not stored (write errors): not done, a rerun labels them
    error_types: dict[str, int] = field(default_factory=dict)  # videos by videos.error_type
    claimed_elsewhere: int = 0  # being labelled by another job on the same OUTPUT: skipped
    quarantined: int = 0  # failed repeated_worker_crash without being run (among ``failed``)

    @classmethod
    def from_result(cls, result: Any, wall_s: float, output: str) -> "JobSummary":
        counters: dict[str, int] = {}  # committed counts where the runner has them
        try:
            query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
            for item in query["counters"]:
                value = item.committed if item.committed is not None else item.attempted
                counters[item.key.metric.name] = counters.get(item.key.metric.name, 0) + int(value or 0)
        except Exception as exc:  # noqa: BLE001 - some runners do not report metrics
            logger.warning("metrics unavailable from the runner: %s", exc)
        return cls(
            ok=counters.get("videos_ok", 0), partial=counters.get("videos_partial", 0),
            failed=counters.get("videos_failed", 0),
            already_done=counters.get("videos_already_done", 0) + counters.get("videos_done_elsewhere", 0),
            frames=counters.get("frames_labelled", 0), tracks=counters.get("tracks", 0),
            wall_s=wall_s, output=output, state=str(getattr(result, "state", "DONE")),
            not_written=counters.get("videos_not_written", 0),
            error_types={name[len(ERROR_TYPE_COUNTER):]: n for name, n in sorted(counters.items())
                         if name.startswith(ERROR_TYPE_COUNTER) and n},
            claimed_elsewhere=counters.get("videos_claimed_elsewhere", 0),
            quarantined=counters.get("videos_quarantined", 0))

    @property
    def videos(self) -> int:
        return self.ok + self.partial + self.failed

    def line(self) -> str:
        return (f"daq-label label: {self.videos} video(s) labelled (ok {self.ok}, partial {self.partial}, "
                f"failed {self.failed}), {self.already_done} already done, {self.frames} frames, "
                f"{self.tracks} tracks, {self.wall_s:.1f}s -> {self.output}"
                + (f"; {self.not_written} video(s) NOT written (write errors; rerun to label them)"
                   if self.not_written else "")
                + (f"; {self.claimed_elsewhere} video(s) skipped: another job is labelling them"
                   if self.claimed_elsewhere else "")
                + ("; by error_type: " + ", ".join(f"{k} {v}" for k, v in self.error_types.items())
                   if self.error_types else ""))

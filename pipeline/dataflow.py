"""The label job on a remote runner (Google Cloud Dataflow): GPU options, shipping our code to the
workers, submitting without listing the corpus on the launcher, and the summary after ``--wait``.

``--gpu TYPE[:N]`` becomes Beam's accelerator resource hint
``type:TYPE;count:N;install-nvidia-driver`` (Dataflow installs the NVIDIA driver on each VM), a
machine type that can hold that GPU (:data:`GPU_MACHINE_TYPES`, unless ``--machine_type`` is
given) and **one model per GPU**: ``--experiments=no_use_multiple_sdk_containers`` (one SDK
process per VM instead of one per vCPU, each of which would load the model) and
``--number_of_worker_harness_threads=1`` (one video at a time through that model). The model runs
under fp16 autocast on CUDA (``inference.precision: auto``, :mod:`daq_model.predictor`).

Workers must import this package. Either ``--sdk_container_image`` names an image built from the
repository's ``Dockerfile`` (Beam SDK image of the launcher's Beam and Python versions, CUDA
torch, PyAV, daq-label; ``--sdk_location=container`` is then implied), or, for CPU jobs,
``--extra_package dist/daq_label-<version>-py3-none-any.whl`` (or ``--setup_file``) installs our
wheel on the stock Beam image at worker start. A remote job with neither is refused: its workers
would fail on ``import pipeline``.

The launcher checks INPUT exists (one metadata call) but never lists it: the listing runs in the
job (``MatchVideos``). ``--dry_run=True`` (Beam's option) builds the job and writes nothing.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    SetupOptions,
    TestOptions,
    WorkerOptions,
)

logger = logging.getLogger(__name__)

#: Default Compute Engine machine type per GPU type (one GPU each; override with --machine_type).
GPU_MACHINE_TYPES = {
    "nvidia-l4": "g2-standard-4",
    "nvidia-tesla-t4": "n1-standard-8",
    "nvidia-tesla-p4": "n1-standard-8",
    "nvidia-tesla-v100": "n1-standard-8",
    "nvidia-tesla-p100": "n1-standard-8",
    "nvidia-tesla-a100": "a2-highgpu-1g",
    "nvidia-a100-80gb": "a2-ultragpu-1g",
}
_GPU = re.compile(r"^(?P<type>[a-z0-9-]+)(?::(?P<count>\d+))?$")
CONSOLE_URL = "https://console.cloud.google.com/dataflow/jobs/{region}/{job_id}?project={project}"


class RemoteSetupError(ValueError):
    """The remote job cannot be built as asked (exit 2)."""


@dataclass(frozen=True)
class GpuRequest:
    """``--gpu TYPE[:N]``: the accelerator type (Dataflow's name) and the count per worker."""

    type: str
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> "GpuRequest":
        match = _GPU.match(text.strip().lower())
        if not match:
            raise RemoteSetupError(f"--gpu {text!r}: expected TYPE[:N], e.g. nvidia-l4 or nvidia-tesla-t4:1")
        count = int(match.group("count") or 1)
        if count != 1:
            raise RemoteSetupError(
                f"--gpu {text!r}: one GPU per worker only (the job runs one model in one SDK process "
                "per worker VM); ask for more workers (--max_num_workers) instead of more GPUs per worker")
        return cls(match.group("type"), count)

    @property
    def resource_hint(self) -> str:
        return f"type:{self.type};count:{self.count};install-nvidia-driver"

    def machine_type(self) -> str:
        try:
            return GPU_MACHINE_TYPES[self.type]
        except KeyError:
            raise RemoteSetupError(
                f"--gpu {self.type}: no default machine type for it; pass --machine_type "
                f"(known: {', '.join(sorted(GPU_MACHINE_TYPES))})") from None


#: ``--runner`` values (lower case) of Google Cloud Dataflow
DATAFLOW_RUNNERS = ("dataflowrunner", "apache_beam.runners.dataflow.dataflow_runner.dataflowrunner")
#: the container image options (the second is Beam's deprecated alias)
IMAGE_OPTIONS = ("sdk_container_image", "worker_harness_container_image")


def is_dataflow(runner: str | None) -> bool:
    return (runner or "").lower() in DATAFLOW_RUNNERS


def _has_option(beam_args: Sequence[str], *names: str) -> bool:
    return any(arg == f"--{n}" or arg.startswith(f"--{n}=") for arg in beam_args for n in names)


def remote_beam_args(beam_args: Sequence[str], gpu_text: str | None) -> list[str]:
    """``beam_args`` plus what a remote label job needs: the GPU hint, machine type and one model
    per GPU for ``--gpu``; ``--sdk_location=container`` with a custom container. Options the user
    gave win. Other runners get ``beam_args`` unchanged (``--gpu`` is refused there)."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    args = list(beam_args)
    runner = PipelineOptions(args).view_as(StandardOptions).runner or "DirectRunner"
    if not is_dataflow(runner):
        if gpu_text:
            raise RemoteSetupError(f"--gpu is for the Dataflow runner, not {runner}; elsewhere the "
                                   "workers use their own GPU with --device cuda (or auto)")
        return args
    gpu = GpuRequest.parse(gpu_text) if gpu_text else None
    if gpu is not None:
        if not _has_option(args, *IMAGE_OPTIONS):
            raise RemoteSetupError("--gpu needs --sdk_container_image (an image built from the "
                                   "Dockerfile: CUDA torch and daq-label; see docs/dataflow.md)")
        if _has_option(args, "resource_hints", "resource_hint"):
            raise RemoteSetupError("--gpu and --resource_hints both given: use one of them")
        args.append(f"--resource_hints=accelerator={gpu.resource_hint}")
        if not _has_option(args, "machine_type", "worker_machine_type"):
            args.append(f"--machine_type={gpu.machine_type()}")
        if not _has_option(args, "number_of_worker_harness_threads"):
            args.append("--number_of_worker_harness_threads=1")
        args.append("--experiments=no_use_multiple_sdk_containers")
    if _has_option(args, *IMAGE_OPTIONS) and not _has_option(args, "sdk_location"):
        args.append("--sdk_location=container")
    return args


def check_workers_get_the_package(options: Any) -> None:
    """Refuse a Dataflow job whose workers would not have daq-label installed (other remote
    runners, Flink or Spark, may run on nodes that have it: not checked)."""
    from apache_beam.options.pipeline_options import StandardOptions

    if not is_dataflow(options.view_as(StandardOptions).runner):
        return
    setup = options.view_as(SetupOptions)
    worker = options.view_as(WorkerOptions)
    image = worker.sdk_container_image or getattr(worker, "worker_harness_container_image", None)
    if image or setup.setup_file or setup.extra_packages:
        return
    raise RemoteSetupError(
        "a remote runner needs daq-label on its workers: pass --sdk_container_image IMAGE (built "
        "from the repository's Dockerfile; required for --gpu) or, for CPU jobs, --extra_package "
        "dist/daq_label-<version>-py3-none-any.whl (see docs/dataflow.md)")


def is_dry_run(options: Any) -> bool:
    return bool(options.view_as(TestOptions).dry_run)


def console_url(options: Any, job_id: str) -> str:
    cloud = options.view_as(GoogleCloudOptions)
    return CONSOLE_URL.format(region=cloud.region, job_id=job_id, project=cloud.project)


@dataclass(frozen=True)
class RemoteResult:
    """What a remote submission gave: the runner's result, the job id (None for a dry run)."""

    result: Any
    job_id: str | None
    url: str | None
    dry_run: bool


def submit(job: Any, setup: Any, check_model: bool = True) -> RemoteResult:
    """Pre-flight (INPUT exists, the model loads, OUTPUT's provenance), then build and submit the
    job. A dry run checks OUTPUT without writing to it."""
    check_workers_get_the_package(setup.options)
    dry_run = is_dry_run(setup.options)
    spec = job.resolve_input(list_input=False)
    if check_model:
        job.check_model()
    job.prepare_output(write=not dry_run)
    pipeline = beam.Pipeline(options=setup.options)
    job.build(pipeline, spec, setup.torch_threads)
    logger.info("submitting %s -> %s on %s%s", job.input_url, job.layout.url, setup.description,
                " (dry run: nothing submitted, nothing written)" if dry_run else "")
    result = pipeline.run()
    if dry_run:
        return RemoteResult(result, None, None, True)
    job_id = result.job_id() if hasattr(result, "job_id") else None
    return RemoteResult(result, job_id, console_url(setup.options, job_id) if job_id else None, False)


def summary_from_output(layout: Any, wall_s: float, state: str) -> Any:
    """A :class:`pipeline.job.JobSummary` of everything OUTPUT holds, read from its ``videos``
    table (one small file per video, read as one Arrow dataset: the four columns needed, files
    in parallel; a remote runner's metrics are not needed)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from pipeline.job import JobSummary
    from pipeline.storage import join
    from schemas.tables import table_spec

    directory = join(layout.root, "videos")
    counts = {"ok": 0, "partial": 0, "failed": 0}
    error_types: dict[str, int] = {}
    frames = tracks = 0
    if layout.fs.exists(directory):
        table = ds.dataset(directory, schema=table_spec("videos").schema, format="parquet",
                           filesystem=layout.fs).to_table(
            columns=["status", "error_type", "frames_decoded", "num_tracks"])
        for column, into in (("status", counts), ("error_type", error_types)):
            for item in pc.value_counts(table[column].drop_null()).to_pylist():
                into[item["values"]] = into.get(item["values"], 0) + item["counts"]
        frames = int(pc.sum(table["frames_decoded"]).as_py() or 0)
        tracks = int(pc.sum(table["num_tracks"]).as_py() or 0)
    return JobSummary(ok=counts["ok"], partial=counts["partial"], failed=counts["failed"], already_done=0,
                      frames=frames, tracks=tracks, wall_s=wall_s, output=layout.url, state=state,
                      error_types=error_types)


def wait_and_summarise(job: Any, remote: RemoteResult) -> Any:
    """Wait for the remote job to finish, then summarise OUTPUT from its tables. A job that
    ends failed or cancelled (Beam's Dataflow result raises then) is summarised all the same:
    OUTPUT holds what its workers finished."""
    start = time.perf_counter()
    try:
        remote.result.wait_until_finish()
    except Exception as exc:  # noqa: BLE001 - the runner reports a failed job by raising
        logger.error("remote job %s did not succeed: %s", remote.job_id, str(exc).splitlines()[0] if str(exc) else
                     type(exc).__name__)
    state = str(getattr(remote.result, "state", "UNKNOWN"))
    return summary_from_output(job.layout, time.perf_counter() - start, state)

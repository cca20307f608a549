"""Beam runner choice and pipeline options for the label job.

Every Beam pipeline option passes through unchanged (``--runner DataflowRunner --project ...``
builds the same graph). When the runner is Beam's default ``DirectRunner``, we do not let Beam
pick: Beam 2.77's ``DirectRunner`` first tries the Prism runner, which downloads a binary from
GitHub (an offline machine fails or waits on that), then falls back. We run the same pipeline on
Beam's in-process portable runner, ``FnApiRunner`` (what the DirectRunner falls back to), with
``--direct_running_mode multi_processing`` and one SDK worker process per available core unless
the options say otherwise; each worker process loads the model once and runs PyTorch with
``cores / workers`` threads.

``--runner DaskRunner --dask_client_address tcp://HOST:8786`` runs the job on a Dask cluster with
:class:`pipeline.dask_runner.DaskClusterRunner` (Beam's DaskRunner made able to run this graph;
``pip install 'daq-label[dask]'``). Like the local runner, the launcher waits for it and prints
the summary. Every other runner (Dataflow) is a remote service the job is submitted to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    WorkerOptions,
)

LOCAL_RUNNERS = ("directrunner", "switchingdirectrunner", "fnapirunner")
#: ``--runner`` values (lower case) that run the job on a Dask cluster (pipeline/dask_runner.py)
DASK_RUNNERS = ("daskrunner", "apache_beam.runners.dask.dask_runner.daskrunner",
                "pipeline.dask_runner.daskclusterrunner")
DASK_INSTALL_HINT = "pip install 'daq-label[dask]'"


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def runner_name(beam_args: Sequence[str]) -> str:
    """The ``--runner`` the arguments name (Beam's default: DirectRunner)."""
    return PipelineOptions(list(beam_args)).view_as(StandardOptions).runner or "DirectRunner"


def register_runner_options(beam_args: Sequence[str]) -> None:
    """Import the options of the runner the arguments name where Beam does not know them by
    default (the Dask options: ``--dask_client_address`` ...), so that they parse. ValueError
    when that runner is not installed."""
    if runner_name(beam_args).lower() not in DASK_RUNNERS:
        return
    try:
        import dask.distributed  # noqa: F401  (Beam's Dask module skips it silently when missing)
        from apache_beam.runners.dask import dask_runner  # noqa: F401  (registers DaskOptions)
    except ImportError as exc:
        raise ValueError(f"--runner DaskRunner needs Dask: {DASK_INSTALL_HINT} ({exc})") from None


@dataclass
class RunnerSetup:
    """Options, the runner object to pass to ``beam.Pipeline`` (None: Beam creates it from the
    options) and a description for logs. ``local``: the launcher runs the pipeline and waits for
    it (the local FnApiRunner, a Dask cluster); False: the job is submitted to a service
    (Dataflow)."""

    options: PipelineOptions
    runner: Any
    local: bool
    workers: int
    torch_threads: int
    description: str


def runner_setup(beam_args: Sequence[str], workers: int | None = None, log_level: str = "INFO") -> RunnerSetup:
    """Pipeline options from pass-through Beam arguments; for local runs, an explicit
    ``FnApiRunner`` using the available cores (``workers`` overrides the worker count).
    ``log_level``: of our loggers in the SDK worker processes."""
    register_runner_options(beam_args)
    options = PipelineOptions(list(beam_args))
    explicit = options.get_all_options(drop_default=True)
    name = options.view_as(StandardOptions).runner or "DirectRunner"
    if name.lower() in DASK_RUNNERS:
        return _dask_setup(options, workers)
    if name.lower() not in LOCAL_RUNNERS:
        return RunnerSetup(options, None, False, 0, 0, f"{name} (from the pipeline options)")
    if options.view_as(StandardOptions).streaming:
        raise ValueError("the label job is a batch job; --streaming is not supported locally")
    direct = options.view_as(DirectOptions)
    cores = available_cores()
    if workers is not None:
        direct.direct_num_workers = workers
    elif "direct_num_workers" not in explicit:
        direct.direct_num_workers = cores
    n = max(1, int(direct.direct_num_workers or 1))
    if "direct_running_mode" not in explicit:
        direct.direct_running_mode = "multi_processing" if n > 1 else "in_memory"
    if direct.direct_running_mode == "in_memory":
        n = 1  # the in-memory mode runs one worker whatever the count says
    threads = max(1, cores // n)
    if "default_sdk_harness_log_level" not in explicit:  # Beam's per-bundle INFO chatter off
        options.view_as(WorkerOptions).default_sdk_harness_log_level = "WARNING"
        if "sdk_harness_log_level_overrides" not in explicit:
            options.view_as(WorkerOptions).sdk_harness_log_level_overrides = {
                "pipeline": log_level, "daq_model": log_level}
    return RunnerSetup(
        options, _fnapi_runner(options), True, n, threads,
        f"FnApiRunner (local, {direct.direct_running_mode}, {n} worker(s) x {threads} torch thread(s))")



def _dask_setup(options: PipelineOptions, workers: int | None) -> RunnerSetup:
    """The Dask cluster runner; its workers are the cluster's (Dask's nanny gives each worker
    process one OpenMP/MKL thread unless the cluster says otherwise)."""
    if workers is not None:
        raise ValueError("--workers is for the local runner; a Dask cluster has its own workers "
                         "(dask worker --nworkers N --nthreads 1)")
    if options.view_as(StandardOptions).streaming:
        raise ValueError("the label job is a batch job; --streaming is not supported on Dask")
    from apache_beam.runners.dask.dask_runner import DaskOptions

    from pipeline.dask_runner import DaskClusterRunner

    address = options.view_as(DaskOptions).address
    where = address or "a LocalCluster started for this run"
    return RunnerSetup(options, DaskClusterRunner(), True, 0, 0, f"DaskRunner (Dask cluster: {where})")


def _fnapi_runner(options: PipelineOptions) -> Any:
    """An FnApiRunner that hands the pipeline options to its SDK worker processes, as Beam's
    DirectRunner does when it falls back to it (a bare FnApiRunner starts them without)."""
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return fn_runner.FnApiRunner(provision_info=info)

"""Progress, log levels and the end-of-run summary of ``daq-label label`` (local runs).

A tqdm bar on a terminal, plain log lines every ``--progress-every`` seconds otherwise, nothing
with ``--quiet``; both come from :class:`pipeline.progress.OutputWatcher`, which watches OUTPUT's
done markers while the pipeline runs. The summary (:class:`pipeline.run_summary.RunFigures`)
goes to stdout before the job's one-line summary, which stays the last line (``--quiet``: that
line only).
"""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import nullcontext
from typing import Any, TextIO

logger = logging.getLogger("jobs.label")

OUR_LOGGERS = ("jobs", "pipeline", "daq_model", "schemas")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    out = parser.add_argument_group("progress and summary")
    loudness = out.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true",
                          help="only warnings, errors and the final summary line (no progress)")
    loudness.add_argument("--verbose", dest="debug", action="store_true",
                          help="DEBUG logging from our modules, in the launcher and the workers")
    out.add_argument("--progress-every", type=float, metavar="S", default=30.0,
                     help="when stderr is not a terminal: a progress line every S seconds "
                          "(default: 30; on a terminal a progress bar)")
    out.add_argument("--cost-per-hour", type=float, metavar="USD",
                     help="price of one CPU-hour (GPU-hour on a GPU): the summary's projected "
                          "cost of the whole corpus gets a dollar figure")


def check_arguments(args: argparse.Namespace) -> str | None:
    if not args.progress_every > 0:
        return "--progress-every must be > 0"
    if args.cost_per_hour is not None and not args.cost_per_hour >= 0:
        return "--cost-per-hour must be >= 0"
    return None


def show_bar(args: argparse.Namespace, stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    return not args.quiet and bool(getattr(stream, "isatty", lambda: False)())


def worker_log_level(args: argparse.Namespace) -> str:
    """Our loggers' level in the workers and the model processes: a bar replaces their
    per-video INFO lines (which would break it)."""
    if args.debug:
        return "DEBUG"
    if args.quiet or show_bar(args):
        return "WARNING"
    return "INFO"


def set_launcher_log_level(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else None
    if level is not None:
        for name in OUR_LOGGERS:
            logging.getLogger(name).setLevel(level)


def cost_basis(device: str) -> str:
    """``gpu`` where the model runs on CUDA (cost in GPU-hours of model time), else ``cpu``."""
    from pipeline.isolation import resolve_device

    try:
        return "gpu" if resolve_device(device).startswith("cuda") else "cpu"
    except Exception:  # noqa: BLE001 - no torch CUDA build: CPU
        return "cpu"


def run_watched(job: Any, setup: Any, args: argparse.Namespace, stream: TextIO | None = None) -> tuple[Any, Any]:
    """Run the job with progress; the JobSummary and the RunFigures of the summary."""
    from pipeline.progress import BarReporter, LogReporter, OutputWatcher, input_video_ids
    from pipeline.run_summary import RunFigures

    stream = stream or sys.stderr
    redirect: Any = nullcontext()
    reporter: Any = None
    if show_bar(args, stream):
        from tqdm.contrib.logging import logging_redirect_tqdm

        reporter = BarReporter(stream)
        redirect = logging_redirect_tqdm()  # our log lines above the bar, not through it
    elif not args.quiet:
        reporter = LogReporter(logger, args.progress_every)
    # --quiet: no total (INPUT not listed), the markers still read for the summary's figures
    listing = None if args.quiet else (
        lambda: input_video_ids(job.input_url, job.storage_options, job.skip_bad_input_lines))
    watcher: Any = OutputWatcher(job.layout, job.job_id, listing, retry_failed=job.retry_failed,
                                 reporter=reporter)
    logger.debug("progress: watching %s every %.1fs (%s)", job.layout.done_dir, watcher.interval_s,
                 type(reporter).__name__ if reporter is not None else "no reporter: --quiet")
    with redirect:
        try:
            watcher.start()
        except Exception as exc:  # noqa: BLE001 - no progress; the job says what is wrong
            logger.debug("progress unavailable: %s", exc)
            if reporter is not None:
                reporter.close(None, report=False)
            watcher = None
        try:
            summary = job.run(setup, check_model=not args.skip_model_check)
        except BaseException:
            if watcher is not None:
                watcher.stop(report=False)
            raise
        records = watcher.stop().records if watcher is not None else {}
    figures = RunFigures.collect(summary, records.values(), cost_basis(job.device), args.cost_per_hour)
    return summary, figures


def print_summary(summary: Any, figures: Any, args: argparse.Namespace) -> None:
    if not args.quiet:
        for line in figures.lines():
            print(line)
    print(summary.line())

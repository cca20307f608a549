"""``daq-label label INPUT OUTPUT [options] [Beam pipeline options]``: the label job.

Builds and runs the Beam pipeline of :mod:`pipeline.job`. Options this command does not know are
Beam pipeline options and pass through unchanged (``--runner DataflowRunner --project ...``);
put them after INPUT OUTPUT, or write them as ``--name=value``.

Exit status: 0 when the job ran to the end (videos that failed are recorded in ``videos/`` with
the reason; the summary line gives the counts by status and error_type), or 1 with
``--max-failed-fraction F`` when more than F of the videos this run labelled failed;
2 for unusable arguments (INPUT matches nothing, bad checkpoint or config, OUTPUT of another
model, unknown options), checked before any worker starts; 1 if the pipeline itself failed.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from jobs import label_progress

from jobs.label_limits import add_limit_arguments, limits_from_args

logger = logging.getLogger(__name__)

EPILOG = """\
INPUT is a glob (quote it), a directory (its video files, recursively), a text file of URLs
(*.txt, *.list, *.lst, *.urls: one URL or path per line) or one video file, on any fsspec
filesystem (local, gs://, s3://). OUTPUT is a directory URL; it receives tracks/, track_summary/,
videos/ (zstd Parquet, one file per video and table) and _done/ markers.

Reruns skip videos already done (resume) and replace, never duplicate, what they rewrite.

Beam: the default runs locally on Beam's in-process FnApiRunner, one worker process per core
(never Beam's Prism download). Any Beam pipeline option passes through, e.g.
  daq-label label 'gs://b/videos/*.mp4' gs://b/labels --checkpoint gs://b/m.pt --config c.yaml \\
      --runner DataflowRunner --project P --region R --temp_location gs://b/tmp

Examples:
  daq-label label samples/videos out/samples            # the bundled corpus and model
  daq-label label videos.txt out/labels --workers 2 --skip-bad-input-lines
  daq-label label clips/ out/ovis --checkpoint model_ovis_offline_r50.pth --config ovis_offline_r50
  daq-label label samples/videos out/samples --cost-per-hour 0.05   # corpus cost projected in the summary

Progress: a bar on a terminal, else a log line every --progress-every seconds. The run ends with
a summary (counts by status and error_type, frames, tracks, wall time, CPU-seconds per
video-minute, the whole corpus's CPU-hours projected from this run) and the one-line summary.

The bundled model was trained on synthetic shapes only: on real footage it shows the pipeline
working, not useful labels. Pass an official DVIS-DAQ checkpoint for real labels.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("input", metavar="INPUT", help="glob, directory, URL-list file or video file")
    parser.add_argument("output", metavar="OUTPUT", help="output directory URL")
    model = parser.add_argument_group("model")
    model.add_argument("--checkpoint", metavar="PATH|URL",
                       help="model weights (default: the model shipped with daq-label)")
    model.add_argument("--config", metavar="PRESET|YAML",
                       help="model config: a preset name or a yaml file (default: the shipped "
                            "model's, or the one stored in the checkpoint)")
    model.add_argument("--no-merge-fragments", action="store_true",
                       help="official post-processing: do not merge the instances that follow one "
                            "object in turn, even where the config does (the shipped model's does)")
    model.add_argument("--model-name", help="model name recorded in every row (default: the shipped model's name, else the config name)")
    model.add_argument("--device", default="auto",
                       help="torch device for the model: auto (CUDA if present), cpu, cuda, cuda:N")
    storage = parser.add_argument_group("storage")
    storage.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                         help="fsspec option for INPUT, OUTPUT and the checkpoint (repeatable; "
                              "VALUE parsed as JSON where it parses), e.g. project=P, "
                              "requester_pays=true, 'client_kwargs={\"endpoint_url\": \"http://...\"}'")
    run = parser.add_argument_group("run")
    run.add_argument("--workers", type=int, metavar="N",
                     help="local runs: worker processes, each loading the model once "
                          "(default: one per available core)")
    run.add_argument("--torch-threads", type=int, metavar="N",
                     help="local runs: PyTorch threads per worker process (default: cores / workers)")
    run.add_argument("--frames-per-push", type=int, metavar="N",
                     help="frames decoded per batch pushed to the model (default: the config's "
                          "inference.frame_batch_size); bounds decode memory")
    run.add_argument("--retry-failed", action="store_true",
                     help="label again videos whose done marker says failed")
    run.add_argument("--skip-bad-input-lines", action="store_true",
                     help="URL lists: record malformed lines as failed videos (error_type "
                          "bad_input_line) instead of refusing to start (default: exit 2 naming them)")
    run.add_argument("--skip-model-check", action="store_true",
                     help="do not load the model once before starting (faster start; a bad "
                          "checkpoint then fails on the workers)")
    label_progress.add_arguments(parser)
    long_videos = parser.add_argument_group("long videos (docs/long_videos.md)")
    long_videos.add_argument("--chunk-frames", type=int, metavar="N", default=0,
                             help="label a video whose header says it has more than N frames as "
                                  "overlapping chunks of at most N frames on any workers, stitched "
                                  "back by track (default: 0, never; e.g. 3000)")
    long_videos.add_argument("--chunk-overlap", type=int, metavar="O", default=16,
                             help="frames shared by consecutive chunks, where tracks are matched "
                                  "(default: 16; --chunk-frames must be >= 3 x O)")
    add_limit_arguments(parser)
    isolation = parser.add_argument_group("isolation (docs/reliability.md)")
    isolation.add_argument("--no-isolation", action="store_true",
                           help="decode and run the model in the worker process itself (default: in "
                                "a child process per worker, so a crash or hang fails one video only)")
    isolation.add_argument("--video-timeout", type=float, metavar="S", default=600.0,
                           help="time limit of a video: S seconds plus --video-timeout-per-second "
                                "per second of video (default: 600)")
    isolation.add_argument("--video-timeout-per-second", type=float, metavar="K", default=60.0,
                           help="seconds allowed per second of video (default: 60); a video whose "
                                "header gives no length gets 3 hours")
    isolation.add_argument("--max-attempts", type=int, metavar="N", default=2,
                           help="a video started N times without finishing (its worker died each "
                                "time) is recorded failed, repeated_worker_crash, and not run again "
                                "(default: 2)")
    isolation.add_argument("--claim-ttl", type=float, metavar="S", default=600.0,
                           help="a job claims each video before labelling it, refreshed while it "
                                "works; a claim not refreshed for S seconds lapses (default: 600)")
    isolation.add_argument("--max-failed-fraction", type=float, metavar="F",
                           help="exit 1 (after writing everything) when more than this fraction "
                                "of the videos labelled by this run failed (default: exit 0)")
    remote = parser.add_argument_group("remote runners (Dataflow; see docs/dataflow.md)")
    remote.add_argument("--gpu", metavar="TYPE[:N]",
                        help="GPU workers, e.g. nvidia-l4 or nvidia-tesla-t4: the accelerator "
                             "resource hint (driver installed), a machine type for it, one model "
                             "per GPU; needs --sdk_container_image")
    remote.add_argument("--wait", action="store_true",
                        help="wait for the remote job to finish, then print the summary of OUTPUT "
                             "(default: print the job id and console URL and return)")
    # Unknown options are Beam pipeline options: keep them instead of failing (Beam's own
    # parse_known_args pattern, applied to this sub-command only).
    parse_known = parser.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = parse_known(args, namespace)
        ns.beam_args = list(getattr(ns, "beam_args", None) or []) + list(extras)
        return ns, []

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _unknown_beam_args(beam_args: list[str]) -> list[str]:
    """Arguments that are no Beam pipeline option either (typos of ours, stray words)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(beam_args)
    known = set(options.get_all_options(drop_default=True))
    everything = set(options.get_all_options(drop_default=True, retain_unknown_options=True))
    unknown = [f"--{name}" for name in sorted(everything - known)]
    if beam_args and not beam_args[0].startswith("-"):
        unknown.insert(0, beam_args[0])
    return unknown


def run(args: argparse.Namespace) -> int:
    from pipeline.claims import ClaimSettings
    from pipeline.chunking import ChunkSettings
    from pipeline.isolation import IsolationSettings
    from pipeline.job import JobSetupError, LabelJob
    from pipeline.labeler import LabelSettings
    from pipeline.model_source import ModelSourceError, resolve_model, without_fragment_merging
    from pipeline.runner import register_runner_options, runner_setup
    from pipeline.dataflow import remote_beam_args
    from pipeline.storage_access import parse_storage_options, quiet_storage_tracebacks

    beam_args = list(getattr(args, "beam_args", []) or [])
    try:
        register_runner_options(beam_args)  # --dask_client_address ... parse with --runner DaskRunner
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    unknown = _unknown_beam_args(beam_args)
    if unknown:
        logger.error("unknown option(s) %s: neither a 'daq-label label' option nor a Beam pipeline "
                     "option (see daq-label label --help)", " ".join(unknown))
        return 2
    for name in ("workers", "torch_threads", "frames_per_push"):
        value = getattr(args, name)
        if value is not None and value < 1:
            logger.error("--%s must be >= 1", name.replace("_", "-"))
            return 2
    if args.max_failed_fraction is not None and not 0 <= args.max_failed_fraction <= 1:
        logger.error("--max-failed-fraction must be between 0 and 1")
        return 2
    problem = label_progress.check_arguments(args)
    if problem:
        logger.error("%s", problem)
        return 2
    label_progress.set_launcher_log_level(args)
    worker_log_level = label_progress.worker_log_level(args)
    quiet_storage_tracebacks()
    try:
        storage_options = parse_storage_options(args.storage_option)
        beam_args = remote_beam_args(beam_args, args.gpu)
        setup = runner_setup(beam_args, args.workers, worker_log_level)
        spec = resolve_model(args.checkpoint, args.config, args.model_name, storage_options)
        if args.no_merge_fragments:
            spec = without_fragment_merging(spec)
        push = args.frames_per_push or max(1, spec.config.inference.frame_batch_size)
        if args.torch_threads:
            setup.torch_threads = args.torch_threads
        settings = LabelSettings(frames_per_push=push, storage_options=tuple(sorted(storage_options.items())),
                                 limits=limits_from_args(args), chunked=args.chunk_frames > 0)
        job = LabelJob(args.input, args.output, spec, settings,
                       device=args.device, retry_failed=args.retry_failed,
                       skip_bad_input_lines=args.skip_bad_input_lines, storage_options=storage_options,
                       chunking=ChunkSettings(args.chunk_frames, args.chunk_overlap),
                       isolation=IsolationSettings(not args.no_isolation, args.video_timeout,
                                                   args.video_timeout_per_second,
                                                   log_level=worker_log_level),
                       claim_settings=ClaimSettings(args.claim_ttl, args.max_attempts))
    except (JobSetupError, ModelSourceError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    if not setup.local:
        return _run_remote(job, setup, args)
    # worker logs reach stderr directly; Beam's relayed copies are duplicates
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
    try:
        summary, figures = label_progress.run_watched(job, setup, args)
    except (JobSetupError, ModelSourceError) as exc:
        logger.error("%s", exc)
        return 2
    except Exception as exc:  # noqa: BLE001 - the pipeline itself failed
        reason = _output_write_failure(exc)
        if reason:  # a full or read-only OUTPUT: one clear line, no worker traceback
            logger.error("the label job stopped: %s", reason)
        else:
            logger.exception("the label job failed")
        return 1
    label_progress.print_summary(summary, figures, args)
    if summary.not_written:
        return 1
    if args.max_failed_fraction is not None and summary.videos \
            and summary.failed / summary.videos > args.max_failed_fraction:
        logger.error("%d of %d video(s) failed (%.1f%%), more than --max-failed-fraction %g: exit 1 "
                     "(everything is written; see videos/ for the reasons)", summary.failed,
                     summary.videos, 100 * summary.failed / summary.videos, args.max_failed_fraction)
        return 1
    return 0


def _output_write_failure(exc: BaseException) -> str | None:
    """The message of the :class:`OutputWriteError` that stopped the job, if one did (runners
    re-raise worker errors wrapped, sometimes only as text)."""
    from pipeline.transforms import OutputWriteError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OutputWriteError):
            return str(current)
        current = current.__cause__ or current.__context__
    for line in str(exc).splitlines():
        if "OutputWriteError: " in line:
            return line.split("OutputWriteError: ", 1)[1].strip()
    return None


def _run_remote(job: Any, setup: Any, args: argparse.Namespace) -> int:
    """Submit to a remote runner (Dataflow): print the job id and console URL; with --wait, wait
    and print the summary read from OUTPUT's tables."""
    from pipeline.dataflow import RemoteSetupError, submit, wait_and_summarise
    from pipeline.job import JobSetupError
    from pipeline.model_source import ModelSourceError

    try:
        remote = submit(job, setup, check_model=not args.skip_model_check)
    except (JobSetupError, ModelSourceError, RemoteSetupError) as exc:
        logger.error("%s", exc)
        return 2
    except Exception:  # noqa: BLE001 - building or submitting the job failed
        logger.exception("submitting the label job failed")
        return 1
    if remote.dry_run:
        print(f"daq-label label: dry run: the {setup.description} job was built, not submitted; "
              f"nothing written to {job.layout.url}")
        return 0
    print(f"daq-label label: submitted job {remote.job_id or '(no id)'}"
          + (f": {remote.url}" if remote.url else ""))
    if not args.wait:
        return 0
    summary = wait_and_summarise(job, remote)
    print(f"daq-label label: job {remote.job_id} finished {summary.state}; {job.layout.url} holds "
          f"{summary.videos} video(s) (ok {summary.ok}, partial {summary.partial}, failed "
          f"{summary.failed}), {summary.frames} frames, {summary.tracks} tracks")
    return 0 if summary.state.endswith("DONE") else 1

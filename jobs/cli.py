"""``daq-label``: one console script, one sub-command per job.

Each sub-command lives in its own module under ``jobs/`` exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``--help`` is fast and
a broken optional dependency of one command does not break the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

# (command, module, one-line help)
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("label", "jobs.label", "label a video corpus: Beam pipeline from videos to Parquet track tables"),
    ("validate", "jobs.validate", "check every table under an output directory against its schema"),
    ("export", "jobs.export", "write the labels as YouTube-VIS, MOTS, CVAT or Label Studio files"),
    ("review", "jobs.review", "export the least confident videos or tracks first, for human correction"),
    ("report", "jobs.report", "write one self-contained HTML page on an output: status, health, thumbnails"),
    ("preview", "jobs.preview", "render one video with its mask overlays as an MP4 and a contact-sheet PNG"),
    ("reference-run", "jobs.reference_run", "run DVIS-DAQ on a reference case and write all its arrays"),
    ("train", "jobs.train", "train a DVIS-DAQ model (segmenter, tracker, refiner stages)"),
    ("evaluate", "jobs.evaluate", "YouTube-VIS video AP of predictions against ground truth"),
    ("synth", "jobs.synth", "generate a synthetic video dataset in YouTube-VIS format"),
    ("predict", "jobs.predict", "run a model over a YouTube-VIS-format folder, write predictions JSON"),
)


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("daq-label")
    except Exception:  # not installed (running from a source tree)
        return "0+unknown"


def build_parser(load_commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daq-label",
        description="Pseudo-label videos with DVIS-DAQ instance-segmentation tracks, at scale.",
    )
    parser.add_argument("--version", action="version", version=f"daq-label {_package_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-v: info from every module, -vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        if load_commands is None or name in load_commands:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
    return parser


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Our own progress lines are INFO: show them by default.
    for ours in ("jobs", "pipeline", "daq_model", "schemas"):
        logging.getLogger(ours).setLevel(min(level, logging.INFO))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only import the module of the command being run; top-level --help lists commands only.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser([chosen] if chosen else [])
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _setup_logging(args.verbose)
    module = importlib.import_module(args._module)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""``daq-label validate OUTPUT``: check every table file of a label job against its schema.

Exit status 0 when every file conforms (warnings, e.g. videos still being written, do not fail
it), 1 when any file does not, 2 when OUTPUT does not exist.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)

MAX_LISTED = 50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", metavar="OUTPUT", help="output directory URL of a label job")
    parser.add_argument("--deep", action="store_true",
                        help="also decode every mask RLE and check its size, area and box")
    parser.add_argument("--threads", type=int, default=8, help="files checked in parallel (I/O)")
    parser.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                        help="fsspec option for OUTPUT (repeatable; VALUE parsed as JSON where it "
                             "parses), as for daq-label label")


def run(args: argparse.Namespace) -> int:
    from pipeline.storage import url_to_fs
    from pipeline.storage_access import (describe_storage_error, parse_storage_options,
                                         quiet_storage_tracebacks)
    from schemas.validate import validate_output

    quiet_storage_tracebacks()
    try:
        options = parse_storage_options(args.storage_option)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    try:
        fs, root = url_to_fs(args.output, options)
        fs.info(root)  # gcsfs's exists() answers False on any error; info() says which
    except FileNotFoundError:
        logger.error("OUTPUT %s does not exist", args.output)
        return 2
    except Exception as exc:  # noqa: BLE001 - storage failures of any backend, in one line
        logger.error("%s", describe_storage_error(exc, args.output, options, "OUTPUT", "cannot be read"))
        return 2
    report = validate_output(args.output, deep=args.deep, threads=args.threads, storage_options=options)
    for message in report.warnings[:MAX_LISTED]:
        print(f"warning: {message}")
    for message in report.errors[:MAX_LISTED]:
        print(f"error: {message}")
    hidden = max(0, len(report.errors) - MAX_LISTED) + max(0, len(report.warnings) - MAX_LISTED)
    if hidden:
        print(f"... and {hidden} more")
    rows = ", ".join(f"{name} {count}" for name, count in sorted(report.rows.items()))
    verdict = "OK" if report.ok else "INVALID"
    print(f"daq-label validate: {verdict}: {report.videos} video(s), {report.files} file(s) "
          f"({rows or 'no rows'}), {len(report.errors)} error(s), {len(report.warnings)} warning(s)")
    return 0 if report.ok else 1

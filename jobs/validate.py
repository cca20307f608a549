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


def run(args: argparse.Namespace) -> int:
    from fsspec.core import url_to_fs

    from schemas.validate import validate_output

    fs, root = url_to_fs(args.output)
    if not fs.exists(root):
        logger.error("OUTPUT %s does not exist", args.output)
        return 2
    report = validate_output(args.output, deep=args.deep, threads=args.threads)
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

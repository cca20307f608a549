"""``daq-label report OUTPUT [--out report.html]``: one self-contained HTML page on an OUTPUT.

Per-video status and reason, counts, label-health figures, score and track-length histograms,
the least confident videos first with thumbnails of their frames with mask overlays; no
network needed to open it (see daq_label/report.py). Exit status: 0 written, 2 for an unusable
OUTPUT or option, 1 if the page could not be written.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)

EPILOG = """\
The page is one file: CSS inline, thumbnails as data URIs, charts as inline SVG, no script.
Videos are ranked as daq-label review ranks them (--rank mean_score | short_fragments | events).

Examples:
  daq-label report out/samples --out report.html
  daq-label report gs://my-bucket/labels --out gs://my-bucket/labels/report.html --thumbnails 50
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from daq_label.review_queue import VIDEO_KEYS
    from jobs.export import add_storage_argument

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("output", metavar="OUTPUT", help="output directory URL of a label job")
    parser.add_argument("--out", default="report.html", metavar="FILE",
                        help="where to write the page: a path or any fsspec URL (default: report.html)")
    parser.add_argument("--rank", default="mean_score", choices=VIDEO_KEYS,
                        help="least-confident ranking (default: mean_score)")
    parser.add_argument("--thumbnails", type=int, default=12, metavar="N",
                        help="videos shown with thumbnails, least confident first (default: 12; 0: none)")
    parser.add_argument("--frames-per-video", type=int, default=3, metavar="K",
                        help="thumbnails per video, spread over its frames (default: 3)")
    parser.add_argument("--thumb-width", type=int, default=240, metavar="PX", help="thumbnail width (default: 240)")
    parser.add_argument("--max-rows", type=int, default=1000, metavar="N",
                        help="rows of each per-video table; the rest are counted (default: 1000)")
    add_storage_argument(parser)


def run(args: argparse.Namespace) -> int:
    from daq_label.output import open_output
    from daq_label.report import ReportSettings, write_report
    from pipeline.storage_access import parse_storage_options

    try:
        settings = ReportSettings(thumbnails=args.thumbnails, frames_per_video=args.frames_per_video,
                                  thumb_width=args.thumb_width, max_rows=args.max_rows, rank=args.rank)
        settings.check()
        options = parse_storage_options(args.storage_option)
        output = open_output(args.output, options)
    except (ValueError, FileNotFoundError) as exc:  # OutputError is a ValueError
        logger.error("%s", exc)
        return 2
    try:
        result = write_report(output, args.out, settings, options)
    except OSError as exc:
        logger.error("cannot write the report to %s: %s", args.out, exc)
        return 1
    print(f"daq-label report: {result.videos} video(s), {result.thumbnails} thumbnail(s), "
          f"{result.bytes / 1e6:.2f} MB -> {args.out}")
    return 0

"""``daq-label review OUTPUT DEST --worst K [--tracks] --format F [filters]``: the review queue.

Exports the K least confident videos (or tracks, with ``--tracks``) in an export format, for
people to correct first, with ``review_queue.csv`` listing them in order (rank, ids, source URL
and the figures ranked by). Rankings: see daq_label/review_queue.py. Exit status as for export.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)

EPILOG = """\
Videos are ranked by their label-health figures (--rank mean_score | short_fragments | events),
tracks by their summary (--rank score | mean_frame_score | frames_present); least confident first.

Examples:
  daq-label review out/samples review/ --worst 3 --format cvat-video --with-frames
  daq-label review out/samples review/ --worst 20 --tracks --rank mean_frame_score --format label-studio
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from daq_label.exports import FORMATS
    from daq_label.filters import add_filter_arguments
    from jobs.export import add_format_options, add_storage_argument

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("output", metavar="OUTPUT", help="output directory URL of a label job")
    parser.add_argument("dest", metavar="DEST", help="directory URL to write the queue into")
    parser.add_argument("--worst", type=int, required=True, metavar="K", help="how many to queue")
    parser.add_argument("--tracks", action="store_true", help="queue tracks instead of videos")
    parser.add_argument("--rank", help="ranking figure (default: mean_score for videos, score for tracks)")
    parser.add_argument("--format", required=True, choices=list(FORMATS), help="export format")
    add_format_options(parser)
    add_storage_argument(parser)
    add_filter_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from daq_label.exports import Destination
    from daq_label.review_queue import queue_csv, worst_tracks, worst_videos
    from jobs.export import open_selection, write_export
    from pipeline.decode import VideoError

    try:
        _, selection, options = open_selection(args)
        if args.tracks:
            queued, queue = worst_tracks(selection, args.worst, args.rank or "score")
        else:
            queued, queue = worst_videos(selection, args.worst, args.rank or "mean_score")
        result = write_export(args, queued, options)
        Destination(args.dest, options).write_text("review_queue.csv", queue_csv(queue))
    except (ValueError, FileNotFoundError, VideoError) as exc:
        logger.error("%s", exc)
        return 2
    print(f"daq-label review: {len(queue)} {'track' if args.tracks else 'video'}(s) queued, "
          f"least confident first (review_queue.csv); {result.line()}")
    return 0

"""``daq-label export OUTPUT DEST --format F [filters]``: the labels in another tool's format.

Exit status 0 when written, 2 for unusable arguments (OUTPUT not a label output, an unknown
video or category, a bad filter value).
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)

EPILOG = """\
Formats (see daq_label/exports/__init__.py): ytvis (YouTube-VIS dataset.json + results.json),
mots-txt and mots-png (MOTSChallenge / KITTI-MOTS; overlapping masks resolved: the
higher-scoring track keeps the pixel), cvat-images (CVAT for images 1.1, mask RLE + track id),
cvat-video (CVAT for video 1.1, polygon tracks: one
polygon per mask part, the parts' tracks grouped), label-studio (video boxes and per-frame brush
masks, with their labelling configs).

Frames are referred to as <video_id>/<frame_index:06d>.jpg.

Examples:
  daq-label export out/samples exports/ytvis --format ytvis
  daq-label export out/samples exports/mots --format mots-txt --min-score 0.5 --min-track-length 5
  daq-label export gs://b/labels gs://b/cvat --format cvat-video --category disc --category star
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from daq_label.exports import FORMATS
    from daq_label.filters import add_filter_arguments

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("output", metavar="OUTPUT", help="output directory URL of a label job")
    parser.add_argument("dest", metavar="DEST", help="directory URL to write the export into")
    parser.add_argument("--format", required=True, choices=list(FORMATS), help="export format")
    add_format_options(parser)
    add_storage_argument(parser)
    add_filter_arguments(parser)


def add_format_options(parser: argparse.ArgumentParser) -> None:
    from daq_label.exports import MOTS_CLASS_MODES

    parser.add_argument("--mots-classes", choices=MOTS_CLASS_MODES, default="categories",
                        help="mots-*: class id of each object: its category (default) or one "
                             "KITTI class for all (car = 1, pedestrian = 2), for tools that know "
                             "only those")
    parser.add_argument("--with-frames", action="store_true",
                        help="also decode the videos and write their labelled frames as "
                             "images/<video_id>/<frame_index:06d>.jpg (what the tools open)")


def export_options(args: argparse.Namespace):
    from daq_label.exports import ExportOptions

    return ExportOptions(mots_classes=args.mots_classes)


def add_storage_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                        help="fsspec option for OUTPUT and DEST (repeatable; VALUE parsed as JSON "
                             "where it parses), as for daq-label label")


def open_selection(args: argparse.Namespace, track_filter=None):
    """(output, selection, storage options) from the common arguments, or raise ValueError."""
    from daq_label.filters import filter_from_args
    from daq_label.output import open_output
    from pipeline.storage_access import parse_storage_options

    options = parse_storage_options(args.storage_option)
    output = open_output(args.output, options)
    chosen = track_filter if track_filter is not None else filter_from_args(args)
    return output, chosen.select(output), options


def write_export(args: argparse.Namespace, selection, options: dict):
    """Write the selection in ``args.format`` to ``args.dest`` (and its frames with
    ``--with-frames``); returns the ExportResult."""
    from daq_label.exports import Destination, exporter
    from daq_label.exports.frames import write_frames

    dest = Destination(args.dest, options)
    result = exporter(args.format)(selection, dest, args.format, export_options(args))
    if args.with_frames:
        result.notes["frames_written"] = write_frames(selection, dest, options)
        result.files = list(dest.written)
    return result


def run(args: argparse.Namespace) -> int:
    from pipeline.decode import VideoError

    try:
        _, selection, options = open_selection(args)
        result = write_export(args, selection, options)
    except (ValueError, FileNotFoundError, VideoError) as exc:  # OutputError is a ValueError
        logger.error("%s", exc)
        return 2
    print(result.line())
    return 0

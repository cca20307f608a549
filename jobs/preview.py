"""``daq-label preview OUTPUT VIDEO_ID [--out DIR]``: one video with its labels drawn on it.

Writes ``DIR/<video_id>.mp4`` (the video with mask overlays, track ids and category names) and
``DIR/<video_id>_sheet.png`` (a contact sheet of frames sampled over it); see
daq_label/preview.py. Exit status: 0 written, 2 for an unusable OUTPUT or VIDEO_ID (unknown,
ambiguous, or a failed video with nothing labelled), 1 if encoding or writing failed.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)

EPILOG = """\
VIDEO_ID is a video id of OUTPUT (the videos table's video_id, or a unique prefix of at least
4 characters), or a source URL or file name that names one video.

Examples:
  daq-label preview out/samples 03_blocks.mp4 --out previews/
  daq-label preview out/samples 086b2b71 --max-frames 60 --sheet-frames 8 --columns 4
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jobs.export import add_storage_argument

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("output", metavar="OUTPUT", help="output directory URL of a label job")
    parser.add_argument("video", metavar="VIDEO_ID", help="the video: id, id prefix, source URL or file name")
    parser.add_argument("--out", default=".", metavar="DIR",
                        help="local directory to write <video_id>.mp4 and <video_id>_sheet.png into (default: .)")
    parser.add_argument("--max-frames", type=int, metavar="N", help="render the first N frames only (default: all)")
    parser.add_argument("--sheet-frames", type=int, default=12, metavar="K",
                        help="frames on the contact sheet, spread evenly (default: 12)")
    parser.add_argument("--columns", type=int, default=4, help="contact sheet tiles per row (default: 4)")
    parser.add_argument("--tile-width", type=int, default=320, metavar="PX",
                        help="contact sheet tile width in pixels, never scaled up (default: 320)")
    parser.add_argument("--encoder", help="PyAV video encoder (default: libx264, else mpeg4)")
    parser.add_argument("--alpha", type=float, default=0.5, help="mask colour opacity, 0..1 (default: 0.5)")
    parser.add_argument("--no-labels", action="store_true", help="draw masks only, no id/category labels")
    add_storage_argument(parser)


def run(args: argparse.Namespace) -> int:
    import av

    from daq_label.output import open_output
    from daq_label.overlay import OverlayStyle
    from daq_label.preview import PreviewSettings, available_encoder, resolve_video, write_preview
    from pipeline.decode import VideoError
    from pipeline.storage_access import parse_storage_options

    try:
        if not 0.0 <= args.alpha <= 1.0:
            raise ValueError("--alpha must be within 0..1")
        if args.max_frames is not None and args.max_frames < 1:
            raise ValueError("--max-frames must be >= 1")
        encoder = available_encoder((args.encoder,)) if args.encoder else None
        settings = PreviewSettings(max_frames=args.max_frames, sheet_frames=args.sheet_frames,
                                   columns=args.columns, tile_width=args.tile_width, encoder=encoder,
                                   style=OverlayStyle(alpha=args.alpha, labels=not args.no_labels))
        options = parse_storage_options(args.storage_option)
        output = open_output(args.output, options)
        video_id = resolve_video(output, args.video)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:  # OutputError is a ValueError
        logger.error("%s", exc)
        return 2
    try:
        result = write_preview(output, video_id, args.out, settings, options)
    except ValueError as exc:  # a failed video (OutputError), unusable sheet settings
        logger.error("%s", exc)
        return 2
    except (VideoError, OSError, av.FFmpegError) as exc:
        logger.error("%s: %s", video_id, exc)
        return 1
    print(f"daq-label preview: {result.source_url} ({result.video_id}): {result.frames} frame(s) "
          f"{result.video_size[0]}x{result.video_size[1]} at {float(result.fps):.3g} fps ({result.encoder}) "
          f"-> {result.video_path}; contact sheet of {len(result.sheet_frames)} -> {result.sheet_path}")
    return 0

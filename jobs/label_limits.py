"""The ``limits`` options of ``daq-label label`` (:mod:`pipeline.limits`; docs/reliability.md)."""

from __future__ import annotations

import argparse

from pipeline.limits import VideoLimits, parse_size

_DEFAULT = VideoLimits()


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "limits (docs/reliability.md): checked on the header before decoding; a video over a "
        "limit is failed with error_type frame_too_small, frame_too_large, aspect_ratio, "
        "file_too_large, too_long or pixel_budget, except frames over --max-frame-side, which are "
        "downscaled")
    group.add_argument("--min-frame-side", type=int, metavar="PX", default=_DEFAULT.min_side,
                       help=f"reject frames whose shorter side is under PX (default: {_DEFAULT.min_side})")
    group.add_argument("--max-frame-side", type=int, metavar="PX", default=_DEFAULT.max_side,
                       help="downscale at decode frames whose longer side is over PX, keeping the aspect "
                            "ratio; masks and the videos row's width/height are then at the downscaled "
                            f"size, source_width/source_height at the source's (default: {_DEFAULT.max_side}; "
                            "must be >= min side x max aspect ratio)")
    group.add_argument("--max-source-pixels", type=int, metavar="N", default=_DEFAULT.max_source_pixels,
                       help="reject videos whose frames have more than N pixels (frame_too_large): FFmpeg "
                            "decodes them at full size before the downscale (default: "
                            f"{_DEFAULT.max_source_pixels}, 8K UHD)")
    group.add_argument("--max-aspect-ratio", type=float, metavar="R", default=_DEFAULT.max_aspect,
                       help=f"reject frames whose longer/shorter side is over R (default: {_DEFAULT.max_aspect:g})")
    group.add_argument("--max-duration", type=float, metavar="S", default=_DEFAULT.max_duration_s,
                       help="reject videos longer than S seconds (too_long) unless --chunk-frames labels "
                            f"them in chunks (default: {_DEFAULT.max_duration_s:g})")
    group.add_argument("--max-frames", type=int, metavar="N", default=_DEFAULT.max_frames,
                       help="reject videos of more than N frames (too_long), unless --chunk-frames; "
                            "a video whose header understates its length stops there, partial "
                            f"(default: {_DEFAULT.max_frames})")
    group.add_argument("--max-file-size", type=parse_size, metavar="SIZE", default=_DEFAULT.max_file_bytes,
                       help="reject files larger than SIZE, e.g. 500M, 64G (default: 64G)")
    group.add_argument("--pixel-budget", type=float, metavar="PIXELS", default=_DEFAULT.pixel_budget,
                       help="reject videos whose frames x width x height (after the downscale) is over "
                            "PIXELS, with or without chunks; decoding stops there when the header "
                            f"understates it (default: {_DEFAULT.pixel_budget:.3g}, about 1 h of 1080p at 40 fps)")


def limits_from_args(args: argparse.Namespace) -> VideoLimits:
    """The limits the options give; ValueError names an inconsistent or out-of-range value."""
    return VideoLimits(min_side=args.min_frame_side, max_side=args.max_frame_side,
                       max_aspect=args.max_aspect_ratio, max_duration_s=args.max_duration,
                       max_frames=args.max_frames, max_file_bytes=args.max_file_size,
                       pixel_budget=args.pixel_budget, max_source_pixels=args.max_source_pixels)

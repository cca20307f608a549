"""``daq-label synth``: write a procedural synthetic video dataset in YouTube-VIS layout."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daq_train.synthetic import SynthConfig

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Generate synthetic videos of textured shapes (one category per shape) moving over real-footage
backgrounds, occluding each other, entering and leaving the frame and coming back, and write them
as OUT_DIR/JPEGImages/<video>/<frame>.jpg plus OUT_DIR/annotations.json (YouTube-VIS format).
The output is a pure function of the preset, the overrides and --seed.

presets: tiny (tests), train, val, train_appear_disappear (tracker training with more entries,
exits and gaps), heldout_appear_disappear (entries, exits and gaps are the rule).
The train, val and held-out presets give each category a colour family (--class-hue 0.15): a
small segmenter trained from scratch tells outline-only classes apart too slowly (issue #5);
--class-hue 0 makes the outline the only class cue.
"""


def _size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}") from None
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}")


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a probability must be in [0, 1], got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from daq_train.synthetic import BACKGROUNDS, PRESETS

    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="dataset root to create")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="train",
                        help="named configuration to start from (default: train)")
    parser.add_argument("--videos", type=int, help="number of videos (preset default otherwise)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--frames", type=int, help="frames per video")
    parser.add_argument("--size", type=_size, metavar="N|HxW", help="frame size, e.g. 160 or 144x192")
    parser.add_argument("--objects", type=int, nargs=2, metavar=("MIN", "MAX"),
                        help="objects per video (inclusive range)")
    parser.add_argument("--categories", help="comma-separated shapes, e.g. disc,square,star")
    parser.add_argument("--p-late-entry", type=_probability, help="P(object enters after frame 0)")
    parser.add_argument("--p-early-exit", type=_probability, help="P(object leaves before the end)")
    parser.add_argument("--p-reappear", type=_probability, help="P(object disappears and comes back)")
    parser.add_argument("--p-gap-by-occlusion", type=_probability,
                        help="P(a disappearance is a full occlusion rather than leaving the frame)")
    parser.add_argument("--class-hue", type=_probability, metavar="WIDTH",
                        help="give each category a colour family: an object's hues are drawn "
                        "from a band of this width around its category's hue (fraction of the hue "
                        "circle; 0 = hue carries no class information, only the outline does)")
    parser.add_argument("--background", choices=BACKGROUNDS,
                        help="video: crops of real footage; plain: smooth random field; none: flat grey")
    parser.add_argument("--background-dir", type=Path, help="folder of background videos "
                        "(default: the repository's samples/videos)")
    parser.add_argument("--image-format", choices=("jpg", "png"), help="frame file format")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT_DIR/annotations.json and OUT_DIR/JPEGImages if present")


def build_config(args: argparse.Namespace) -> "SynthConfig":
    """The preset named by ``--preset`` with the command line's overrides."""
    from daq_train.synthetic import get_preset

    overrides: dict[str, object] = {}
    if args.videos is not None:
        overrides["num_videos"] = args.videos
    if args.frames is not None:
        overrides["frames"] = args.frames
    if args.size is not None:
        overrides["height"], overrides["width"] = args.size
    if args.objects is not None:
        overrides["objects"] = tuple(args.objects)
    if args.categories:
        overrides["categories"] = tuple(c.strip() for c in args.categories.split(",") if c.strip())
    for name in ("p_late_entry", "p_early_exit", "p_reappear", "p_gap_by_occlusion", "class_hue",
                 "background", "image_format"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.background_dir is not None:
        overrides["background_dir"] = str(args.background_dir)
    return get_preset(args.preset, **overrides)


def run(args: argparse.Namespace) -> int:
    from daq_train.synthetic import write_synthetic_dataset

    try:
        config = build_config(args)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    logger.info("synth: preset %s, %d videos x %d frames of %dx%d, seed %d -> %s", args.preset,
                config.num_videos, config.frames, config.height, config.width, args.seed, args.out_dir)
    step = max(1, config.num_videos // 20)

    def progress(done: int, total: int, fps: float) -> None:
        if done % step == 0 or done == total:
            logger.info("synth: %d/%d videos (%.0f frames/s)", done, total, fps)

    try:
        path = write_synthetic_dataset(config, args.out_dir, seed=args.seed, overwrite=args.overwrite,
                                       progress=progress)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    logger.info("synth: done, annotations in %s", path)
    return 0

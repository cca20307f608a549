"""Limits on what one video may cost, checked on the container's header before anything is
decoded (``daq-label label --min-frame-side ...``; docs/reliability.md, "Limits").

=====================  ===========  =========================================================
limit                  default      over it
=====================  ===========  =========================================================
``max_file_bytes``     64 GiB       rejected, ``file_too_large`` (size from fsspec, before the
                                    container is opened)
``min_side``           16 px        rejected, ``frame_too_small`` (the shorter side)
``max_aspect``         10           rejected, ``aspect_ratio`` (longer side / shorter side)
``max_source_pixels``  7680x4320    rejected, ``frame_too_large``: FFmpeg decodes a frame at
                                    full size before it can be scaled down (and holds up to
                                    16 for reference); the decoder is also told the maximum
                                    (FFmpeg's ``max_pixels``), should a header understate it
``max_side``           1920 px      **downscaled at decode**: PyAV's swscale (area filter)
                                    scales each frame so its longer side is ``max_side``,
                                    keeping the aspect ratio (the shorter side rounds, >= 1)
``max_duration_s``     3600 s       rejected, ``too_long``, unless ``--chunk-frames`` labels
``max_frames``         216,000      long videos in chunks (then only the pixel budget bounds
                                    the length)
``pixel_budget``       3e11         rejected, ``pixel_budget``: frames x labelled width x
                                    height (after the downscale)
=====================  ===========  =========================================================

The same checks run again on the first decoded frame (a header can lie about the size), and
the decoder stops after the number of frames the length limits allow (a header can lie about the
length, or give none): the frames decoded are labelled and the video is ``partial`` with
``too_long`` or ``pixel_budget``.

Sizes after a downscale: the labelled frames, the masks (RLE ``size``), boxes and the
``videos`` columns ``width``/``height`` are all at the downscaled size (the frames the model was
given); ``source_width``/``source_height`` hold the displayed size of the source. The defaults
keep every limit consistent: ``max_side >= min_side x max_aspect``, so a frame that passes the
aspect check never downscales below ``min_side``, and no side is ever 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

FRAME_TOO_SMALL = "frame_too_small"
FRAME_TOO_LARGE = "frame_too_large"
ASPECT_RATIO = "aspect_ratio"
FILE_TOO_LARGE = "file_too_large"
TOO_LONG = "too_long"
PIXEL_BUDGET = "pixel_budget"
LIMIT_KINDS = (FRAME_TOO_SMALL, FRAME_TOO_LARGE, ASPECT_RATIO, FILE_TOO_LARGE, TOO_LONG, PIXEL_BUDGET)

GIB = 1 << 30
#: frames per second assumed to turn a frame count into a duration when the header has no rate
ASSUMED_FPS = 30.0


@dataclass(frozen=True)
class Rejection:
    """Why a video is not labelled (or stopped early): an ``error_type`` and a message."""

    kind: str
    message: str


@dataclass(frozen=True)
class VideoLimits:
    """What one video may cost (see the module docstring for each limit and its default)."""

    min_side: int = 16
    max_side: int = 1920
    max_aspect: float = 10.0
    max_duration_s: float = 3600.0
    max_frames: int = 216_000
    max_file_bytes: int = 64 * GIB
    pixel_budget: float = 3e11
    max_source_pixels: int = 7680 * 4320

    def __post_init__(self) -> None:
        for name in ("min_side", "max_side", "max_frames", "max_file_bytes", "max_source_pixels"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"limit {name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_aspect", "max_duration_s", "pixel_budget"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"limit {name} must be a positive number, got {value}")
        if self.max_aspect < 1:
            raise ValueError(f"max aspect ratio must be >= 1, got {self.max_aspect}")
        if self.max_side < self.min_side * self.max_aspect:
            raise ValueError(
                f"max frame side ({self.max_side}) must be at least min frame side x max aspect ratio "
                f"({self.min_side} x {self.max_aspect:g}), so that a downscaled frame keeps its "
                "shorter side above the minimum")

    # ------------------------------------------------------------------ sizes

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the frames are labelled at (:func:`scaled_size` to ``max_side``)."""
        return scaled_size(width, height, self.max_side)

    def check_file(self, size: int | None) -> Rejection | None:
        if size is not None and size > self.max_file_bytes:
            return Rejection(FILE_TOO_LARGE, f"file of {_bytes(size)} is over the maximum file size of "
                                             f"{_bytes(self.max_file_bytes)} (--max-file-size)")
        return None

    def check_frame(self, width: int, height: int, what: str = "frames") -> Rejection | None:
        """Size and aspect checks of frames ``width`` x ``height`` (0 or less: unknown, passes)."""
        if width < 1 or height < 1:
            return None
        shorter, longer = min(width, height), max(width, height)
        if shorter < self.min_side:
            return Rejection(FRAME_TOO_SMALL, f"{what} of {width}x{height} have a side under the "
                                              f"minimum of {self.min_side} px (--min-frame-side)")
        if width * height > self.max_source_pixels:
            return Rejection(FRAME_TOO_LARGE, f"{what} of {width}x{height} ({width * height / 1e6:.1f} MP) "
                                              f"are over the maximum of {self.max_source_pixels / 1e6:.1f} MP "
                                              "per source frame (--max-source-pixels): FFmpeg would decode "
                                              "them at full size before they are scaled down")
        if longer / shorter > self.max_aspect:
            return Rejection(ASPECT_RATIO, f"{what} of {width}x{height} have an aspect ratio of "
                                           f"{longer / shorter:.1f}:1, over the maximum of "
                                           f"{self.max_aspect:g}:1 (--max-aspect-ratio)")
        return None

    def check_header(self, info: Any, max_side: int | None, chunked: bool = False) -> Rejection | None:
        """Every check on what a container's header says (a :class:`StreamInfo`): frame size and
        aspect, then length and pixel budget at the size the frames will be labelled at."""
        width, height = info.coded_width, info.coded_height
        labelled = (scaled_size(width, height, max_side or max(width, height))
                    if width > 0 and height > 0 else (0, 0))
        return (self.check_frame(width, height, "the header's frames")
                or self.check_length(info.frames_expected, info.duration_s, info.fps, *labelled,
                                     chunked=chunked, file_bytes=info.file_bytes))

    # ------------------------------------------------------------------ length

    def frame_cap(self, width: int, height: int, chunked: bool = False) -> tuple[int, Rejection]:
        """The most frames of ``width`` x ``height`` (the labelled size) a video may have, and
        the reason given when decoding stops there. ``chunked``: long videos are labelled in
        chunks, so only the pixel budget bounds the length."""
        budget = max(1, int(self.pixel_budget // max(1, width * height)))
        if not chunked and self.max_frames <= budget:
            return self.max_frames, Rejection(TOO_LONG, f"stopped after {self.max_frames} frames, the "
                                                        f"maximum frame count (--max-frames){_CHUNK_HINT}")
        return budget, Rejection(PIXEL_BUDGET, f"stopped after {budget} frames of {width}x{height}: the "
                                               f"pixel budget of {self.pixel_budget:.3g} decoded pixels "
                                               "per video is spent (--pixel-budget)")

    def check_length(self, frames: int | None, duration_s: float | None, fps: float | None,
                     width: int, height: int, chunked: bool = False,
                     file_bytes: int | None = None) -> Rejection | None:
        """Length checks from the header: ``frames`` expected, ``duration_s``, at the labelled
        size ``width`` x ``height`` (0: unknown, no pixel-budget check). A file of fewer bytes
        than the frames its header claims cannot hold them: the message says the header is
        probably damaged."""
        rejection = self._check_length(frames, duration_s, fps, width, height, chunked)
        if rejection is not None and frames and file_bytes is not None and file_bytes < frames:
            return Rejection(rejection.kind, f"{rejection.message}; but the file has only "
                                             f"{file_bytes} bytes, less than one per frame: its "
                                             "header is probably damaged")
        return rejection

    def _check_length(self, frames: int | None, duration_s: float | None, fps: float | None,
                      width: int, height: int, chunked: bool) -> Rejection | None:
        if duration_s is None and frames and fps is None:
            duration_s = frames / ASSUMED_FPS
        elif duration_s is None and frames and fps:
            duration_s = frames / fps
        if frames is None and duration_s and fps:
            frames = int(round(duration_s * fps))
        if not chunked:
            if duration_s is not None and duration_s > self.max_duration_s:
                return Rejection(TOO_LONG, f"the header says {_duration(duration_s)}"
                                           f"{f' ({frames} frames)' if frames else ''}, over the maximum "
                                           f"duration of {_duration(self.max_duration_s)} "
                                           f"(--max-duration){_CHUNK_HINT}")
            if frames is not None and frames > self.max_frames:
                return Rejection(TOO_LONG, f"the header says {frames} frames, over the maximum of "
                                           f"{self.max_frames} (--max-frames){_CHUNK_HINT}")
        if frames and width > 0 and height > 0 and frames * width * height > self.pixel_budget:
            return Rejection(PIXEL_BUDGET, f"{frames} frames of {width}x{height} are "
                                           f"{frames * width * height:.3g} decoded pixels, over the "
                                           f"pixel budget of {self.pixel_budget:.3g} per video "
                                           "(--pixel-budget)")
        return None


def scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) of a frame scaled down so its longer side is ``max_side`` (unchanged when it
    is not longer): aspect kept, the shorter side rounded half up and at least 1. The result
    depends only on the source size and ``max_side``, so the export of a video's frames repeats
    the label job's size from ``max(width, height)`` of its ``videos`` row."""
    if width < 1 or height < 1 or max_side < 1:
        raise ValueError(f"frame size and max side must be positive, got {width}x{height}, {max_side}")
    longer = max(width, height)
    if longer <= max_side:
        return width, height
    scale = max_side / longer
    if width >= height:
        return max_side, max(1, int(height * scale + 0.5))
    return max(1, int(width * scale + 0.5)), max_side


_CHUNK_HINT = "; label it in chunks with --chunk-frames N (e.g. 3000) or raise the limit"


def _bytes(size: float) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit} ({int(size)} bytes)"
    return f"{int(size)} bytes"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h ({seconds:.0f} s)"
    return f"{seconds:.1f} s"


def parse_size(text: str) -> int:
    """``"64G"``, ``"500M"``, ``"2.5GiB"``, ``"1000000"`` -> bytes (K, M, G, T are powers of 1024)."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = 1
    for index, unit in enumerate("KMGT", start=1):
        if value.endswith(unit):
            value, scale = value[:-1], 1024 ** index
            break
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (e.g. 64G, 500M, 1000000)") from None
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"a size must be positive, got {text!r}")
    return int(number * scale)

"""A video's labels as people look at them (``daq-label preview``): the video re-encoded with its
mask overlays, track ids and category names (MP4, H.264 through PyAV's libx264, or MPEG-4 Part 2
where the PyAV build has no libx264), and a contact sheet (PNG) of frames sampled evenly over it.

    from daq_label import open_output
    from daq_label.preview import PreviewSettings, write_preview

    result = write_preview(open_output("out/samples"), video_id, "previews/", PreviewSettings())
    result.video_path, result.sheet_path

Frames come from the label job's own decoder and the overlays from :mod:`daq_label.overlay`
(shared with the report). H.264 in 4:2:0 needs even frame sizes: an odd width or height is padded
by one black pixel column or row at the right or bottom (``PreviewResult.video_size``).

Contact sheet geometry: ``cols = min(columns, n)`` tiles per row, ``rows = ceil(n / cols)``, each
tile the frame scaled to ``tile_width`` pixels wide (never up), ``SHEET_GAP`` pixels between tiles
and around them, the frame index written in each tile's bottom-left corner.
"""

from __future__ import annotations

import logging
import math
import posixpath
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageDraw

from daq_label.output import Output, OutputError
from daq_label.overlay import OverlayStyle, draw_overlay, evenly_spaced, label_font, labelled_frames, thumbnail

logger = logging.getLogger(__name__)

ENCODERS = ("libx264", "mpeg4")  # preferred first
SHEET_GAP = 4
SHEET_BACKGROUND = (32, 32, 32)
DEFAULT_FPS = Fraction(25)


@dataclass(frozen=True)
class PreviewSettings:
    max_frames: int | None = None       # render the first N labelled frames (default: all)
    sheet_frames: int = 12              # frames on the contact sheet
    columns: int = 4                    # contact sheet tiles per row
    tile_width: int = 320               # contact sheet tile width in pixels (never scaled up)
    encoder: str | None = None          # None: the first of ENCODERS this PyAV build has
    crf: int = 20                       # libx264 quality (lower is better)
    style: OverlayStyle = field(default_factory=OverlayStyle)


@dataclass(frozen=True)
class PreviewResult:
    video_id: str
    source_url: str
    video_path: Path
    sheet_path: Path
    frames: int                          # frames encoded
    video_size: tuple[int, int]          # (width, height) of the encoded frames
    encoder: str
    fps: Fraction
    sheet_frames: tuple[int, ...]        # frame indices on the contact sheet
    sheet_size: tuple[int, int]          # (width, height) of the PNG


def available_encoder(preferred: tuple[str, ...] = ENCODERS) -> str:
    """The first encoder of ``preferred`` that this PyAV build can encode with."""
    for name in preferred:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001 - UnknownCodecError and build-specific errors
            continue
        return name
    raise RuntimeError(f"this PyAV build has none of the encoders {', '.join(preferred)}")


def resolve_video(output: Output, name: str) -> str:
    """The video id that ``name`` means: a video id, a unique prefix of one, a source URL or a
    source file name (unique). Raises :class:`OutputError` naming what matched."""
    ids = output.video_ids()
    if name in ids:
        return name
    prefixed = [v for v in ids if v.startswith(name)] if len(name) >= 4 else []
    if len(prefixed) == 1:
        return prefixed[0]
    rows = output.videos(columns=["video_id", "source_url"]).to_pylist()
    by_source = [r["video_id"] for r in rows
                 if r["source_url"] == name or r["source_url"].endswith("/" + name.lstrip("/"))
                 or posixpath.basename(r["source_url"]) == name]
    if len(by_source) == 1:
        return by_source[0]
    if len(prefixed) > 1 or len(by_source) > 1:
        raise OutputError(f"{name!r} matches {max(len(prefixed), len(by_source))} videos of {output.url}; "
                          "give the full video id")
    shown = ", ".join(f"{r['video_id']} ({posixpath.basename(r['source_url'])})" for r in rows[:5])
    raise OutputError(f"{output.url} has no video {name!r} (a video id, its prefix, a source URL or "
                      f"file name); {len(rows)} video(s): {shown}{' ...' if len(rows) > 5 else ''}")


def sheet_layout(n: int, frame_size: tuple[int, int], columns: int, tile_width: int) -> dict[str, int]:
    """Contact sheet geometry for ``n`` tiles of ``frame_size`` (width, height) frames."""
    width, height = frame_size
    cols = max(1, min(columns, n))
    rows = max(1, math.ceil(n / cols))
    tile_w = min(tile_width, width)
    tile_h = height if tile_w == width else max(1, round(height * tile_w / width))
    return {"cols": cols, "rows": rows, "tile_w": tile_w, "tile_h": tile_h,
            "width": cols * tile_w + (cols + 1) * SHEET_GAP,
            "height": rows * tile_h + (rows + 1) * SHEET_GAP}


def contact_sheet(tiles: list[tuple[int, np.ndarray]], columns: int, tile_width: int) -> Image.Image:
    """The tiles (frame index, RGB image of one size) as one grid image."""
    if not tiles:
        raise ValueError("a contact sheet needs at least one frame")
    height, width = tiles[0][1].shape[:2]
    geo = sheet_layout(len(tiles), (width, height), columns, tile_width)
    sheet = Image.new("RGB", (geo["width"], geo["height"]), SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = label_font(12)
    for k, (index, image) in enumerate(tiles):
        row, col = divmod(k, geo["cols"])
        x = SHEET_GAP + col * (geo["tile_w"] + SHEET_GAP)
        y = SHEET_GAP + row * (geo["tile_h"] + SHEET_GAP)
        tile = thumbnail(image, geo["tile_w"])
        if tile.size != (geo["tile_w"], geo["tile_h"]):
            tile = tile.resize((geo["tile_w"], geo["tile_h"]), Image.LANCZOS)
        sheet.paste(tile, (x, y))
        text = f"frame {index}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        ty = y + geo["tile_h"] - (bottom - top) - 4
        draw.rectangle((x, ty - 1, x + right - left + 5, y + geo["tile_h"] - 1), fill=(0, 0, 0))
        draw.text((x + 3 - left, ty + 1 - top), text, fill=(255, 255, 255), font=font)
    return sheet


def _rate(fps: float | None) -> Fraction:
    if fps is None or not math.isfinite(fps) or fps <= 0:
        return DEFAULT_FPS
    return Fraction(fps).limit_denominator(10000)


def _even(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    pad_h, pad_w = height % 2, width % 2
    if not pad_h and not pad_w:
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))


def write_preview(output: Output, video_id: str, out_dir: str | Path, settings: PreviewSettings = PreviewSettings(),
                  storage_options: dict[str, Any] | None = None) -> PreviewResult:
    """Render ``video_id`` of ``output`` into ``out_dir`` (a local directory, created):
    ``<video_id>.mp4`` and ``<video_id>_sheet.png``. A failed video raises :class:`OutputError`."""
    if settings.max_frames is not None and settings.max_frames < 1:
        raise ValueError("--max-frames must be >= 1")
    if settings.sheet_frames < 1 or settings.columns < 1 or settings.tile_width < 16:
        raise ValueError("the contact sheet needs >= 1 frame, >= 1 column and tiles >= 16 pixels wide")
    row = output.videos([video_id]).to_pylist()[0]
    if row["status"] == "failed":
        raise OutputError(f"video {video_id} ({row['source_url']}) failed to label, nothing to preview: "
                          f"{row['error_type']}: {row['error_message']}")
    total = int(row["frames_decoded"])
    if settings.max_frames is not None:
        total = min(total, settings.max_frames)
    sampled = set(evenly_spaced(total, settings.sheet_frames))
    encoder = settings.encoder or available_encoder()
    rate = _rate(row["fps"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    video_path, sheet_path = out / f"{video_id}.mp4", out / f"{video_id}_sheet.png"
    tmp_video = video_path.with_name(video_path.name + ".part")
    tiles: list[tuple[int, np.ndarray]] = []
    encoded, size = 0, (0, 0)
    try:
        with av.open(str(tmp_video), "w", format="mp4") as container:
            stream = None
            for image, frame in labelled_frames(output, video_id, max_frames=total,
                                                storage_options=storage_options):
                picture = draw_overlay(image, frame, settings.style)
                if frame.frame_index in sampled:
                    tiles.append((frame.frame_index, picture))
                padded = _even(picture)
                if stream is None:
                    stream = container.add_stream(encoder, rate=rate)
                    stream.height, stream.width = padded.shape[:2]
                    stream.pix_fmt = "yuv420p"
                    if encoder == "libx264":
                        stream.options = {"crf": str(settings.crf), "preset": "veryfast"}
                    else:
                        stream.bit_rate = 8_000_000
                    size = (padded.shape[1], padded.shape[0])
                video_frame = av.VideoFrame.from_ndarray(padded, format="rgb24")
                video_frame.pts = encoded
                video_frame.time_base = 1 / rate
                for packet in stream.encode(video_frame):
                    container.mux(packet)
                encoded += 1
            if stream is None:
                raise OutputError(f"video {video_id}: no frame of {row['source_url']} decodes now")
            for packet in stream.encode():
                container.mux(packet)
        tmp_video.replace(video_path)
    finally:
        tmp_video.unlink(missing_ok=True)
    sheet = contact_sheet(tiles, settings.columns, settings.tile_width)
    sheet.save(sheet_path, format="PNG", optimize=True)
    logger.info("%s: %d frame(s) -> %s (%s), contact sheet of %d -> %s", row["source_url"], encoded,
                video_path, encoder, len(tiles), sheet_path)
    return PreviewResult(video_id, row["source_url"], video_path, sheet_path, encoded, size, encoder,
                         rate, tuple(i for i, _ in tiles), sheet.size)


__all__ = ["ENCODERS", "PreviewResult", "PreviewSettings", "SHEET_GAP", "available_encoder",
           "contact_sheet", "resolve_video", "sheet_layout", "write_preview"]

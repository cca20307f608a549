"""Mask overlays drawn on decoded frames: one module for the report's thumbnails and the preview.

    from daq_label import open_output
    from daq_label.overlay import labelled_frames, draw_overlay

    out = open_output("out/samples")
    for image, frame in labelled_frames(out, video_id, indices={0, 10}):
        picture = draw_overlay(image, frame)      # (height, width, 3) uint8 RGB

Each track gets a colour of its own (from its ``track_id``, the same in every frame and in every
picture), its mask is blended in at ``alpha`` with a solid outline, and a label ``#<track_id>
<category_name> <score>`` is written at the top left of its box in Pillow's built-in font (no
font files needed). Frames are decoded by the label job's own decoder
(:class:`pipeline.decode.StreamingDecoder`: same frame indices, display rotation applied), so a
frame's masks sit where the model saw them.
"""

from __future__ import annotations

import colorsys
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Collection, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from daq_label.output import FrameMasks, Output, OutputError
from pipeline.decode import StreamingDecoder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OverlayStyle:
    alpha: float = 0.5          # mask colour weight inside a mask
    outline: int = 1            # outline width in pixels (0: none)
    labels: bool = True         # write "#id name score" at each mask's box
    font_size: int = 11         # Pillow's built-in font, scaled where Pillow supports it


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A saturated RGB colour for a track id: golden-ratio hue steps, so neighbouring ids differ."""
    hue = (int(track_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable built-in font
    except TypeError:  # older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def label_text(frame: FrameMasks, i: int) -> str:
    return f"#{int(frame.track_ids[i])} {frame.category_names[i]} {float(frame.scores[i]):.2f}"


def draw_overlay(image: np.ndarray, frame: FrameMasks, style: OverlayStyle = OverlayStyle()) -> np.ndarray:
    """``image`` (height, width, 3) uint8 RGB with ``frame``'s masks drawn on it (a new array).
    Masks are drawn in ascending track order, so where masks overlap the higher track id is on top."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (height, width, 3) RGB image, got shape {image.shape}")
    if frame.masks.shape[1:] != image.shape[:2] and len(frame.masks):
        raise ValueError(f"masks are {frame.masks.shape[2]}x{frame.masks.shape[1]}, "
                         f"the image {image.shape[1]}x{image.shape[0]}")
    out = image.astype(np.float32)
    boxes: list[tuple[int, int, str, tuple[int, int, int]]] = []
    for i, mask in enumerate(frame.masks):
        if not mask.any():
            continue
        colour = np.array(track_colour(int(frame.track_ids[i])), dtype=np.float32)
        out[mask] = (1.0 - style.alpha) * out[mask] + style.alpha * colour
        if style.outline > 0:
            inner = ndimage.binary_erosion(mask, iterations=style.outline, border_value=0)
            out[mask & ~inner] = colour
        ys, xs = np.nonzero(mask)
        boxes.append((int(xs.min()), int(ys.min()), label_text(frame, i), track_colour(int(frame.track_ids[i]))))
    result = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if style.labels and boxes:
        result = _draw_labels(result, boxes, style)
    return result


def _draw_labels(image: np.ndarray, boxes: list[tuple[int, int, str, tuple[int, int, int]]],
                 style: OverlayStyle) -> np.ndarray:
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    font = label_font(style.font_size)
    height, width = image.shape[:2]
    for x, y, text, colour in boxes:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 4, bottom - top + 2
        x0 = max(0, min(x, width - tw))
        y0 = max(0, min(y - th, height - th))  # above the box, or inside it at the top edge
        draw.rectangle((x0, y0, x0 + tw - 1, y0 + th - 1), fill=colour)
        draw.text((x0 + 2 - left, y0 + 1 - top), text, fill=(0, 0, 0), font=font)
    return np.asarray(picture)


def labelled_frames(output: Output, video_id: str, indices: Collection[int] | None = None,
                    max_frames: int | None = None,
                    storage_options: dict[str, Any] | None = None) -> Iterator[tuple[np.ndarray, FrameMasks]]:
    """(decoded RGB frame, its masks) for the labelled frames of a video, in order: every frame,
    or only ``indices``, or the first ``max_frames``. Decoding stops after the last frame asked
    for. A failed video (nothing labelled) raises :class:`OutputError`. If the source now decodes
    at another size than it was labelled at, frames are resized to the masks' size (logged)."""
    rows = output.videos([video_id]).to_pylist()
    if not rows:
        raise OutputError(f"video {video_id}: its videos file is empty")
    row = rows[0]
    if row["status"] == "failed" or int(row["frames_decoded"]) == 0:
        raise OutputError(f"video {video_id} ({row['source_url']}) has no labelled frames: "
                          f"{row['status']} ({row['error_type']}: {row['error_message']})")
    frames = int(row["frames_decoded"])
    last = frames - 1 if max_frames is None else min(frames, max_frames) - 1
    if last < 0:
        return
    wanted = None if indices is None else {int(i) for i in indices if 0 <= int(i) <= last}
    if wanted is not None:
        if not wanted:
            return
        last = max(wanted)
    size = output.frame_size(video_id)
    masks = output.iter_frames(video_id)
    warned = False
    with StreamingDecoder(row["source_url"], batch_size=8, storage_options=storage_options) as decoder:
        for batch in decoder.batches():
            for offset, image in enumerate(batch.frames):
                index = batch.start_index + offset
                frame = next(masks)
                if frame.frame_index != index:  # iter_frames yields every labelled frame in order
                    raise OutputError(f"video {video_id}: frame {index} decoded, masks of {frame.frame_index}")
                if wanted is not None and index not in wanted:
                    continue
                if image.shape[:2] != size:
                    if not warned:
                        logger.warning("%s decodes at %dx%d, labelled at %dx%d: frames resized",
                                       row["source_url"], image.shape[1], image.shape[0], size[1], size[0])
                        warned = True
                    image = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))
                yield image, frame
                if index == last:
                    return
    logger.warning("%s: decoding ended before frame %d of %d labelled frames", row["source_url"], last, frames)


def evenly_spaced(frames: int, k: int) -> list[int]:
    """``k`` frame indices spread over ``frames`` frames (first and last included), ascending."""
    if frames <= 0 or k <= 0:
        return []
    if k >= frames:
        return list(range(frames))
    if k == 1:
        return [frames // 2]
    return sorted({round(i * (frames - 1) / (k - 1)) for i in range(k)})


def scaled(image: np.ndarray, frame: FrameMasks, width: int) -> tuple[np.ndarray, FrameMasks]:
    """A frame and its masks scaled down to ``width`` pixels wide (never up), so that labels
    drawn afterwards keep a readable size in a thumbnail."""
    height0, width0 = image.shape[:2]
    if width0 <= width:
        return image, frame
    height = max(1, round(height0 * width / width0))
    small = np.asarray(Image.fromarray(image).resize((width, height), Image.LANCZOS))
    masks = np.stack([np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((width, height), Image.BILINEAR)) >= 128
                      for m in frame.masks]) if len(frame.masks) else np.zeros((0, height, width), bool)
    return small, dataclasses.replace(frame, masks=masks)


def thumbnail(image: np.ndarray, width: int) -> Image.Image:
    """``image`` scaled to ``width`` pixels wide (never up), aspect kept."""
    picture = Image.fromarray(image)
    if picture.width <= width:
        return picture
    height = max(1, round(picture.height * width / picture.width))
    return picture.resize((width, height), Image.LANCZOS)


__all__ = ["OverlayStyle", "draw_overlay", "evenly_spaced", "label_text", "label_font",
           "labelled_frames", "scaled", "thumbnail", "track_colour"]

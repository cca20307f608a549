"""``cvat-images`` and ``cvat-video``: CVAT 1.1 XML annotations.

* ``cvat-images``: one ``annotations.xml`` (CVAT for images 1.1) for all exported frames:
  ``<image id name="<video_id>/<frame>.jpg" width height>`` per decoded frame, a ``<mask>`` per
  track with a mask there (CVAT's mask RLE: run lengths over the mask's box, row by row, starting
  with a background run; ``left``/``top``/``width``/``height`` the box) carrying the attributes
  ``track_id`` (daq-label's, unique within a video) and ``score``;
* ``cvat-video``: ``<video_id>.xml`` per video (CVAT for video 1.1, one task per video). CVAT
  has no mask tracks and one shape per track and frame, so a mask becomes one polygon per
  4-connected part (:mod:`daq_label.exports.polygons`; holes filled): ``<track id=track_id>``
  holds each frame's largest part, the n-th largest parts form further tracks (ids after the
  largest track id), and every track of one daq-label track shares ``group_id`` = track_id + 1.
  A ``<polygon>`` keyframe on every frame with a mask, an ``outside="1"`` keyframe on the first
  frame of every absence.

Frame images are named ``images/<video_id>/<frame>.jpg`` when exported with ``--with-frames``.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

import numpy as np

from daq_label.exports import Destination, ExportOptions, ExportResult, frame_file_name
from daq_label.exports.polygons import PolygonStats, mask_polygons
from daq_label.filters import Selection

logger = logging.getLogger(__name__)

VERSION = "1.1"


def cvat_mask_rle(mask: np.ndarray) -> tuple[str, int, int, int, int]:
    """(rle, left, top, width, height) of a non-empty mask: CVAT's RLE of its box."""
    rows, cols = np.nonzero(mask)
    top, left = int(rows.min()), int(cols.min())
    bottom, right = int(rows.max()) + 1, int(cols.max()) + 1
    flat = mask[top:bottom, left:right].reshape(-1)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat[0]:  # runs start with background
        runs.insert(0, 0)
    return ",".join(map(str, runs)), left, top, right - left, bottom - top


def _meta(root: ET.Element, name: str, size: int, mode: str, categories: list[str],
          frame_size: tuple[int, int] | None) -> None:
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    for key, value in (("name", name), ("size", str(size)), ("mode", mode), ("overlap", "0")):
        ET.SubElement(task, key).text = value
    labels = ET.SubElement(task, "labels")
    for category in categories:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = category
        ET.SubElement(label, "type").text = "polygon" if mode == "interpolation" else "mask"
        attributes = ET.SubElement(label, "attributes")
        for attr, default in (("score", "0"),) + ((("track_id", "0"),) if mode == "annotation" else ()):
            node = ET.SubElement(attributes, "attribute")
            for key, value in (("name", attr), ("mutable", "False"), ("input_type", "number"),
                               ("default_value", default), ("values", "")):
                ET.SubElement(node, key).text = value
    if frame_size is not None:
        original = ET.SubElement(task, "original_size")
        ET.SubElement(original, "width").text = str(frame_size[1])
        ET.SubElement(original, "height").text = str(frame_size[0])


def _attribute(parent: ET.Element, name: str, value: str) -> None:
    ET.SubElement(parent, "attribute", {"name": name}).text = value


def _xml(root: ET.Element) -> str:
    ET.indent(root, space=" ")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _export_images(selection: Selection, dest: Destination, categories: list[str]) -> tuple[int, int]:
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = VERSION
    rows = selection.video_rows()
    _meta(root, "daq-label export", sum(int(r["frames_decoded"]) for r in rows), "annotation", categories, None)
    image_id, masks = 0, 0
    for row in rows:
        vid = row["video_id"]
        for frame in selection.output.iter_frames(vid, selection.track_ids(vid)):
            image = ET.SubElement(root, "image", {"id": str(image_id), "name": frame_file_name(vid, frame.frame_index),
                                                  "width": str(row["width"]), "height": str(row["height"])})
            image_id += 1
            for track, name, score, mask in zip(frame.track_ids.tolist(), frame.category_names,
                                                frame.scores.tolist(), frame.masks):
                rle, left, top, width, height = cvat_mask_rle(mask)
                node = ET.SubElement(image, "mask", {
                    "label": name, "source": "auto", "occluded": "0", "rle": rle, "left": str(left),
                    "top": str(top), "width": str(width), "height": str(height), "z_order": "0"})
                _attribute(node, "track_id", str(track))
                _attribute(node, "score", f"{score:.6g}")
                masks += 1
    dest.write_text("annotations.xml", _xml(root))
    return len(rows), masks


def _polygon(track: ET.Element, frame: int, points: list[float], outside: bool, score: float) -> None:
    text = ";".join(f"{points[i]:g},{points[i + 1]:g}" for i in range(0, len(points), 2))
    node = ET.SubElement(track, "polygon", {"frame": str(frame), "keyframe": "1", "outside": "1" if outside else "0",
                                            "occluded": "0", "points": text, "z_order": "0"})
    _attribute(node, "score", f"{score:.6g}")


def _export_video(selection: Selection, dest: Destination, categories: list[str], stats: PolygonStats) -> int:
    masks = 0
    for row in selection.video_rows():
        vid, frames = row["video_id"], int(row["frames_decoded"])
        root = ET.Element("annotations")
        ET.SubElement(root, "version").text = VERSION
        _meta(root, vid, frames, "interpolation", categories, (int(row["height"]), int(row["width"])))
        # (track, part rank) -> [(frame, points)]: part 0 is each frame's largest part
        shapes: dict[tuple[int, int], list[tuple[int, list[float]]]] = {}
        labels: dict[int, tuple[str, float]] = {}
        for frame in selection.output.iter_frames(vid, selection.track_ids(vid)):
            for track, name, score, mask in zip(frame.track_ids.tolist(), frame.category_names,
                                                frame.scores.tolist(), frame.masks):
                for rank, points in enumerate(mask_polygons(mask, stats)):
                    shapes.setdefault((track, rank), []).append((frame.frame_index, points))
                labels[track] = (name, float(score))
                masks += 1
        next_id = max((t for t, _ in shapes), default=-1) + 1
        for track, rank in sorted(shapes, key=lambda key: (key[1], key[0])):
            name, score = labels[track]
            cvat_id = track if rank == 0 else next_id
            next_id += rank != 0
            node = ET.SubElement(root, "track", {"id": str(cvat_id), "label": name, "source": "auto",
                                                 "group_id": str(track + 1)})
            keyframes = shapes[track, rank]
            for i, (f, points) in enumerate(keyframes):
                _polygon(node, f, points, False, score)
                following = keyframes[i + 1][0] if i + 1 < len(keyframes) else None
                if following != f + 1 and f + 1 < frames:  # absent from the next frame on
                    _polygon(node, f + 1, points, True, score)
        dest.write_text(f"{vid}.xml", _xml(root))
    return masks


def export(selection: Selection, dest: Destination, format_name: str = "cvat-images",
           options: ExportOptions = ExportOptions()) -> ExportResult:
    categories = [name for _, name in selection.categories()]
    tracks = len(selection.track_summary)
    if format_name == "cvat-images":
        videos, masks = _export_images(selection, dest, categories)
        return ExportResult(format_name, dest.url, list(dest.written), videos, tracks, masks)
    stats = PolygonStats()
    masks = _export_video(selection, dest, categories, stats)
    if stats.pixels_holes_filled:
        logger.info("polygons: %d hole pixel(s) filled (CVAT polygons have no holes)", stats.pixels_holes_filled)
    return ExportResult(format_name, dest.url, list(dest.written), len(selection.video_rows()), tracks, masks,
                        {"polygons": stats.parts, "pixels_holes_filled": stats.pixels_holes_filled})

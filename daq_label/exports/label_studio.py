"""``label-studio``: pre-annotations (``predictions``) for Label Studio's video and image tools.

Writes, each with the labelling config that matches it (import the tasks into a project with
that config):

* ``video_tasks.json`` + ``video_config.xml``: one task per video (``data.video`` = the source
  URL); one ``videorectangle`` region per track, a keyframe on every frame where the track has a
  mask (``frame`` 1-based as Label Studio counts, ``time`` = the frame's timestamp, ``x``, ``y``,
  ``width``, ``height`` in percent of the frame), ``enabled: false`` on the last keyframe of each
  run of presence so the box is not interpolated across frames where the object is absent;
* ``image_tasks.json`` + ``image_config.xml``: one task per decoded frame (``data.image`` =
  :func:`daq_label.exports.frame_file_name`), one ``brushlabels`` region per mask in Label
  Studio's own brush RLE (:func:`brush_rle`).

Each region's ``meta`` keeps daq-label's ``video_id`` / ``track_id`` (the image regions also
carry the track id in their ``id`` prefix), so corrections can be joined back.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np

from daq_label.exports import Destination, ExportOptions, ExportResult, frame_file_name
from daq_label.filters import Selection

logger = logging.getLogger(__name__)

#: Bits of the run-length fields of Label Studio's brush RLE (the header stores them).
RLE_SIZES = (3, 4, 8, 16)
WORD_BITS = 8
CHANNELS = 4  # the RLE covers an RGBA image; Label Studio reads the mask from its alpha

VIDEO_TAG, BOX_TAG, VIDEO_LABELS_TAG = "video", "box", "videoLabels"
IMAGE_TAG, BRUSH_TAG = "image", "brush"


def brush_rle(mask: np.ndarray) -> list[int]:
    """Label Studio brush RLE (a list of byte values) of one (height, width) binary mask: the
    RGBA image that is 255 in every channel inside the mask, 0 outside.

    Bit stream, most significant bit first: 32 bits value count, 5 bits word size - 1, 4 x 4
    bits run-field sizes - 1, then records ``1`` + 2-bit field choice + (run length - 1) in that
    many bits + the repeated value in ``WORD_BITS`` bits; zero-padded to whole bytes."""
    flat = np.asarray(mask, dtype=bool).reshape(-1)
    header = f"{flat.size * CHANNELS:032b}{WORD_BITS - 1:05b}" + "".join(f"{s - 1:04b}" for s in RLE_SIZES)
    records = [header]
    if flat.size:
        bounds = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]))
        longest = 1 << RLE_SIZES[-1]
        for start, length in zip(bounds[:-1].tolist(), (np.diff(bounds) * CHANNELS).tolist()):
            value = f"{255 if flat[start] else 0:0{WORD_BITS}b}"
            while length:
                chunk = min(length, longest)
                field = next(i for i, bits in enumerate(RLE_SIZES) if chunk - 1 < (1 << bits))
                records.append(f"1{field:02b}{chunk - 1:0{RLE_SIZES[field]}b}{value}")
                length -= chunk
    bits = np.frombuffer("".join(records).encode("ascii"), dtype=np.uint8) - ord("0")
    return np.packbits(bits).tolist()


def _labels_element(parent: ET.Element, tag: str, name: str, to_name: str, categories: list[str]) -> None:
    labels = ET.SubElement(parent, tag, {"name": name, "toName": to_name})
    for category in categories:
        ET.SubElement(labels, "Label", {"value": category})


def video_config(categories: list[str], fps: float | None) -> str:
    view = ET.Element("View")
    attrs = {"name": VIDEO_TAG, "value": "$video"}
    if fps:
        attrs["framerate"] = f"{fps:g}"
    ET.SubElement(view, "Video", attrs)
    ET.SubElement(view, "VideoRectangle", {"name": BOX_TAG, "toName": VIDEO_TAG})
    _labels_element(view, "Labels", VIDEO_LABELS_TAG, VIDEO_TAG, categories)
    return ET.tostring(view, encoding="unicode")


def image_config(categories: list[str]) -> str:
    view = ET.Element("View")
    ET.SubElement(view, "Image", {"name": IMAGE_TAG, "value": "$image"})
    _labels_element(view, "BrushLabels", BRUSH_TAG, IMAGE_TAG, categories)
    return ET.tostring(view, encoding="unicode")


def _keyframes(rows: list[dict], width: int, height: int) -> list[dict]:
    frames = [r["frame_index"] for r in rows]
    out = []
    for i, r in enumerate(rows):
        x, y, w, h = (float(v) for v in r["bbox"])
        continues = i + 1 < len(rows) and frames[i + 1] == frames[i] + 1
        out.append({"frame": r["frame_index"] + 1, "time": float(r["timestamp_s"]), "enabled": continues,
                    "rotation": 0, "x": 100.0 * x / width, "y": 100.0 * y / height,
                    "width": 100.0 * w / width, "height": 100.0 * h / height})
    return out


def _video_task(row: dict, tracks: list[dict], model: str) -> dict[str, Any]:
    vid, width, height = row["video_id"], int(row["width"]), int(row["height"])
    by_track: dict[int, list[dict]] = {}
    for r in tracks:
        by_track.setdefault(r["track_id"], []).append(r)
    regions, scores = [], []
    for track_id, rows in sorted(by_track.items()):
        first = rows[0]
        scores.append(float(first["score"]))
        regions.append({
            "id": f"t{track_id}", "type": "videorectangle", "from_name": BOX_TAG, "to_name": VIDEO_TAG,
            "origin": "prediction", "score": float(first["score"]),
            "meta": {"video_id": vid, "track_id": track_id, "tracker_track_id": first["tracker_track_id"]},
            "value": {"framesCount": int(row["frames_decoded"]), "duration": float(row["duration_s"] or 0.0),
                      "sequence": _keyframes(rows, width, height), "labels": [first["category_name"]]},
        })
    return {"data": {"video": row["source_url"], "video_id": vid},
            "predictions": [{"model_version": model, "score": float(np.mean(scores)) if scores else 0.0,
                             "result": regions}]}


def _image_tasks(selection: Selection, row: dict, model: str) -> tuple[list[dict], int]:
    vid, width, height = row["video_id"], int(row["width"]), int(row["height"])
    tasks, masks = [], 0
    for frame in selection.output.iter_frames(vid, selection.track_ids(vid)):
        regions = []
        for track, name, score, mask in zip(frame.track_ids.tolist(), frame.category_names,
                                            frame.scores.tolist(), frame.masks):
            regions.append({
                "id": f"t{track}f{frame.frame_index}", "type": "brushlabels", "from_name": BRUSH_TAG,
                "to_name": IMAGE_TAG, "origin": "prediction", "score": float(score),
                "original_width": width, "original_height": height, "image_rotation": 0,
                "meta": {"video_id": vid, "track_id": track, "frame_index": frame.frame_index},
                "value": {"format": "rle", "rle": brush_rle(mask), "brushlabels": [name]},
            })
        masks += len(regions)
        tasks.append({"data": {"image": frame_file_name(vid, frame.frame_index), "video_id": vid,
                               "frame_index": frame.frame_index},
                      "predictions": [{"model_version": model, "result": regions}]})
    return tasks, masks


def export(selection: Selection, dest: Destination, format_name: str = "label-studio",
           options: ExportOptions = ExportOptions()) -> ExportResult:
    categories = [name for _, name in selection.categories()]
    video_tasks, image_tasks, masks = [], [], 0
    fps_values = set()
    for row in selection.video_rows():
        model = row["model_name"]
        columns = ["track_id", "tracker_track_id", "frame_index", "timestamp_s", "category_name", "score", "bbox"]
        tracks = selection.tracks(row["video_id"]).select(columns).to_pylist()
        video_tasks.append(_video_task(row, tracks, model))
        frames, count = _image_tasks(selection, row, model)
        image_tasks.extend(frames)
        masks += count
        if row["fps"]:
            fps_values.add(round(float(row["fps"]), 3))
    fps = fps_values.pop() if len(fps_values) == 1 else None  # one Video framerate fits one rate only
    if len(fps_values) > 0:
        logger.warning("videos of several frame rates: video_config.xml sets no framerate")
    dest.write_json("video_tasks.json", video_tasks)
    dest.write_text("video_config.xml", video_config(categories, fps))
    dest.write_json("image_tasks.json", image_tasks)
    dest.write_text("image_config.xml", image_config(categories))
    return ExportResult(format_name, dest.url, list(dest.written), len(video_tasks),
                        len(selection.track_summary), masks, {"image_tasks": len(image_tasks)})

"""``mots-txt`` (MOTSChallenge) and ``mots-png`` (KITTI MOTS): non-overlapping instance masks.

Both name the exported videos ``0000``, ``0001``, ... (by daq-label ``video_id``; KITTI MOTS'
evaluation wants numeric names) and list them in ``sequences.csv`` (sequence, video_id,
source_url, frames); ``classes.csv`` maps class ids to category names. An object id is
``class_id * 1000 + n`` with ``n`` = 1, 2, ... per class within a video (the format's rule).

* ``mots-txt``, MOTSChallenge layout: ``<seq>/gt/gt.txt`` with lines
  ``frame object_id class_id height width rle`` (frames 1-based), ``<seq>/seqinfo.ini`` and
  ``seqmaps/MOTS-all.txt``;
* ``mots-png``, KITTI MOTS layout: ``instances/<seq>/<frame:06d>.png`` (16-bit, pixel = object
  id, 0 = background; one PNG per frame, frames 0-based), the same masks as text in
  ``instances_txt/<seq>.txt`` (frames 0-based) and ``evaluate_mots.seqmap.all``.

**Overlaps.** MOTS allows one object per pixel; our tracks may overlap. Rule: a pixel claimed by
several tracks goes to the one with the higher video-level ``score`` (ties: lower ``track_id``);
the others lose it. The export counts those pixels (``pixels_reassigned``) and the masks left
empty by it (``masks_emptied``, dropped from the frame).
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from daq_label.exports import MOTS_CLASS_MODES, Destination, ExportOptions, ExportResult
from daq_label.filters import Selection

logger = logging.getLogger(__name__)

IGNORE_CLASS = 10
KITTI_CLASSES = {"car": 1, "pedestrian": 2}
MAX_PER_CLASS = 999


def mots_class_id(category_id: int, mode: str) -> int:
    """The MOTS class id of a category under ``mode`` (see ExportOptions.mots_classes)."""
    if mode == "categories":
        return category_id if category_id < IGNORE_CLASS else category_id + 1
    if mode in KITTI_CLASSES:
        return KITTI_CLASSES[mode]
    raise ValueError(f"unknown MOTS class mode {mode!r}; modes: {', '.join(MOTS_CLASS_MODES)}")


def resolve_overlaps(masks: np.ndarray, scores: np.ndarray, track_ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Masks (n, h, w) with every pixel kept by at most one: the higher score wins, ties to the
    lower track id. Returns the resolved masks and the number of pixels taken from losers."""
    if len(masks) < 2:
        return masks, 0
    order = np.lexsort((track_ids, -scores))
    taken = np.zeros(masks.shape[1:], dtype=bool)
    resolved = np.zeros_like(masks)
    reassigned = 0
    for i in order:
        resolved[i] = masks[i] & ~taken
        reassigned += int(masks[i].sum() - resolved[i].sum())
        taken |= masks[i]
    return resolved, reassigned


@dataclass
class _Counts:
    masks: int = 0
    reassigned: int = 0
    emptied: int = 0
    tracks: set = field(default_factory=set)


def _object_ids(selection: Selection, video_id: str, mode: str) -> tuple[dict[int, int], dict[int, int]]:
    """track_id -> object id, and track_id -> class id, for the kept tracks of one video."""
    summary = selection.track_summary
    rows = [r for r in summary.to_pylist() if r["video_id"] == video_id]
    objects: dict[int, int] = {}
    classes: dict[int, int] = {}
    per_class: dict[int, int] = {}
    for r in sorted(rows, key=lambda r: r["track_id"]):
        cls = mots_class_id(int(r["category_id"]), mode)
        per_class[cls] = per_class.get(cls, 0) + 1
        if per_class[cls] > MAX_PER_CLASS:
            raise ValueError(f"video {video_id}: more than {MAX_PER_CLASS} tracks of MOTS class {cls}; "
                             "MOTS object ids cannot number them (filter the export)")
        objects[int(r["track_id"])] = cls * 1000 + per_class[cls]
        classes[int(r["track_id"])] = cls
    return objects, classes


def _frames(selection: Selection, video_id: str, mode: str, counts: _Counts):
    """(frame_index, [(object_id, class_id, mask)]) for every frame, overlaps resolved."""
    objects, classes = _object_ids(selection, video_id, mode)
    for frame in selection.output.iter_frames(video_id, selection.track_ids(video_id)):
        resolved, reassigned = resolve_overlaps(frame.masks, frame.scores, frame.track_ids)
        counts.reassigned += reassigned
        entries = []
        for track, mask in zip(frame.track_ids.tolist(), resolved):
            if not mask.any():
                counts.emptied += 1
                continue
            entries.append((objects[track], classes[track], mask))
            counts.masks += 1
            counts.tracks.add((video_id, track))
        yield frame.frame_index, sorted(entries, key=lambda e: e[0])


def _rle_line(frame: int, object_id: int, class_id: int, mask: np.ndarray) -> str:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    h, w = mask.shape
    return f"{frame} {object_id} {class_id} {h} {w} {rle['counts'].decode('ascii')}\n"


def _write_tables(selection: Selection, dest: Destination, mode: str, names: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["sequence", "video_id", "source_url", "frames"])
    for name, row in zip(names, selection.video_rows()):
        writer.writerow([name, row["video_id"], row["source_url"], row["frames_decoded"]])
    dest.write_text("sequences.csv", buffer.getvalue())
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["class_id", "name"])
    if mode == "categories":
        for cid, name in selection.categories():
            writer.writerow([mots_class_id(cid, mode), name])
    else:
        writer.writerow([KITTI_CLASSES[mode], mode])
    writer.writerow([IGNORE_CLASS, "ignore"])
    dest.write_text("classes.csv", buffer.getvalue())


def export(selection: Selection, dest: Destination, format_name: str = "mots-txt",
           options: ExportOptions = ExportOptions()) -> ExportResult:
    mode = options.mots_classes
    mots_class_id(1, mode)  # unknown mode: fail before writing
    rows = selection.video_rows()
    names = [f"{i:04d}" for i in range(len(rows))]
    counts = _Counts()
    for name, row in zip(names, rows):
        vid, frames, (height, width) = row["video_id"], int(row["frames_decoded"]), (row["height"], row["width"])
        lines: list[str] = []
        for f, entries in _frames(selection, vid, mode, counts):
            if format_name == "mots-txt":
                lines.extend(_rle_line(f + 1, oid, cls, mask) for oid, cls, mask in entries)
                continue
            lines.extend(_rle_line(f, oid, cls, mask) for oid, cls, mask in entries)
            image = np.zeros((height, width), dtype=np.uint16)
            for oid, _, mask in entries:
                image[mask] = oid
            png = io.BytesIO()
            Image.fromarray(image).save(png, format="PNG")
            dest.write_bytes(f"instances/{name}/{f:06d}.png", png.getvalue())
        if format_name == "mots-txt":
            dest.write_text(f"{name}/gt/gt.txt", "".join(lines))
            dest.write_text(f"{name}/seqinfo.ini",
                            f"[Sequence]\nname={name}\nimDir=img1\nframeRate={row['fps'] or 0:g}\n"
                            f"seqLength={frames}\nimWidth={width}\nimHeight={height}\nimExt=.jpg\n")
        else:
            dest.write_text(f"instances_txt/{name}.txt", "".join(lines))
    if format_name == "mots-txt":
        dest.write_text("seqmaps/MOTS-all.txt", "name\n" + "".join(f"{n}\n" for n in names))
    else:
        dest.write_text("evaluate_mots.seqmap.all", "".join(
            f"{n} empty 000000 {int(r['frames_decoded']) - 1:06d}\n" for n, r in zip(names, rows)))
    _write_tables(selection, dest, mode, names)
    if counts.reassigned:
        logger.info("MOTS overlaps: %d pixel(s) reassigned to the higher-scoring track, %d mask(s) "
                    "left empty", counts.reassigned, counts.emptied)
    return ExportResult(format_name, dest.url, list(dest.written), len(rows), len(counts.tracks), counts.masks,
                        {"pixels_reassigned": counts.reassigned, "masks_emptied": counts.emptied})

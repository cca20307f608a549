"""The YouTube-VIS JSON format (2019, 2021 and OVIS share it): read, validate, write.

Ground-truth file: a JSON object with

- ``videos``: ``{id, width, height, length, file_names: [str] * length, ...}``
- ``annotations`` (``null`` in unlabelled splits): ``{id, video_id, category_id, iscrowd,
  segmentations, areas, bboxes, ...}``; the last three hold one entry per frame of the video, and
  an entry is ``null`` where the object is absent. A segmentation is an RLE (``{"size": [h, w],
  "counts": str}`` compressed, or ``counts`` as a list of ints, uncompressed) or a polygon list
  (``[[x0, y0, x1, y1, ...], ...]``); a box is ``[x, y, w, h]``.
- ``categories``: ``{id, name, supercategory}``.

Prediction file: a JSON list of ``{video_id, category_id, score, segmentations}``.

Keys we do not interpret (``info``, ``licenses``, OVIS' ``occlusion``, YouTube-VIS 2019's
per-annotation ``height``/``width``/``length``, ...) are kept in ``extra`` and written back as read.
Every problem raises :class:`YTVISFormatError` naming the file and the offending entry.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils

logger = logging.getLogger(__name__)

# A segmentation as it appears in JSON: RLE dict, polygon list, or None (absent).
Segmentation = Any
RLE = dict  # pycocotools compressed RLE: {"size": [h, w], "counts": bytes | str}


class YTVISFormatError(ValueError):
    """A YouTube-VIS JSON file (ground truth or predictions) is malformed."""


@dataclass(frozen=True)
class Video:
    id: int
    width: int
    height: int
    length: int
    file_names: tuple[str, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    supercategory: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Annotation:
    id: int
    video_id: int
    category_id: int
    iscrowd: int
    segmentations: tuple[Segmentation, ...]
    areas: tuple[float | None, ...]
    bboxes: tuple[tuple[float, float, float, float] | None, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Prediction:
    video_id: int
    category_id: int
    score: float
    segmentations: tuple[Segmentation, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Dataset:
    videos: tuple[Video, ...]
    annotations: tuple[Annotation, ...] | None
    categories: tuple[Category, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)

    @cached_property
    def videos_by_id(self) -> dict[int, Video]:
        return {v.id: v for v in self.videos}

    @cached_property
    def categories_by_id(self) -> dict[int, Category]:
        return {c.id: c for c in self.categories}

    @cached_property
    def annotations_by_video(self) -> dict[int, list[Annotation]]:
        out: dict[int, list[Annotation]] = {v.id: [] for v in self.videos}
        for ann in self.annotations or ():
            out[ann.video_id].append(ann)
        return out


# ----------------------------------------------------------------------------- segmentations


def is_present(seg: Segmentation) -> bool:
    """True if a per-frame segmentation entry denotes a mask (the official code tests truthiness)."""
    return bool(seg)


def segmentation_to_rle(seg: Segmentation, height: int, width: int) -> RLE | None:
    """Compressed RLE of one frame's segmentation (polygons merged into one mask); None if absent."""
    if not seg:
        return None
    if isinstance(seg, list):  # polygons of one object: merge the parts
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    if isinstance(seg["counts"], list):  # uncompressed RLE
        return mask_utils.frPyObjects(seg, *seg["size"])
    counts = seg["counts"]
    return {"size": list(seg["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def encode_mask(mask: np.ndarray) -> dict:
    """JSON-ready compressed RLE (``counts`` as str) of one binary HxW mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8, copy=False)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def encode_masks(masks: np.ndarray) -> list[dict]:
    """JSON-ready compressed RLEs of a stack of binary masks shaped (N, H, W)."""
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8, copy=False)))
    return [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]


# ----------------------------------------------------------------------------- validation


class _Where:
    """Builds error messages that name the file and the entry."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, entry: str, message: str) -> YTVISFormatError:
        return YTVISFormatError(f"{self.path}: {entry}: {message}")


def _int(value: Any, where: _Where, entry: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise where.fail(entry, f"'{key}' must be an integer, got {value!r}")
    return int(value)


def _number(value: Any, where: _Where, entry: str, key: str) -> float:
    """A finite JSON number, returned as read (an int stays an int, so files round-trip as read)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise where.fail(entry, f"'{key}' must be a finite number, got {value!r}")
    return value


def _require(obj: Any, keys: Sequence[str], where: _Where, entry: str) -> None:
    if not isinstance(obj, dict):
        raise where.fail(entry, f"must be a JSON object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise where.fail(entry, f"missing key(s) {missing}")


def _check_segmentation(seg: Segmentation, height: int, width: int, where: _Where, entry: str) -> bool:
    """Check one frame's entry; returns True if it is a compressed RLE (checked in batch later)."""
    if seg is None or (isinstance(seg, (list, dict)) and not seg):
        return False
    if isinstance(seg, list):
        for part in seg:
            if (not isinstance(part, list) or len(part) < 6 or len(part) % 2
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in part)):
                raise where.fail(entry, "a polygon must be a list of >= 3 (x, y) number pairs")
        return False
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        raise where.fail(entry, "segmentation must be null, a polygon list or an RLE {size, counts}")
    size = seg["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) for s in size)) \
            or list(size) != [height, width]:
        raise where.fail(entry, f"RLE size {size!r} differs from the video's [height, width] "
                                f"[{height}, {width}]")
    counts = seg["counts"]
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise where.fail(entry, "uncompressed RLE counts must be non-negative integers")
        if sum(counts) != height * width:
            raise where.fail(entry, f"uncompressed RLE counts sum to {sum(counts)}, "
                                    f"not height*width = {height * width}")
        return False
    if isinstance(counts, (str, bytes)):
        return True
    raise where.fail(entry, f"RLE counts must be a string or a list, got {type(counts).__name__}")


def _check_segmentations(segs: Sequence[Segmentation], height: int, width: int, where: _Where,
                         entry: str) -> None:
    """Check every frame of one object; compressed RLEs are decoded in one batch to check bounds."""
    compressed = [t for t, seg in enumerate(segs)
                  if _check_segmentation(seg, height, width, where, f"{entry} segmentations[{t}]")]
    if not compressed:
        return
    rles = [{"size": [height, width], "counts": segs[t]["counts"]} for t in compressed]
    try:
        areas = mask_utils.area(rles)
        boxes = mask_utils.toBbox(rles)
    except Exception as exc:  # pycocotools raises a mix of types on garbage
        raise where.fail(f"{entry} segmentations", f"undecodable compressed RLE ({exc})") from None
    bad = (areas > height * width) | (boxes[:, 0] + boxes[:, 2] > width) | (boxes[:, 1] + boxes[:, 3] > height)
    if bad.any():
        t = compressed[int(np.argmax(bad))]
        raise where.fail(f"{entry} segmentations[{t}]", "compressed RLE counts run past the frame")


def _per_frame(ann: Mapping[str, Any], key: str, length: int, where: _Where, entry: str) -> list:
    values = ann[key]
    if not isinstance(values, list):
        raise where.fail(entry, f"'{key}' must be a list with one entry per frame")
    if len(values) != length:
        raise where.fail(entry, f"'{key}' has {len(values)} entries but video {ann['video_id']} "
                                f"has length {length}")
    return values


def _parse_video(obj: Any, where: _Where, entry: str) -> Video:
    _require(obj, ("id", "width", "height", "file_names"), where, entry)
    vid = _int(obj["id"], where, entry, "id")
    width, height = _int(obj["width"], where, entry, "width"), _int(obj["height"], where, entry, "height")
    if width <= 0 or height <= 0:
        raise where.fail(entry, f"width/height must be positive, got {width}x{height}")
    names = obj["file_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise where.fail(entry, "'file_names' must be a list of strings")
    length = _int(obj.get("length", len(names)), where, entry, "length")
    if length != len(names):
        raise where.fail(entry, f"'length' is {length} but 'file_names' has {len(names)} entries")
    extra = {k: v for k, v in obj.items() if k not in ("id", "width", "height", "length", "file_names")}
    return Video(vid, width, height, length, tuple(names), extra)


def _parse_category(obj: Any, where: _Where, entry: str) -> Category:
    _require(obj, ("id", "name"), where, entry)
    if not isinstance(obj["name"], str):
        raise where.fail(entry, "'name' must be a string")
    extra = {k: v for k, v in obj.items() if k not in ("id", "name", "supercategory")}
    return Category(_int(obj["id"], where, entry, "id"), obj["name"], str(obj.get("supercategory", "")), extra)


def _parse_bbox(box: Any, where: _Where, entry: str) -> tuple[float, float, float, float] | None:
    if box is None:
        return None
    if not isinstance(box, list) or len(box) != 4:
        raise where.fail(entry, f"a box must be null or [x, y, w, h], got {box!r}")
    x, y, w, h = (_number(b, where, entry, "bboxes") for b in box)
    return (x, y, w, h)


def _parse_annotation(obj: Any, videos: Mapping[int, Video], categories: Mapping[int, Category],
                      where: _Where, entry: str) -> Annotation:
    _require(obj, ("id", "video_id", "category_id", "segmentations"), where, entry)
    ann_id = _int(obj["id"], where, entry, "id")
    entry = f"{entry} (id={ann_id})"
    video_id = _int(obj["video_id"], where, entry, "video_id")
    if video_id not in videos:
        raise where.fail(entry, f"video_id {video_id} is not in 'videos'")
    category_id = _int(obj["category_id"], where, entry, "category_id")
    if category_id not in categories:
        raise where.fail(entry, f"category_id {category_id} is not in 'categories'")
    iscrowd = _int(obj.get("iscrowd", 0), where, entry, "iscrowd")
    if iscrowd not in (0, 1):
        raise where.fail(entry, f"'iscrowd' must be 0 or 1, got {iscrowd}")
    video = videos[video_id]
    segs = _per_frame(obj, "segmentations", video.length, where, entry)
    _check_segmentations(segs, video.height, video.width, where, entry)
    if "areas" not in obj:
        raise where.fail(entry, "missing key 'areas' (the evaluation's area ranges use it)")
    areas = [None if a is None else _number(a, where, entry, "areas")
             for a in _per_frame(obj, "areas", video.length, where, entry)]
    if any(a is not None and a < 0 for a in areas):
        raise where.fail(entry, "'areas' must not be negative")
    raw_boxes = obj.get("bboxes")
    boxes = ([None] * video.length if raw_boxes is None
             else [_parse_bbox(b, where, entry) for b in _per_frame(obj, "bboxes", video.length, where, entry)])
    extra = {k: v for k, v in obj.items() if k not in
             ("id", "video_id", "category_id", "iscrowd", "segmentations", "areas", "bboxes")}
    return Annotation(ann_id, video_id, category_id, iscrowd, tuple(segs), tuple(areas), tuple(boxes), extra)


def _unique(ids: Iterable[int], where: _Where, section: str) -> None:
    seen: set[int] = set()
    for i in ids:
        if i in seen:
            raise where.fail(section, f"duplicate id {i}")
        seen.add(i)


def parse_dataset(obj: Any, source: str = "<memory>") -> Dataset:
    """Validate a parsed ground-truth JSON object and build a :class:`Dataset`."""
    where = _Where(source)
    if not isinstance(obj, dict):
        raise where.fail("top level", "a YouTube-VIS ground-truth file must be a JSON object")
    for key in ("videos", "categories"):
        if not isinstance(obj.get(key), list):
            raise where.fail("top level", f"'{key}' must be a list")
    videos = tuple(_parse_video(v, where, f"videos[{i}]") for i, v in enumerate(obj["videos"]))
    _unique((v.id for v in videos), where, "videos")
    categories = tuple(_parse_category(c, where, f"categories[{i}]") for i, c in enumerate(obj["categories"]))
    _unique((c.id for c in categories), where, "categories")
    raw_anns = obj.get("annotations")
    annotations: tuple[Annotation, ...] | None = None
    if raw_anns is not None:
        if not isinstance(raw_anns, list):
            raise where.fail("top level", "'annotations' must be a list or null")
        vids = {v.id: v for v in videos}
        cats = {c.id: c for c in categories}
        annotations = tuple(_parse_annotation(a, vids, cats, where, f"annotations[{i}]")
                            for i, a in enumerate(raw_anns))
        _unique((a.id for a in annotations), where, "annotations")
    extra = {k: v for k, v in obj.items() if k not in ("videos", "annotations", "categories")}
    return Dataset(videos, annotations, categories, extra)


def parse_predictions(obj: Any, dataset: Dataset, source: str = "<memory>") -> tuple[Prediction, ...]:
    """Validate a parsed prediction list against the ground truth's videos."""
    where = _Where(source)
    if not isinstance(obj, list):
        raise where.fail("top level", "a YouTube-VIS prediction file must be a JSON list")
    out = []
    for i, p in enumerate(obj):
        entry = f"[{i}]"
        _require(p, ("video_id", "category_id", "score", "segmentations"), where, entry)
        video_id = _int(p["video_id"], where, entry, "video_id")
        video = dataset.videos_by_id.get(video_id)
        if video is None:
            raise where.fail(entry, f"video_id {video_id} is not a video of the ground truth")
        category_id = _int(p["category_id"], where, entry, "category_id")
        score = _number(p["score"], where, entry, "score")
        segs = _per_frame(p, "segmentations", video.length, where, entry)
        _check_segmentations(segs, video.height, video.width, where, entry)
        extra = {k: v for k, v in p.items() if k not in ("video_id", "category_id", "score", "segmentations")}
        out.append(Prediction(video_id, category_id, score, tuple(segs), extra))
    return tuple(out)


def _load_json(path: str | Path) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise YTVISFormatError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise YTVISFormatError(f"{path}: not valid JSON ({exc})") from None


def read_dataset(path: str | Path) -> Dataset:
    """Read and validate a YouTube-VIS ground-truth file."""
    dataset = parse_dataset(_load_json(path), str(path))
    logger.info("read %s: %d videos, %s annotations, %d categories", path, len(dataset.videos),
                "no" if dataset.annotations is None else len(dataset.annotations), len(dataset.categories))
    return dataset


def read_predictions(path: str | Path, dataset: Dataset) -> tuple[Prediction, ...]:
    """Read and validate a YouTube-VIS prediction file against its ground truth."""
    return parse_predictions(_load_json(path), dataset, str(path))


# ----------------------------------------------------------------------------- writing


def _json_segmentation(seg: Segmentation) -> Segmentation:
    if isinstance(seg, dict) and isinstance(seg.get("counts"), bytes):
        return {"size": list(seg["size"]), "counts": seg["counts"].decode("ascii")}
    return seg


def dataset_to_json(dataset: Dataset) -> dict[str, Any]:
    out: dict[str, Any] = dict(dataset.extra)
    out["videos"] = [{"id": v.id, "width": v.width, "height": v.height, "length": v.length,
                      "file_names": list(v.file_names), **v.extra} for v in dataset.videos]
    out["annotations"] = None if dataset.annotations is None else [
        {"id": a.id, "video_id": a.video_id, "category_id": a.category_id, "iscrowd": a.iscrowd,
         "segmentations": [_json_segmentation(s) for s in a.segmentations], "areas": list(a.areas),
         "bboxes": [None if b is None else list(b) for b in a.bboxes], **a.extra}
        for a in dataset.annotations]
    out["categories"] = [{"id": c.id, "name": c.name, "supercategory": c.supercategory, **c.extra}
                         for c in dataset.categories]
    return out


def predictions_to_json(predictions: Iterable[Prediction]) -> list[dict[str, Any]]:
    return [{"video_id": p.video_id, "category_id": p.category_id, "score": p.score,
             "segmentations": [_json_segmentation(s) for s in p.segmentations], **p.extra}
            for p in predictions]


def _write_json(obj: Any, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
    tmp.replace(path)


def write_dataset(dataset: Dataset, path: str | Path) -> None:
    """Write a ground-truth file (atomically: a partial file never appears under ``path``)."""
    _write_json(dataset_to_json(dataset), path)


def write_predictions(predictions: Iterable[Prediction], path: str | Path) -> None:
    _write_json(predictions_to_json(predictions), path)

"""Export formats: each module writes a :class:`~daq_label.filters.Selection` to a destination
directory in one third-party format and returns an :class:`ExportResult`.

| format         | writes                                                        | read by              |
|----------------|---------------------------------------------------------------|----------------------|
| ``ytvis``      | ``dataset.json`` (ground-truth layout) and ``results.json``    | YouTube-VIS tools    |
| ``mots-txt``   | ``<seq>.txt`` per video (MOTSChallenge / KITTI-MOTS text)     | TrackEval            |
| ``mots-png``   | ``<seq>/<frame>.png`` instance maps (16-bit PNG)               | TrackEval            |
| ``cvat-images``| ``annotations.xml``, CVAT for images 1.1, ``<mask>`` RLE       | CVAT, Datumaro       |
| ``cvat-video`` | ``annotations.xml``, CVAT for video 1.1, polygon tracks        | CVAT, Datumaro       |
| ``label-studio``| ``tasks.json`` (+ labelling configs): video boxes, brush masks | Label Studio        |

Frames are named ``<video_id>/<frame_index:06d>.jpg`` (:func:`frame_file_name`) everywhere a
format names image files: extract the frames under those names to open the labels in a tool.
"""

from __future__ import annotations

import importlib
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any, Callable

import fsspec

#: format name -> module under daq_label.exports providing ``export(selection, dest) -> ExportResult``
FORMATS: dict[str, str] = {
    "ytvis": "daq_label.exports.ytvis",
    "mots-txt": "daq_label.exports.mots",
    "mots-png": "daq_label.exports.mots",
    "cvat-images": "daq_label.exports.cvat",
    "cvat-video": "daq_label.exports.cvat",
    "label-studio": "daq_label.exports.label_studio",
}


@dataclass(frozen=True)
class ExportOptions:
    """Format options. ``mots_classes``: the MOTS class id of every object, ``categories`` (the
    category id; 10, MOTS' ignore class, and above shift up by one) or one KITTI class for all
    (``car`` = 1, ``pedestrian`` = 2), for tools that only know those."""

    mots_classes: str = "categories"


MOTS_CLASS_MODES = ("categories", "car", "pedestrian")


def frame_file_name(video_id: str, frame_index: int, ext: str = "jpg") -> str:
    return f"{video_id}/{frame_index:06d}.{ext}"


@dataclass
class ExportResult:
    format: str
    dest: str
    files: list[str] = field(default_factory=list)
    videos: int = 0
    tracks: int = 0
    masks: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        extra = "".join(f", {k.replace('_', ' ')} {v}" for k, v in self.notes.items())
        return (f"daq-label export: {self.format}: {self.videos} video(s), {self.tracks} track(s), "
                f"{self.masks} mask(s){extra}, {len(self.files)} file(s) -> {self.dest}")


class Destination:
    """A directory URL (any fsspec filesystem) that export files are written into."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = root.rstrip("/") or "/"
        self.url = self.fs.unstrip_protocol(self.root)
        self.written: list[str] = []

    def path(self, relative: str) -> str:
        return posixpath.join(self.root, relative)

    def write_bytes(self, relative: str, data: bytes) -> str:
        path = self.path(relative)
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with self.fs.open(path, "wb") as handle:
            handle.write(data)
        self.written.append(relative)
        return path

    def write_text(self, relative: str, text: str) -> str:
        return self.write_bytes(relative, text.encode("utf-8"))

    def write_json(self, relative: str, obj: Any) -> str:
        return self.write_bytes(relative, json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def exporter(format_name: str) -> Callable[..., ExportResult]:
    """The ``export(selection, dest, format_name, options)`` function of a format."""
    if format_name not in FORMATS:
        raise ValueError(f"unknown export format {format_name!r}; formats: {', '.join(FORMATS)}")
    module = importlib.import_module(FORMATS[format_name])
    return module.export

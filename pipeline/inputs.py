"""What INPUT means, how it expands to video URLs, and the stable ``video_id`` of each video.

INPUT is one of (on any fsspec filesystem):

* a **glob** (contains ``*``, ``?`` or ``[``): every matching file, whatever its extension;
* a **directory**: every file below it (recursively) whose extension is a video container
  (:data:`VIDEO_EXTENSIONS`);
* a **URL list**: a text file named ``*.txt``, ``*.list``, ``*.lst`` or ``*.urls`` with one URL or
  path per line (blank lines and ``#`` comments ignored; relative paths are relative to the list);
* a single video file (anything else that exists).

``video_id`` = the first 20 hex digits (80 bits) of the sha256 of the video's canonical URL
(:func:`pipeline.storage.canonical_url`: protocol plus normalised absolute path). The same file
named the same way always gets the same id; moving or renaming it gives a new id.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Iterator

from fsspec.utils import glob_translate

from pipeline.storage import canonical_url, url_to_fs

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({
    "mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "mts", "m2ts", "flv", "wmv",
    "3gp", "3g2", "ogv", "mxf", "h264", "h265", "hevc", "y4m",
})
URL_LIST_EXTENSIONS = frozenset({"txt", "list", "lst", "urls"})
_GLOB_CHARS = re.compile(r"[*?\[]")

VIDEO_ID_HEX = 20


class InputError(ValueError):
    """INPUT cannot be used (does not exist, matches nothing, ...)."""


@dataclass(frozen=True)
class VideoRef:
    """One video to label: its id and canonical URL."""

    video_id: str
    url: str


def make_ref(url: str, storage_options: dict[str, Any] | None = None) -> VideoRef:
    """The :class:`VideoRef` of ``url``: canonical URL and the sha256-derived ``video_id``."""
    canonical = canonical_url(url, storage_options)
    return VideoRef(hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:VIDEO_ID_HEX], canonical)


def _extension(path: str) -> str:
    name = posixpath.basename(path.rstrip("/"))
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


@dataclass(frozen=True)
class InputSpec:
    """INPUT resolved to its kind: ``glob``, ``directory``, ``url_list`` or ``file``."""

    url: str
    kind: str
    storage_options: tuple[tuple[str, Any], ...] = ()

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.storage_options)

    @classmethod
    def resolve(cls, url: str, storage_options: dict[str, Any] | None = None) -> "InputSpec":
        """Decide what ``url`` is (one metadata call at most); raise :class:`InputError` if it
        does not exist."""
        opts = tuple(sorted((storage_options or {}).items()))
        if _GLOB_CHARS.search(url):
            return cls(url, "glob", opts)
        try:
            fs, path = url_to_fs(url, storage_options)
            if fs.isdir(path):
                return cls(url, "directory", opts)
            if not fs.exists(path):
                raise InputError(f"INPUT {url!r} does not exist")
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - storage errors of any backend
            raise InputError(f"INPUT {url!r} cannot be read: {type(exc).__name__}: {exc}") from exc
        if _extension(path) in URL_LIST_EXTENSIONS:
            return cls(url, "url_list", opts)
        return cls(url, "file", opts)

    def expand(self) -> Iterator[str]:
        """Every video URL INPUT stands for, lazily (listings are paged by the filesystem)."""
        fs, path = url_to_fs(self.url, self.options)
        if self.kind == "file":
            yield fs.unstrip_protocol(path)
        elif self.kind == "directory":
            for root, _dirs, files in fs.walk(path):
                for name in sorted(files):
                    if _extension(name) in VIDEO_EXTENSIONS:
                        yield fs.unstrip_protocol(posixpath.join(root, name))
        elif self.kind == "glob":
            yield from self._expand_glob(fs, path)
        elif self.kind == "url_list":
            yield from self._expand_list(fs, path)
        else:
            raise ValueError(f"unknown input kind {self.kind!r}")

    def _expand_glob(self, fs: Any, path: str) -> Iterator[str]:
        # Walk the directory part before the first wildcard and match lazily, so the first
        # match is found without listing the whole tree (fs.glob would list everything first).
        parts = path.split("/")
        static = []
        for part in parts:
            if _GLOB_CHARS.search(part):
                break
            static.append(part)
        root = "/".join(static) or ("/" if path.startswith("/") else "")
        pattern = re.compile(glob_translate(path))
        depth = None if "**" in path else len(parts) - len(static)
        if not root or not fs.isdir(root):
            return
        for dirpath, _dirs, files in fs.walk(root, maxdepth=depth):
            for name in sorted(files):
                full = posixpath.join(dirpath, name)
                if pattern.match(full):
                    yield fs.unstrip_protocol(full)

    def _expand_list(self, fs: Any, path: str) -> Iterator[str]:
        base = posixpath.dirname(path)
        with fs.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                entry = line.strip()
                if not entry or entry.startswith("#"):
                    continue
                if "://" in entry or entry.startswith("/"):
                    yield entry
                else:  # relative to the list file
                    yield fs.unstrip_protocol(posixpath.normpath(posixpath.join(base, entry)))

    def first_match(self) -> str | None:
        """The first video URL INPUT stands for, or None (cheap: stops at the first)."""
        for url in self.expand():
            return url
        return None

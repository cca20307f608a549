"""What INPUT means, how it expands to video URLs, and the stable ``video_id`` of each video.

INPUT is one of (on any fsspec filesystem):

* a **glob** (contains ``*``, ``?`` or ``[``): every matching file, whatever its extension;
* a **directory**: every file below it (recursively) whose extension is a video container
  (:data:`VIDEO_EXTENSIONS`);
* a **URL list**: a text file named ``*.txt``, ``*.list``, ``*.lst`` or ``*.urls`` with one URL or
  path per line (blank lines and ``#`` comments ignored; relative paths are relative to the list).
  A line that cannot name a video (not UTF-8, control characters, an unknown or uninstalled
  protocol, a URL without a path, a Windows drive path, over :data:`MAX_ENTRY_CHARS` characters) is
  *malformed*: :meth:`InputSpec.check_url_list` names it (line number, reason) before the job
  starts; with ``skip_bad_lines`` such lines become ``failed`` videos (``bad_input_line``) instead.
  A URL listed twice is labelled once (the second line is logged as a repeat);
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

import fsspec
from fsspec.utils import glob_translate

from pipeline.listing import iter_files
from pipeline.storage import canonical_url, url_to_fs
from pipeline.storage_access import describe_storage_error

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({
    "mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "mts", "m2ts", "flv", "wmv",
    "3gp", "3g2", "ogv", "mxf", "h264", "h265", "hevc", "y4m",
})
URL_LIST_EXTENSIONS = frozenset({"txt", "list", "lst", "urls"})
_GLOB_CHARS = re.compile(r"[*?\[]")

VIDEO_ID_HEX = 20
MAX_ENTRY_CHARS = 4096
#: videos.error_type of a malformed URL-list line recorded with ``skip_bad_lines``
BAD_INPUT_LINE = "bad_input_line"
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")
_SCHEME_ONE_SLASH = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/(?!/)")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


class InputError(ValueError):
    """INPUT cannot be used (does not exist, matches nothing, ...)."""


@dataclass(frozen=True)
class VideoRef:
    """One video to label: its id and canonical URL. ``input_error`` is set for a malformed
    URL-list line kept by ``skip_bad_lines``: such a video is recorded failed, never opened.
    ``quarantined`` is set by ClaimVideos for a video that kept killing its worker: it is
    recorded failed (``repeated_worker_crash``) with that message, never run again."""

    video_id: str
    url: str
    input_error: str | None = None
    quarantined: str | None = None


@dataclass(frozen=True)
class BadInputLine:
    """A URL-list line that cannot name a video."""

    list_url: str
    line: int
    text: str
    reason: str

    def describe(self) -> str:
        shown = self.text if len(self.text) <= 120 else self.text[:117] + "..."
        return f"{self.list_url} line {self.line}: {self.reason}: {shown!r}"


def _video_id(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:VIDEO_ID_HEX]


def make_ref(url: "str | BadInputLine", storage_options: dict[str, Any] | None = None) -> VideoRef:
    """The :class:`VideoRef` of ``url``: canonical URL and the sha256-derived ``video_id``.

    The id is a fixed-length hex digest, so no input name (``..``, absolute paths, symlinks,
    unicode, very long names) can make an output path leave OUTPUT. A :class:`BadInputLine`
    gets the id of ``<list URL>#line=<n>`` and carries its reason."""
    if isinstance(url, BadInputLine):
        where = f"{canonical_url(url.list_url, storage_options)}#line={url.line}"
        return VideoRef(_video_id(where), where, url.describe())
    canonical = canonical_url(url, storage_options)
    return VideoRef(_video_id(canonical), canonical)


def check_list_entry(entry: str) -> str | None:
    """Why a (stripped, non-comment) URL-list entry cannot name a video, or None if it can."""
    if len(entry) > MAX_ENTRY_CHARS:
        return f"longer than {MAX_ENTRY_CHARS} characters"
    if _CONTROL_CHARS.search(entry):
        return "contains control characters"
    if _WINDOWS_DRIVE.match(entry):
        return "a Windows drive path (use a POSIX path or a URL)"
    if _SCHEME_ONE_SLASH.match(entry):
        return "looks like a URL with one slash after the scheme (write scheme://...)"
    match = _SCHEME.match(entry)
    if match:
        protocol, rest = match.group(1).lower(), match.group(2)
        try:
            fsspec.get_filesystem_class(protocol)
        except ImportError as exc:
            return f"protocol {protocol}:// needs a package that is not installed ({exc})"
        except ValueError:
            return f"unknown protocol {protocol}://"
        if not rest.strip("/"):
            return "a URL without a path"
    return None


def _is_dir(fs: Any, path: str) -> bool:
    """``fs.isdir`` that lets storage failures through (FileNotFoundError when ``path`` does not
    exist): gcsfs's ``isdir`` and ``exists`` answer False on any error, so an unreachable host
    would read as "does not exist" or "matches no file"."""
    return fs.info(path).get("type") == "directory"


def _extension(path: str) -> str:
    name = posixpath.basename(path.rstrip("/"))
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


@dataclass(frozen=True)
class InputSpec:
    """INPUT resolved to its kind: ``glob``, ``directory``, ``url_list`` or ``file``."""

    url: str
    kind: str
    storage_options: tuple[tuple[str, Any], ...] = ()
    skip_bad_lines: bool = False

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.storage_options)

    @classmethod
    def resolve(cls, url: str, storage_options: dict[str, Any] | None = None,
                skip_bad_lines: bool = False) -> "InputSpec":
        """Decide what ``url`` is (one metadata call at most); raise :class:`InputError` if it
        does not exist."""
        opts = tuple(sorted((storage_options or {}).items()))
        if _GLOB_CHARS.search(url):
            return cls(url, "glob", opts, skip_bad_lines)
        try:
            fs, path = url_to_fs(url, storage_options)
            if _is_dir(fs, path):  # raises FileNotFoundError only for a missing file
                return cls(url, "directory", opts, skip_bad_lines)
        except FileNotFoundError:
            raise InputError(f"INPUT {url!r} does not exist") from None
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - storage errors of any backend
            message = describe_storage_error(exc, url, storage_options, "INPUT", "cannot be read")
            raise InputError(message) from exc
        if _extension(path) in URL_LIST_EXTENSIONS:
            return cls(url, "url_list", opts, skip_bad_lines)
        return cls(url, "file", opts, skip_bad_lines)

    def expand(self) -> Iterator[str]:
        """Every video URL INPUT stands for, lazily (listings are paged by the filesystem).
        Malformed URL-list lines are left out (see :meth:`entries`)."""
        for entry in self.entries():
            if isinstance(entry, str):
                yield entry

    def entries(self) -> "Iterator[str | BadInputLine]":
        """What the job labels: every video URL, plus (with ``skip_bad_lines``) each malformed
        URL-list line, to be recorded failed. Without ``skip_bad_lines`` malformed lines are
        dropped here; :meth:`check_url_list` refuses them before the job starts."""
        fs, path = url_to_fs(self.url, self.options)
        if self.kind == "file":
            yield fs.unstrip_protocol(path)
        elif self.kind == "directory":
            for file_path in iter_files(fs, path):  # page by page: never the whole listing
                if _extension(file_path) in VIDEO_EXTENSIONS:
                    yield fs.unstrip_protocol(file_path)
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
        try:
            if not root or not _is_dir(fs, root):
                return
        except FileNotFoundError:
            return
        for full in iter_files(fs, root, maxdepth=depth):
            if pattern.match(full):
                yield fs.unstrip_protocol(full)

    def _list_lines(self, fs: Any, path: str) -> "Iterator[tuple[int, str | BadInputLine]]":
        """(line number, URL or :class:`BadInputLine`) of every non-blank, non-comment line."""
        base = posixpath.dirname(path)
        with fs.open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    entry = raw.decode("utf-8").strip()
                except UnicodeDecodeError:
                    text = raw.decode("utf-8", errors="replace").strip()
                    yield number, BadInputLine(self.url, number, text, "not valid UTF-8")
                    continue
                if number == 1:
                    entry = entry.lstrip("\ufeff")  # a byte-order mark some editors write
                if not entry or entry.startswith("#"):
                    continue
                reason = check_list_entry(entry)
                if reason is not None:
                    yield number, BadInputLine(self.url, number, entry, reason)
                elif "://" in entry or entry.startswith("/"):
                    yield number, entry
                else:  # relative to the list file
                    yield number, fs.unstrip_protocol(posixpath.normpath(posixpath.join(base, entry)))

    def _expand_list(self, fs: Any, path: str) -> "Iterator[str | BadInputLine]":
        for _number, entry in self._list_lines(fs, path):
            if isinstance(entry, str) or self.skip_bad_lines:
                yield entry

    def check_url_list(self, max_reported: int = 5) -> tuple[list[BadInputLine], int]:
        """Read a URL list once, streaming: (its malformed lines, the number of repeated URLs).
        Repeats are logged with both line numbers; they are labelled once. Raises
        :class:`InputError` naming up to ``max_reported`` malformed lines unless
        ``skip_bad_lines``. Memory: 8 bytes per distinct URL."""
        if self.kind != "url_list":
            return [], 0
        fs, path = url_to_fs(self.url, self.options)
        seen: dict[int, int] = {}
        bad: list[BadInputLine] = []
        repeats = 0
        for number, entry in self._list_lines(fs, path):
            if isinstance(entry, BadInputLine):
                bad.append(entry)
                continue
            key = int.from_bytes(hashlib.blake2b(entry.encode(), digest_size=8).digest(), "big")
            first = seen.setdefault(key, number)
            if first != number:
                repeats += 1
                if repeats <= max_reported:
                    logger.warning("%s line %d repeats line %d (%s): labelled once", self.url,
                                   number, first, entry)
        if repeats > max_reported:
            logger.warning("%s: %d repeated URL(s) in all, each labelled once", self.url, repeats)
        if bad and not self.skip_bad_lines:
            shown = "; ".join(b.describe() for b in bad[:max_reported])
            more = f" (and {len(bad) - max_reported} more)" if len(bad) > max_reported else ""
            raise InputError(f"INPUT has {len(bad)} malformed line(s): {shown}{more}. Fix them, "
                             "or pass --skip-bad-input-lines to record them as failed videos")
        for item in bad:
            logger.warning("skipping %s (recorded failed: %s)", item.describe(), BAD_INPUT_LINE)
        return bad, repeats

    def first_match(self) -> str | None:
        """The first video URL INPUT stands for, or None (cheap: stops at the first)."""
        for url in self.expand():
            return url
        return None

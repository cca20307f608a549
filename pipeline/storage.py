"""Storage through fsspec: canonical URLs, output layout, and commits that never expose half a file.

Output layout (``OUTPUT`` is any fsspec URL)::

    OUTPUT/_provenance.json              the run's provenance (written once, checked on reruns)
    OUTPUT/tracks/<video_id>.parquet
    OUTPUT/track_summary/<video_id>.parquet
    OUTPUT/videos/<video_id>.parquet
    OUTPUT/_done/<video_id>.json         done marker, written after the three tables
    OUTPUT/_tmp/...                      files being written (never read as results)

Every file is written under a unique temporary name in ``OUTPUT/_tmp/`` and then moved to its
final name: a rename on local disks (atomic), a server-side copy on object stores (the final object
appears only once complete). A worker killed mid-write leaves at most a file in ``_tmp/``.
"""

from __future__ import annotations

import errno
import json
import logging
import posixpath
import uuid
from typing import Any, Callable, Iterator

import fsspec
from fsspec import AbstractFileSystem

from pipeline.listing import iter_files
from schemas.tables import DONE_DIR, PROVENANCE_FILE, TMP_DIR

logger = logging.getLogger(__name__)

#: Write errors that no retry fixes (full disk, quota, read-only filesystem): the job stops at
#: once instead of labelling videos it cannot store.
FATAL_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def is_fatal_write_error(exc: BaseException) -> bool:
    """A full disk, an exhausted quota or a read-only filesystem (anywhere in the cause chain)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in FATAL_WRITE_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def url_to_fs(url: str, storage_options: dict[str, Any] | None = None) -> tuple[AbstractFileSystem, str]:
    """The filesystem of ``url`` and the path within it (fsspec's own resolution)."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, path


def canonical_url(url: str, storage_options: dict[str, Any] | None = None) -> str:
    """The URL fsspec resolves ``url`` to: protocol plus normalised path, local paths absolute
    (``file:///abs/path``). Two spellings of the same file get the same canonical URL."""
    if "::" in url:  # chained URLs need the filesystem itself
        fs, path = url_to_fs(url, storage_options)
        return fs.unstrip_protocol(posixpath.normpath(path) if is_local(fs) else path)
    # No filesystem instance: creating one may contact the store (credentials), once per URL.
    protocol = fsspec.core.split_protocol(url)[0] or "file"
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError):  # e.g. s3:// without s3fs: reading it will fail clearly
        return url
    path = cls._strip_protocol(url)
    names = cls.protocol if isinstance(cls.protocol, (tuple, list)) else (cls.protocol,)
    if "file" in names or "local" in names:
        return "file://" + posixpath.normpath(path)
    if "://" in path:  # filesystems whose paths are full URLs (http)
        return path
    return f"{names[0]}://{path}"


def is_local(fs: AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def join(base: str, *parts: str) -> str:
    """Join URL path segments (``base`` may carry a protocol)."""
    return posixpath.join(base.rstrip("/"), *parts)


class OutputLayout:
    """Paths of everything the label job writes under one OUTPUT directory."""

    def __init__(self, output_url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.storage_options = dict(storage_options or {})
        self.fs, root = url_to_fs(output_url, self.storage_options)
        self.root = root.rstrip("/") or "/"
        self.url = self.fs.unstrip_protocol(self.root)

    # Layouts travel to workers inside DoFns: pickle the URL, rebuild the filesystem there.
    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["storage_options"])  # type: ignore[misc]

    def table_path(self, table: str, video_id: str) -> str:
        return join(self.root, table, f"{video_id}.parquet")

    def done_path(self, video_id: str) -> str:
        return join(self.root, DONE_DIR, f"{video_id}.json")

    @property
    def done_dir(self) -> str:
        return join(self.root, DONE_DIR)

    @property
    def tmp_dir(self) -> str:
        return join(self.root, TMP_DIR)

    @property
    def provenance_path(self) -> str:
        return join(self.root, PROVENANCE_FILE)

    def tmp_path(self, final_path: str) -> str:
        """A unique temporary name for a file that will be committed to ``final_path``."""
        rel = posixpath.relpath(final_path, self.root).replace("/", "__")
        return join(self.tmp_dir, f"{uuid.uuid4().hex}.{rel}")

    def write_atomic(self, final_path: str, writer: Callable[[Any], None]) -> int:
        """Write through ``writer(file_object)`` to a temporary file, then commit it to
        ``final_path`` (replacing any previous version). Returns the bytes written."""
        tmp = self.tmp_path(final_path)
        self.fs.makedirs(self.tmp_dir, exist_ok=True)
        try:
            with self.fs.open(tmp, "wb") as handle:
                writer(handle)
            size = int(self.fs.size(tmp))
            self.fs.makedirs(posixpath.dirname(final_path), exist_ok=True)
            self.fs.mv(tmp, final_path)
        except BaseException:
            self._remove_quietly(tmp)
            raise
        return size

    def check_writable(self) -> None:
        """Write, commit and remove a small probe file (the three operations every result
        needs), so an OUTPUT that cannot take results fails before any video is decoded."""
        probe = join(self.root, f"_write_check.{uuid.uuid4().hex}")
        try:
            self.write_atomic(probe, lambda handle: handle.write(b"daq-label write check\n"))
        finally:
            self._remove_quietly(probe)

    def write_json_atomic(self, final_path: str, payload: dict[str, Any]) -> int:
        data = json.dumps(payload, sort_keys=True, indent=1).encode()
        return self.write_atomic(final_path, lambda handle: handle.write(data))

    def read_json(self, path: str) -> dict[str, Any]:
        with self.fs.open(path, "rb") as handle:
            return json.loads(handle.read().decode())

    def iter_done_ids(self) -> Iterator[tuple[str, str]]:
        """(video_id, marker path) of every done marker, listed once, page by page (names only:
        no marker is read)."""
        if not self.fs.exists(self.done_dir):
            return
        for path in iter_files(self.fs, self.done_dir):
            name = posixpath.basename(path)
            if name.endswith(".json"):
                yield name[: -len(".json")], path

    def clear_tmp(self) -> int:
        """Remove leftovers of killed runs from ``_tmp/`` (call before a run starts)."""
        if not self.fs.exists(self.tmp_dir):
            return 0
        leftovers = self.fs.find(self.tmp_dir)
        for path in leftovers:
            self._remove_quietly(path)
        return len(leftovers)

    def _remove_quietly(self, path: str) -> None:
        try:
            if self.fs.exists(path):
                self.fs.rm(path)
        except OSError as exc:  # best effort: a leftover temp file is harmless
            logger.warning("could not remove temporary file %s: %s", path, exc)

"""List the files under a prefix page by page, so a corpus of millions of objects is never held
in memory at once.

fsspec's ``walk``/``find`` on object stores gather a whole listing before returning it (and keep
it in the filesystem's directory cache): about a kilobyte of metadata per object, a gigabyte per
million videos on the worker that lists. Here GCS (gcsfs) and S3 (s3fs) are read one page of at
most :data:`PAGE_SIZE` objects at a time through the filesystems' own authenticated request
methods, without touching the cache; names come out in the store's (lexicographic) order. Other
filesystems use ``fs.walk``, which lists one directory at a time (local disks: ``os.scandir``).
"""

from __future__ import annotations

import logging
import posixpath
from typing import Any, Callable, Iterator

logger = logging.getLogger(__name__)

PAGE_SIZE = 1000


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return tuple(protocol) if isinstance(protocol, (tuple, list)) else (protocol,)


def _bucket_and_prefix(root: str) -> tuple[str, str]:
    bucket, _, key = root.strip("/").partition("/")
    return bucket, (key.rstrip("/") + "/") if key else ""


def _gcs_pages(fs: Any, bucket: str, prefix: str) -> Iterator[list[str]]:
    from fsspec.asyn import sync

    token: str | None = None
    while True:
        params: dict[str, Any] = {"prefix": prefix or None, "maxResults": PAGE_SIZE, "fields":
                                  "items(name),nextPageToken"}
        if token:
            params["pageToken"] = token
        page = sync(fs.loop, fs._call, "GET", "b/{}/o", bucket, json_out=True, **params)
        yield [f"{bucket}/{item['name']}" for item in page.get("items", [])]
        token = page.get("nextPageToken")
        if not token:
            return


def _s3_pages(fs: Any, bucket: str, prefix: str) -> Iterator[list[str]]:
    from fsspec.asyn import sync

    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": PAGE_SIZE,
                              **getattr(fs, "req_kw", {})}
    while True:
        page = sync(fs.loop, fs._call_s3, "list_objects_v2", **kwargs)
        yield [f"{bucket}/{item['Key']}" for item in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


def _pager(fs: Any) -> Callable[[Any, str, str], Iterator[list[str]]] | None:
    names = _protocols(fs)
    if ("gs" in names or "gcs" in names) and hasattr(fs, "_call"):
        return _gcs_pages
    if ("s3" in names or "s3a" in names) and hasattr(fs, "_call_s3"):
        return _s3_pages
    return None


def iter_files(fs: Any, root: str, maxdepth: int | None = None) -> Iterator[str]:
    """Paths of the files under directory ``root`` (recursively; ``maxdepth`` levels at most,
    1 = the files directly in ``root``), lazily, one listing page at a time."""
    pager = _pager(fs)
    if pager is None:
        for dirpath, _dirs, files in fs.walk(root, maxdepth=maxdepth):
            for name in sorted(files):
                yield posixpath.join(dirpath, name)
        return
    bucket, prefix = _bucket_and_prefix(root)
    base_depth = prefix.count("/")
    for page in pager(fs, bucket, prefix):
        for path in page:
            if path.endswith("/"):  # a "directory placeholder" object
                continue
            if maxdepth is not None and path.split("/", 1)[1].count("/") - base_depth >= maxdepth:
                continue
            yield path

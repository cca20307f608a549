"""How the job reaches object stores: ``--storage-option KEY=VALUE`` and one-line storage errors.

``--storage-option`` takes fsspec's own option names for the filesystem of the URL (gcsfs:
``project``, ``token``, ``requester_pays``, ``endpoint_url``...; s3fs: ``key``, ``secret``,
``anon``, ``client_kwargs``, ``requester_pays``...). A value is parsed as JSON where it parses
(``true``, ``3``, ``{"endpoint_url": "http://..."}``), else kept as a string. The same options
reach every filesystem call of the job: listing INPUT, reading videos and the checkpoint,
writing and validating OUTPUT, on the launcher and on every worker.

Storage failures (no route to the host, refused credentials, a missing bucket) reach the user as
one line naming the URL, the host, the bucket and the HTTP status where known
(:func:`describe_storage_error`), not as the client library's traceback.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterable
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

#: Loggers of storage clients that log a full traceback before re-raising what they give up on.
_TRACEBACK_LOGGERS = ("gcsfs", "gcsfs.retry", "s3fs", "aiobotocore", "botocore")


def parse_storage_options(items: Iterable[str] | None) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` -> options; values are JSON where they parse, else strings.
    Raises ValueError for an item without ``=`` or with an empty key."""
    options: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--storage-option {item!r}: expected KEY=VALUE (fsspec option name)")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        options[key] = value
    return options


def _host(url: str, storage_options: dict[str, Any] | None) -> str | None:
    options = storage_options or {}
    protocol = urlsplit(url).scheme.lower()
    if protocol in ("gs", "gcs"):
        endpoint = options.get("endpoint_url") or os.environ.get("STORAGE_EMULATOR_HOST")
        return str(endpoint or "https://storage.googleapis.com")
    if protocol in ("s3", "s3a"):
        client = options.get("client_kwargs") or {}
        endpoint = (options.get("endpoint_url") or client.get("endpoint_url")
                    or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
        return str(endpoint or "AWS S3 (no endpoint_url: the AWS default for the region)")
    if protocol in ("http", "https"):
        return urlsplit(url).netloc
    return None


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int) and 100 <= code < 600:
        return code
    status = getattr(exc, "status", None)
    if isinstance(status, int) and 100 <= status < 600:
        return status
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        value = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(value) if value else None
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 16:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def describe_storage_error(exc: BaseException, url: str, storage_options: dict[str, Any] | None = None,
                           what: str = "storage", verb: str = "failed") -> str:
    """One line: what failed, on which URL, bucket and host, with the HTTP status and the
    innermost cause (e.g. ``Cannot connect to host 127.0.0.1:9``, ``Unable to locate credentials``)."""
    chain = _chain(exc)
    status = next((s for s in map(_status, chain) if s is not None), None)
    parts = urlsplit(url)
    bucket = parts.netloc if parts.scheme.lower() in ("gs", "gcs", "s3", "s3a") else None
    where = [f"bucket {bucket!r}"] if bucket else []
    host = _host(url, storage_options)
    if host:
        where.append(f"host {host}")
    if status is not None:
        where.append(f"HTTP {status}")
    outer, inner = _message(chain[0]), _message(chain[-1])
    cause = outer if inner in outer or inner == outer else f"{outer} (cause: {inner})"
    if len(cause) > 400:
        cause = cause[:397] + "..."
    context = f" ({', '.join(where)})" if where else ""
    return f"{what} {url!r} {verb}{context}: {cause}"


class _NoTraceback(logging.Filter):
    """Keep a storage client's message, drop the traceback it attaches (we report the error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.levelno < logging.CRITICAL:
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_storage_tracebacks() -> None:
    """Storage clients log each give-up with a traceback; keep their one-line messages only."""
    for name in _TRACEBACK_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, _NoTraceback) for f in target.filters):
            target.addFilter(_NoTraceback())

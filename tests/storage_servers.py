"""Real object-store servers on 127.0.0.1 for the storage tests: Google's JSON API served by
``gcp-storage-emulator`` and S3 served by moto, each in its own process on a free port.

Used as a pytest plugin (``pytest_plugins = ["storage_servers"]``): the session fixtures
``gcs_server`` and ``s3_server`` start a server once per test session and stop it at the end.

Emulator quirks are handled here, never in the product:

* gcsfs (2025+) asks Google's Storage Control gRPC service for every bucket's type (hierarchical
  or not); the emulator has no gRPC endpoint, so each first use of a bucket would wait ~60 s for
  that lookup to time out. ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` selects gcsfs's plain
  filesystem, which skips the lookup (set for child processes; registered in this process).
* The emulator does not implement the ``moveTo`` object method gcsfs tries first for a move (it
  answers 501, gcsfs logs a traceback and falls back to copy + delete). :func:`serve_gcs` runs the
  emulator with a ``moveTo`` route that does the same copy + delete on the server.

Run ``python tests/storage_servers.py gcs PORT`` to serve the patched emulator by hand.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

VENV_BIN = Path(sys.executable).parent
S3_KEY = {"key": "testing", "secret": "testing"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalServer:
    """A server process and the endpoint it answers on."""

    name: str
    process: subprocess.Popen
    endpoint: str
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _wait_until_up(server: LocalServer, path: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with status {server.process.returncode}")
        try:
            with urllib.request.urlopen(server.endpoint + path, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.name} did not answer on {server.endpoint} within {timeout_s:.0f}s")


def start_gcs_emulator(log_dir: Path) -> LocalServer:
    port = free_port()
    log = open(log_dir / "gcs_emulator.log", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen([sys.executable, __file__, "gcs", str(port)], stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    server = LocalServer("gcp-storage-emulator", process, endpoint,
                         {"STORAGE_EMULATOR_HOST": endpoint, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"})
    _wait_until_up(server, "/")
    return server


def start_moto_s3(log_dir: Path) -> LocalServer:
    port = free_port()
    log = open(log_dir / "moto_server.log", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=log)
    server = LocalServer("moto_server", process, f"http://127.0.0.1:{port}")
    _wait_until_up(server, "/moto-api/")
    return server


def gcs_fill(server: LocalServer, bucket: str, names: list[str], content: bytes = b"x") -> None:
    """Create objects ``names`` (with ``content``) in ``bucket`` on the patched emulator, in
    requests of 5,000 (see :func:`serve_gcs`)."""
    import json

    from gcp_storage_emulator.settings import API_ENDPOINT

    for start in range(0, len(names), 5000):
        body = json.dumps({"names": names[start:start + 5000], "content": content.decode()}).encode()
        request = urllib.request.Request(f"{server.endpoint}{API_ENDPOINT}/_fixture/b/{bucket}/fill", data=body,
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=120) as answer:
            assert json.load(answer)["created"] == len(names[start:start + 5000])


def s3_storage_options(server: LocalServer) -> dict:
    """fsspec/s3fs options that reach the local S3 server (no environment needed)."""
    return {**S3_KEY, "client_kwargs": {"endpoint_url": server.endpoint}}


def _use_plain_gcsfs() -> None:
    """This process: gs:// through gcsfs's plain filesystem (no bucket-type gRPC lookup)."""
    import fsspec
    from gcsfs.core import GCSFileSystem

    fsspec.register_implementation("gs", GCSFileSystem, clobber=True)
    fsspec.register_implementation("gcs", GCSFileSystem, clobber=True)
    GCSFileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = start_gcs_emulator(tmp_path_factory.mktemp("gcs_emulator"))
    saved = {name: os.environ.get(name) for name in server.env}
    os.environ.update(server.env)
    _use_plain_gcsfs()
    try:
        yield server
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = start_moto_s3(tmp_path_factory.mktemp("moto"))
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- the patched emulator

def serve_gcs(port: int) -> None:
    """The GCS emulator on 127.0.0.1:``port`` (in memory) with a ``moveTo`` route."""
    import json
    from http import HTTPStatus

    from gcp_storage_emulator import server as emulator
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects
    from gcp_storage_emulator.settings import API_ENDPOINT

    def move(request, response, storage, *args, **kwargs):  # the emulator's handler signature
        params = request.params
        try:
            moved = objects._copy(request.base_url, storage, params["bucket_name"], params["object_id"],
                                  params["bucket_name"], params["dest_object_id"])
            storage.delete_file(params["bucket_name"], params["object_id"])
        except NotFound:
            response.status = HTTPStatus.NOT_FOUND
            return
        response.json(moved)

    route = (rf"^{API_ENDPOINT}/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)/moveTo/o/"
             rf"(?P<dest_object_id>.*[^/]+)$", {emulator.POST: move})
    emulator.HANDLERS = (route, *emulator.HANDLERS)

    # The emulator answers an object listing with every object at once and every field: it
    # ignores maxResults, pageToken and fields. GCS pages (1,000 names at most, nextPageToken)
    # and returns only the fields asked for: do both here as GCS does, so the listing tests see
    # real pages. The token is the last name of the page (names are sorted).
    def paged_ls(request, response, storage, *args, **kwargs):
        objects.ls(request, response, storage, *args, **kwargs)
        if response.status != HTTPStatus.OK or not response._content:
            return
        listing = json.loads(response._content)
        items = listing.get("items") or []
        token = (request.query.get("pageToken") or [None])[0]
        if token:
            items = [item for item in items if item["name"] > token]
            listing["prefixes"] = [p for p in listing.get("prefixes") or [] if p > token]
        limit = min(int((request.query.get("maxResults") or ["1000"])[0]), 1000)
        if len(items) > limit:
            items = items[:limit]
            listing["nextPageToken"] = items[-1]["name"]
            listing["prefixes"] = [p for p in listing.get("prefixes") or [] if p <= items[-1]["name"]]
        fields = (request.query.get("fields") or [""])[0]
        if fields.startswith("items("):  # a partial response, as GCS gives: items(name,size),...
            keep = fields[len("items("):fields.index(")")].split(",")
            items = [{key: item[key] for key in keep if key in item} for item in items]
        listing["items"] = items
        response.json(listing)

    for _pattern, methods in emulator.HANDLERS:
        if methods.get(emulator.GET) is objects.ls:
            methods[emulator.GET] = paged_ls

    # A fixture-only route that creates many small objects in one request (gcs_fill): one
    # upload per object through the emulator's single-threaded server takes minutes for 10,000.
    # The objects are what the upload handler would store; reading and listing stay the real API.
    def fill(request, response, storage, *args, **kwargs):
        body = request.data
        content = body.get("content", "").encode()
        bucket = request.params["bucket_name"]
        for name in body["names"]:
            obj = objects._make_object_resource(request.base_url, bucket, name, "application/octet-stream",
                                                str(len(content)))
            storage.create_file(bucket, name, content, objects._checksums(content, obj))
        response.json({"created": len(body["names"])})

    fill_route = (rf"^{API_ENDPOINT}/_fixture/b/(?P<bucket_name>[-.\w]+)/fill$", {emulator.POST: fill})
    emulator.HANDLERS = (fill_route, *emulator.HANDLERS)
    # In memory, the emulator still serialises its whole metadata to JSON after every write
    # (a copy only a restart from disk would read): O(objects) per upload, minutes for a
    # 10,000-object bucket. The in-memory server never reads it back, so skip it.
    from gcp_storage_emulator.storage import Storage

    Storage._write_config_to_file = lambda self: None
    emulator.create_server("127.0.0.1", port, in_memory=True).run()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "gcs":
        sys.exit("usage: storage_servers.py gcs PORT")
    serve_gcs(int(sys.argv[2]))

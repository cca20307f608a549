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
    emulator.create_server("127.0.0.1", port, in_memory=True).run()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "gcs":
        sys.exit("usage: storage_servers.py gcs PORT")
    serve_gcs(int(sys.argv[2]))

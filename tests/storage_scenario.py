"""The label job end to end on an object store (a real local server, see ``storage_servers``):
videos, a URL list and the checkpoint in a bucket; every table written to the bucket; validate
on the bucket; resume; a run killed mid-job, then rerun. ``test_storage_gcs`` and
``test_storage_s3`` run these checks against their server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.cli import main as cli_main
from pipeline.storage import url_to_fs

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "tests" / "data" / "reference_case1" / "online"
EDGE = ROOT / "tests" / "data" / "videos_edge"
SAMPLES = ROOT / "samples" / "videos"
SAMPLE_FILES = ("05_default_juggle.mp4", "01_dog.mp4")
EDGE_FILES = ("one_frame.mp4",)
CLIP_FRAMES = 8
FAST = ["--workers", "1", "--torch-threads", "1"]
TABLE_NAMES = ("tracks", "track_summary", "videos")
TIMING = ("decode_seconds", "model_seconds")


@dataclass
class Bucket:
    """A bucket on a local server, how to reach it from this process, the CLI and children."""

    protocol: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def url(self, *parts: str) -> str:
        return "/".join([f"{self.protocol}://{self.name}", *parts])

    @property
    def fs(self) -> Any:
        return url_to_fs(self.url(), self.options)[0]

    @property
    def cli_options(self) -> list[str]:
        args: list[str] = []
        for key, value in self.options.items():
            args += ["--storage-option", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
        return args

    def path(self, *parts: str) -> str:
        return "/".join([self.name, *parts])


def upload_corpus(bucket: Bucket, work: Path) -> dict[str, Any]:
    """Clips, a URL list (absolute and relative lines) and the checkpoint into ``bucket``."""
    from test_label_e2e import cut_clip

    fs = bucket.fs
    fs.mkdir(bucket.name)
    names = []
    for name in SAMPLE_FILES:
        clip = cut_clip(SAMPLES / name, work / name, CLIP_FRAMES)
        fs.put_file(str(clip), bucket.path("videos", name))
        names.append(name)
    for name in EDGE_FILES:
        fs.put_file(str(EDGE / name), bucket.path("videos", name))
        names.append(name)
    lines = ["# corpus on the bucket", bucket.url("videos", names[0]), *[f"../videos/{n}" for n in names[1:]]]
    fs.pipe(bucket.path("lists", "videos.txt"), ("\n".join(lines) + "\n").encode())
    fs.put_file(str(CASE / "weights.pt"), bucket.path("models", "weights.pt"))
    model = ["--checkpoint", bucket.url("models", "weights.pt"), "--config", str(CASE / "config.yaml")]
    return {"names": names, "model": model, "glob": bucket.url("videos", "*.mp4"),
            "list": bucket.url("lists", "videos.txt")}


def label(args: list[str]) -> tuple[int, str]:
    """``daq-label label`` in this process: (exit status, stdout)."""
    buffer = StringIO()
    with redirect_stdout(buffer):
        rc = cli_main(["label", *args])
    return rc, buffer.getvalue()


def summary_counts(stdout: str) -> tuple[int, int, int, int, int]:
    """(labelled, ok, partial, failed, already done) from the summary line."""
    import re

    match = re.search(r"(\d+) video\(s\) labelled \(ok (\d+), partial (\d+), failed (\d+)\), (\d+) already done",
                      stdout)
    assert match, stdout
    return tuple(int(g) for g in match.groups())  # type: ignore[return-value]


def read_tables(bucket: Bucket, out: str) -> dict[str, pa.Table]:
    fs = bucket.fs
    tables = {}
    for name in TABLE_NAMES:
        paths = sorted(fs.find(bucket.path(out, name)))
        assert paths, f"no {name} files under {out}"
        tables[name] = pa.concat_tables([pq.read_table(p, filesystem=fs) for p in paths])
    return tables


def rows(table: pa.Table, drop: tuple[str, ...] = ()) -> list[dict]:
    items = [{k: v for k, v in r.items() if k not in drop} for r in table.to_pylist()]
    return sorted(items, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def object_bytes(bucket: Bucket, out: str) -> dict[str, bytes]:
    fs = bucket.fs
    return {p: fs.cat_file(p) for p in fs.find(bucket.path(out)) if "/_tmp/" not in p}


def tmp_files(bucket: Bucket, out: str) -> list[str]:
    fs = bucket.fs
    fs.invalidate_cache()
    return list(fs.find(bucket.path(out, "_tmp")))


def validate(bucket: Bucket, out: str) -> tuple[int, str]:
    buffer = StringIO()
    with redirect_stdout(buffer):
        rc = cli_main(["validate", bucket.url(out), "--deep", *bucket.cli_options])
    return rc, buffer.getvalue()


def start_label_process(args: list[str], env: dict[str, str], tmpdir: Path) -> subprocess.Popen:
    """``daq-label label`` as a child process with a fresh TMPDIR (so the checkpoint is fetched
    from the bucket, not found in a local cache)."""
    child_env = {**os.environ, **env, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "jobs.cli", "label", *args], cwd=ROOT, env=child_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_after_first_table(bucket: Bucket, proc: subprocess.Popen, out: str, timeout_s: float = 120) -> bool:
    """SIGKILL ``proc`` as soon as its first table file reaches the bucket; True if it was
    killed before finishing."""
    fs = bucket.fs
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        fs.invalidate_cache()
        if fs.exists(bucket.path(out, "tracks")) and fs.find(bucket.path(out, "tracks")):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    return False

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
    env: dict[str, str | None] = field(default_factory=dict)

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
    from tests.test_label_e2e import cut_clip

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


def start_label_process(args: list[str], env: dict[str, str | None], tmpdir: Path) -> subprocess.Popen:
    """``daq-label label`` as a child process with a fresh TMPDIR (so the checkpoint is fetched
    from the bucket, not found in a local cache); ``env`` values of None remove the variable."""
    child_env = {**os.environ, **env, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT)}
    child_env = {key: value for key, value in child_env.items() if value is not None}
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


# --------------------------------------------------------------------------- the checks

def prepare(bucket: Bucket, work: Path) -> dict:
    """Upload the corpus and label it once through the glob into ``out_glob``."""
    corpus = upload_corpus(bucket, work)
    rc, out = label([corpus["glob"], bucket.url("out_glob"), *corpus["model"], *bucket.cli_options, *FAST])
    corpus["glob_run"] = (rc, out)
    return corpus


def check_glob_run(bucket: Bucket, corpus: dict) -> None:
    rc, out = corpus["glob_run"]
    assert rc == 0, out
    assert summary_counts(out) == (3, 3, 0, 0, 0)
    tables = read_tables(bucket, "out_glob")
    assert {r["source_url"].rsplit("/", 1)[1] for r in tables["videos"].to_pylist()} == set(corpus["names"])
    assert all(u.startswith(bucket.url("videos") + "/") for u in tables["videos"]["source_url"].to_pylist())
    assert tables["tracks"].num_rows > 0
    assert len(bucket.fs.find(bucket.path("out_glob", "_done"))) == 3
    assert bucket.fs.exists(bucket.path("out_glob", "_provenance.json"))
    assert tmp_files(bucket, "out_glob") == []
    rc, report = validate(bucket, "out_glob")
    assert rc == 0 and "OK: 3 video(s)" in report, report


def check_rerun_changes_nothing(bucket: Bucket, corpus: dict) -> None:
    before = object_bytes(bucket, "out_glob")
    rc, out = label([corpus["glob"], bucket.url("out_glob"), *corpus["model"], *bucket.cli_options, *FAST])
    assert rc == 0 and summary_counts(out) == (0, 0, 0, 0, 3), out
    assert object_bytes(bucket, "out_glob") == before


def check_url_list_kill_and_rerun(bucket: Bucket, corpus: dict, tmp_path: Path) -> None:
    """A URL list on the bucket labels the same videos as the glob (same ids, same rows); a run
    of it killed after its first table reached the bucket, plus a stray temporary, is finished
    by a rerun: temporaries cleared, each video once, rows equal to the uninterrupted run's."""
    base = [*corpus["model"], *bucket.cli_options, *FAST]
    rc, out = label([corpus["list"], bucket.url("out_list"), *base])
    assert rc == 0 and summary_counts(out) == (3, 3, 0, 0, 0), out
    reference = read_tables(bucket, "out_list")
    glob_tables = read_tables(bucket, "out_glob")
    for name in ("tracks", "track_summary"):
        assert rows(reference[name]) == rows(glob_tables[name])

    proc = start_label_process([corpus["list"], bucket.url("out_kill"), *base], bucket.env, tmp_path)
    assert kill_after_first_table(bucket, proc, "out_kill"), proc.stdout.read()
    bucket.fs.invalidate_cache()
    done_before = len(bucket.fs.find(bucket.path("out_kill", "_done")))
    assert done_before < 3
    bucket.fs.pipe(bucket.path("out_kill", "_tmp", "deadbeef.videos__x.parquet"), b"half a file")
    rc, out = label([corpus["list"], bucket.url("out_kill"), *base])
    assert rc == 0, out
    labelled, ok, _partial, _failed, already = summary_counts(out)
    assert (labelled, already) == (3 - done_before, done_before) and ok == labelled
    assert tmp_files(bucket, "out_kill") == []
    after = read_tables(bucket, "out_kill")
    for name in ("tracks", "track_summary"):
        assert rows(after[name]) == rows(reference[name])
    assert rows(after["videos"], TIMING) == rows(reference["videos"], TIMING)
    rc, report = validate(bucket, "out_kill")
    assert rc == 0 and "OK: 3 video(s)" in report, report

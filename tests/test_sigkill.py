"""Whole-job kills and concurrent jobs (docs/reliability.md), each job a real ``daq-label label``
process in its own process group:

* SIGKILL at K seeded random moments, then a rerun to completion: every input exactly once,
  no duplicate track rows, ``daq-label validate`` passes, no partial file under a final name, no
  temporaries, claims or attempt markers left behind;
* poison-video quarantine: a video during which the job is killed twice is recorded failed
  (``repeated_worker_crash``) by the third run without being run again;
* two jobs started together on one OUTPUT split the videos, each labelled exactly once.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.cli import main as cli_main
from pipeline.claims import REPEATED_WORKER_CRASH
from pipeline.inputs import make_ref
from pipeline.isolation import FAULT_ENV
from schemas.validate import validate_output

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "tests" / "data" / "reference_case1" / "online"
MODEL = ["--checkpoint", str(CASE / "weights.pt"), "--config", str(CASE / "config.yaml")]
EDGE = ROOT / "tests" / "data" / "videos_edge"
SAMPLES = ROOT / "samples" / "videos"
CORPUS = [EDGE / n for n in ("one_frame.mp4", "odd_321x183.webm", "rotated_90.mp4", "truncated_60pct.mp4",
                             "empty.mp4", "not_a_video.mp4")] + [SAMPLES / "01_dog.mp4"]
SUMMARY = re.compile(r"(\d+) video\(s\) labelled \(ok (\d+), partial (\d+), failed (\d+)\), (\d+) already done")
RUN_LIMIT_S = 400


def _start(listing: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "jobs.cli", "label", str(listing), str(out), *MODEL,
               "--workers", "1", "--torch-threads", "1", *extra]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, **(env or {})})


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate()


def _finish(process: subprocess.Popen) -> tuple[int, str, str]:
    try:
        stdout, stderr = process.communicate(timeout=RUN_LIMIT_S)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        pytest.fail(f"the job did not finish within {RUN_LIMIT_S}s")
    return process.returncode, stdout, stderr


def _listing(tmp_path: Path, videos: list[Path]) -> Path:
    listing = tmp_path / "videos.txt"
    listing.write_text("".join(f"{v}\n" for v in videos))
    return listing


def _check_complete(out: Path, videos: list[Path]) -> list[dict]:
    """Every input exactly once, no duplicate track rows, validation passes, nothing left over."""
    rows = pq.read_table(out / "videos").to_pylist()
    assert sorted(Path(r["source_url"]).name for r in rows) == sorted(v.name for v in videos)
    tracks = pq.read_table(out / "tracks").select(["video_id", "track_id", "frame_index"]).to_pylist()
    keys = [(t["video_id"], t["track_id"], t["frame_index"]) for t in tracks]
    assert len(keys) == len(set(keys)), "duplicate track rows"
    report = validate_output(str(out), deep=True)
    assert report.ok and not report.warnings, (report.errors[:5], report.warnings[:5])
    assert cli_main(["validate", str(out)]) == 0
    for marker in (out / "_done").iterdir():
        json.loads(marker.read_text())  # whole, never partial
    for folder in ("_tmp", "_claims", "_attempts"):
        assert not list((out / folder).rglob("*.*")) if (out / folder).exists() else True, folder
    return rows


def _done_count(out: Path) -> int:
    return len(list((out / "_done").glob("*.json"))) if (out / "_done").exists() else 0


def test_sigkill_at_random_moments_then_rerun(tmp_path: Path) -> None:
    """K=6 kills of the whole process group at seeded random moments spread over the job's
    life: each run is killed once a seeded number (0 or 1) of further videos is done, plus a
    seeded 0-2.5 s, so kills land in start-up, decoding, the model and writing; then a run to
    completion."""
    copies = tmp_path / "videos"
    copies.mkdir()
    corpus = []
    for copy in (1, 2):  # 14 videos: enough work for six killed runs and a last one
        for video in CORPUS:
            corpus.append(copies / f"{copy}_{video.name}")
            shutil.copy(video, corpus[-1])
    listing = _listing(tmp_path, corpus)
    out = tmp_path / "out"
    rng = random.Random(27)
    kills = []
    for _ in range(6):
        before = _done_count(out)
        target = before + rng.randint(0, 1)
        extra = rng.uniform(0.0, 2.5)
        process = _start(listing, out, "--max-attempts", "100")
        started = time.monotonic()
        while _done_count(out) < target and process.poll() is None:
            assert time.monotonic() - started < RUN_LIMIT_S, "the job made no progress"
            time.sleep(0.05)
        time.sleep(extra)
        finished_first = process.poll() is not None
        _kill_group(process)
        kills.append((round(time.monotonic() - started, 1), finished_first, _done_count(out) - before))
    rc, stdout, stderr = _finish(_start(listing, out, "--max-attempts", "100"))
    assert rc == 0, stderr[-3000:]
    videos, ok, partial, failed, already = (int(g) for g in SUMMARY.search(stdout).groups())
    assert videos + already == len(corpus) and videos > 0, (stdout, kills)
    rows = _check_complete(out, corpus)
    assert {r["status"] for r in rows if Path(r["source_url"]).name.endswith("01_dog.mp4")} == {"ok"}
    assert not any(r["error_type"] == REPEATED_WORKER_CRASH for r in rows)
    assert sum(1 for _, finished, _ in kills if not finished) >= 5, kills  # K >= 5 real kills
    print("kills (s after start, job had finished, videos done by that run):", kills)


def test_video_killed_twice_is_quarantined(tmp_path: Path) -> None:
    """The job is killed twice while one video runs (it hangs: the isolation time limit is
    long); the third run records that video failed without running it and labels the rest."""
    poison = EDGE / "one_frame.mp4"
    videos = [EDGE / "odd_321x183.webm", poison, EDGE / "empty.mp4"]
    listing = _listing(tmp_path, videos)
    out = tmp_path / "out"
    attempts = out / "_attempts" / make_ref(str(poison)).video_id
    hang = {FAULT_ENV: f"hang:{poison.name}"}
    for run in (1, 2):
        process = _start(listing, out, env=hang)
        deadline = time.monotonic() + RUN_LIMIT_S
        while not (attempts.exists() and len(list(attempts.glob("*.json"))) == run):
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the poison video never started"
            time.sleep(0.2)
        time.sleep(1.0)  # mid-video: the model process is hanging in it
        _kill_group(process)
    rc, stdout, stderr = _finish(_start(listing, out, env=hang))  # would hang if it ran the video
    assert rc == 0, stderr[-3000:]
    assert "by error_type:" in stdout and f"{REPEATED_WORKER_CRASH} 1" in stdout, stdout
    rows = {Path(r["source_url"]).name: r for r in _check_complete(out, videos)}
    quarantined = rows[poison.name]
    assert (quarantined["status"], quarantined["error_type"]) == ("failed", REPEATED_WORKER_CRASH)
    assert "started 2 time(s) without finishing" in quarantined["error_message"]
    assert rows["odd_321x183.webm"]["status"] == "ok"
    # --retry-failed gives it new attempts: without the fault it is labelled
    rc, stdout, stderr = _finish(_start(listing, out, "--retry-failed"))
    assert rc == 0 and SUMMARY.search(stdout).groups()[:2] == ("2", "1"), stdout  # + empty.mp4 again
    rows = {Path(r["source_url"]).name: r for r in _check_complete(out, videos)}
    assert rows[poison.name]["status"] == "ok"


def test_two_jobs_on_one_output_split_the_videos(tmp_path: Path) -> None:
    videos = CORPUS + [SAMPLES / "02_cups.mp4", SAMPLES / "05_default_juggle.mp4"]
    listing = _listing(tmp_path, videos)
    out = tmp_path / "out"
    jobs = [_start(listing, out), _start(listing, out)]
    results = [_finish(job) for job in jobs]
    labelled = []
    for rc, stdout, stderr in results:
        assert rc == 0, stderr[-3000:]
        counts = [int(g) for g in SUMMARY.search(stdout).groups()]
        skipped = re.search(r"(\d+) video\(s\) skipped: another job", stdout)
        # each job: what it labelled + what it found done + what the other was labelling = all
        assert counts[0] + counts[4] + (int(skipped.group(1)) if skipped else 0) == len(videos), stdout
        labelled.append(counts[0])
    assert sum(labelled) == len(videos), labelled  # every video labelled by exactly one job
    assert min(labelled) >= 1, labelled  # the work was split
    _check_complete(out, videos)
    owners = {json.loads(p.read_text())["job_id"] for p in (out / "_done").iterdir()}
    assert len(owners) == 2
    print("videos labelled per job:", labelled)

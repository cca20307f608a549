"""Progress and the end-of-run summary of ``daq-label label``: the OUTPUT watcher on markers being
written (local disk and an fsspec memory:// URL), the plain lines, the tqdm bar on a real
pseudo-terminal, the summary's figures and cost projection, and a real label run (--quiet,
--verbose, the figures against the videos table)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.job import JobSummary
from pipeline.progress import LogReporter, OutputWatcher, Progress, VideoDone
from pipeline.run_summary import RunFigures
from pipeline.storage import OutputLayout
from tests.storage_servers import s3_server  # noqa: F401 - the server fixture (the s3 case only)

ROOT = Path(__file__).resolve().parents[1]
EDGE = ROOT / "tests" / "data" / "videos_edge"
CASE = ROOT / "tests" / "data" / "reference_case1" / "online"
MODEL = ["--checkpoint", str(CASE / "weights.pt"), "--config", str(CASE / "config.yaml")]
FAST = ["--workers", "1", "--torch-threads", "1"]


def marker(video_id: str, job_id: str, status: str = "ok", frames: int = 10, tracks: int = 2,
           error_type: str | None = None, duration_s: float | None = 2.0, cpu: float | None = 1.5) -> dict:
    """A done marker as MarkDone writes it."""
    return {"video_id": video_id, "source_url": f"file:///v/{video_id}.mp4", "status": status,
            "error_type": error_type, "frames_decoded": frames, "num_tracks": tracks,
            "provenance_key": "k", "tables": ["tracks", "track_summary", "videos"], "job_id": job_id,
            "duration_s": duration_s, "model_seconds": 0.5, "decode_seconds": 0.1, "cpu_seconds": cpu}


class Recorder:
    """A reporter keeping every snapshot it is given."""

    def __init__(self) -> None:
        self.seen: list[Progress] = []
        self.closed: Progress | None = None

    def update(self, progress: Progress) -> None:
        self.seen.append(progress)

    def close(self, progress: Progress, report: bool = True) -> None:
        self.closed = progress


def slow_writer(layout: OutputLayout, markers: list[dict], delay_s: float) -> threading.Thread:
    """Writes real markers one by one, as MarkDone does (temp file, then moved in place)."""

    def write() -> None:
        for m in markers:
            time.sleep(delay_s)
            layout.write_json_atomic(layout.done_path(m["video_id"]), m)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


@pytest.mark.parametrize("where", ["local", "memory", "s3"])
def test_watcher_follows_markers_being_written(tmp_path: Path, where: str, request: pytest.FixtureRequest) -> None:
    if where == "s3":  # a real S3 server (moto's, on 127.0.0.1): paged listings, concurrent reads
        from tests.storage_servers import s3_storage_options

        bucket = f"progress-{uuid.uuid4().hex[:12]}"
        layout = OutputLayout(f"s3://{bucket}/out", s3_storage_options(request.getfixturevalue("s3_server")))
        layout.fs.mkdir(bucket)
    else:
        layout = OutputLayout(str(tmp_path / "out") if where == "local"
                              else f"memory://progress-{uuid.uuid4().hex}/out")
    job = "thisjob"
    ids = [f"v{i:02d}" for i in range(8)]
    for vid in ids[:2]:  # done by an earlier run
        layout.write_json_atomic(layout.done_path(vid), marker(vid, "earlier"))
    layout.write_json_atomic(layout.done_path("stranger"), marker("stranger", "earlier"))  # not in INPUT
    ours = [marker("v02", job), marker("v03", job, "failed", frames=0, tracks=0, error_type="empty_file"),
            marker("v04", job, "partial", frames=7), marker("v05", job), marker("v06", job)]
    elsewhere = [marker("v07", "otherjob")]  # a second job on the same OUTPUT
    recorder = Recorder()
    watcher = OutputWatcher(layout, job, lambda: iter(ids + ["v02"]), interval_s=0.05, reporter=recorder)
    watcher.start()
    writer = slow_writer(layout, ours[:3] + elsewhere + ours[3:], 0.15)
    writer.join()
    watcher.stop()
    final = watcher.snapshot()
    assert (final.total, final.done_before, final.done, final.done_elsewhere) == (6, 2, 5, 1)
    assert (final.ok, final.partial, final.failed) == (3, 1, 1)
    assert final.frames == 10 + 7 + 10 + 10 and final.tracks == 8
    assert final.error_types == {"empty_file": 1} and final.remaining == 0
    assert sorted(watcher.records) == ["v02", "v03", "v04", "v05", "v06"]
    # it saw the job going, not only the end: counts only grow, intermediate states observed
    done = [p.done for p in recorder.seen]
    assert done == sorted(done) and any(0 < d < 5 for d in done), done
    assert recorder.closed is not None and recorder.closed.done == 5
    # cheap: markers present at the start are never read, each new one once
    assert watcher.markers_read == len(ours) + len(elsewhere)
    assert watcher.polls >= 5


def test_watcher_retry_failed_counts_rewritten_markers(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path / "out"))
    layout.write_json_atomic(layout.done_path("a"), marker("a", "earlier"))
    layout.write_json_atomic(layout.done_path("b"), marker("b", "earlier", "failed", error_type="unreadable"))
    watcher = OutputWatcher(layout, "now", lambda: iter(["a", "b"]), retry_failed=True, interval_s=0.05)
    watcher.start()
    deadline = time.monotonic() + 10
    while watcher.snapshot().total is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert watcher.snapshot().total == 1  # b is labelled again; a is done
    layout.write_json_atomic(layout.done_path("b"), marker("b", "now"))
    watcher.stop()
    final = watcher.snapshot()
    assert (final.total, final.done_before, final.done, final.ok) == (1, 1, 1, 1)


def test_log_reporter_plain_lines(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = logging.getLogger("tests.progress")
    reporter = LogReporter(log, every_s=10, clock=lambda: now[0])

    def at(t: float, done: int, total: int | None = 4) -> None:
        now[0] = t
        reporter.update(Progress(elapsed_s=t, total=total, done_before=1, done=done, ok=done, partial=0,
                                 failed=0, frames=30 * done, tracks=done))

    with caplog.at_level(logging.INFO, logger="tests.progress"):
        at(0, 0, None)
        at(5, 1)  # within 10 s of the last line: nothing
        at(12, 2)
        at(13, 3)
        reporter.close(Progress(elapsed_s=14, total=4, done_before=1, done=4, ok=3, partial=0,
                                failed=1, frames=100, tracks=4, error_types={"timeout": 1}))
        reporter.close(Progress(elapsed_s=14, total=4, done_before=1, done=4, ok=3, partial=0,
                                failed=1, frames=100, tracks=4))  # said already: nothing
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "progress: 0/? videos (ok 0, partial 0, failed 0), 0 frames, 0.0 frames/s, elapsed 0:00:00, "
        "ETA ?; 1 already done",
        "progress: 2/4 videos (ok 2, partial 0, failed 0), 60 frames, 5.0 frames/s, elapsed 0:00:12, "
        "ETA 0:00:12; 1 already done",
        "progress: 4/4 videos (ok 3, partial 0, failed 1), 100 frames, 7.1 frames/s, elapsed 0:00:14, "
        "ETA 0:00:00; 1 already done",
    ], lines


def test_summary_figures_and_cost_projection() -> None:
    summary = JobSummary(ok=2, partial=1, failed=1, already_done=6, frames=600, tracks=12, wall_s=40.0,
                         output="file:///o", error_types={"not_a_video": 1})
    records = [VideoDone("a", "ok", None, 300, 5, 30.0, 10.0, 20.0),
               VideoDone("b", "ok", None, 200, 4, 60.0, 8.0, 25.0),
               VideoDone("c", "partial", None, 100, 3, 30.0, 4.0, 14.5),
               VideoDone("d", "failed", "not_a_video", 0, 0, None, 0.0, 0.5)]
    figures = RunFigures.collect(summary, records, "cpu", cost_per_hour=0.04)
    assert figures.video_minutes == pytest.approx(2.0)  # 120 s
    assert figures.cpu_s == pytest.approx(60.0) and figures.model_s == pytest.approx(22.0)
    assert figures.per_video_minute(figures.cpu_s) == pytest.approx(30.0)
    # corpus: 4 labelled + 6 done before = 10 videos at this run's 0.5 min per video
    assert figures.corpus_videos == 10 and figures.corpus_minutes == pytest.approx(5.0)
    assert figures.projected_hours == pytest.approx(30.0 * 5.0 / 3600)
    assert figures.projected_usd == pytest.approx(30.0 * 5.0 / 3600 * 0.04)
    text = "\n".join(figures.lines())
    assert "ok 2, partial 1, failed 1 (by error_type: not_a_video 1); 6 already done" in text
    assert "600 frames (15.0 frames/s of wall time), 12 tracks; 2 video-minutes (3 of 4" in text
    assert "CPU 60.0s" in text and "= 30.0 CPU-s per video-minute" in text
    assert "model time 22.0s = 11.0 model-s per video-minute" in text
    assert "projected from 4 video(s) of this run: the corpus's 10 video(s), about 5 video-minutes" in text
    assert "0.0417 CPU-hours, about $0.00167 at $0.04 per CPU-hour" in text, text
    gpu = RunFigures.collect(summary, records, "gpu")
    assert gpu.projected_hours == pytest.approx(11.0 * 5.0 / 3600)
    assert "GPU-hours (model time) (--cost-per-hour USD gives a price)" in "\n".join(gpu.lines())
    nothing = RunFigures.collect(JobSummary(0, 0, 0, 3, 0, 0, 1.0, "o"), [], "cpu", 1.0)
    assert nothing.projected_hours is None and "no video labelled by this run" in nothing.lines()[-1]


def test_mark_done_beam_metrics(tmp_path: Path) -> None:
    """The per-video figures Dataflow shows on the job page: counters and distributions in the
    daq_label namespace, from MarkDone on a real (local) Beam runner; the markers carry them."""
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    from pipeline.handler import METRICS_NAMESPACE
    from pipeline.tables import VideoLabels
    from pipeline.transforms import MarkDone
    from schemas.tables import TRACK_SUMMARY_V1, TRACKS_V1

    def labels(vid: str, status: str, frames: int, duration: float | None, model: float, cpu: float | None):
        row = {"video_id": vid, "source_url": f"file:///{vid}.mp4", "status": status,
               "error_type": "not_a_video" if status == "failed" else None, "frames_decoded": frames,
               "num_tracks": 3 if frames else 0, "provenance_key": "k", "duration_s": duration,
               "model_seconds": model, "decode_seconds": 0.1}
        return VideoLabels(vid, row, TRACKS_V1.empty_table(), TRACK_SUMMARY_V1.empty_table(), cpu)

    layout = OutputLayout(str(tmp_path / "out"))
    items = [labels("a", "ok", 60, 2.0, 4.0, 5.0), labels("b", "partial", 30, 1.5, 1.0, 2.5),
             labels("c", "failed", 0, None, 0.0, None)]
    pipeline = beam.Pipeline(runner=fn_runner.FnApiRunner())
    _ = pipeline | beam.Create(items) | MarkDone(layout)
    result = pipeline.run()
    result.wait_until_finish()
    metrics = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    counters = {m.key.metric.name: m.committed for m in metrics["counters"]}
    dists = {m.key.metric.name: m.committed for m in metrics["distributions"]}
    assert (counters["videos_ok"], counters["videos_partial"], counters["videos_failed"]) == (1, 1, 1)
    assert counters["frames_labelled"] == 90 and counters["tracks"] == 6
    assert counters["error_type.not_a_video"] == 1
    assert (counters["video_ms"], counters["model_ms"], counters["cpu_ms"]) == (3500, 5000, 7500)
    frames = dists["frames_per_video"]
    assert (frames.count, frames.sum, frames.min, frames.max) == (3, 90, 0, 60)
    assert (dists["model_fps"].min, dists["model_fps"].max) == (15, 30)
    assert dists["video_ms_per_video"].count == 2 and dists["cpu_ms_per_video"].sum == 7500
    assert dists["tracks_per_video"].sum == 6
    marker = json.loads((tmp_path / "out" / "_done" / "a.json").read_text())
    assert (marker["duration_s"], marker["model_seconds"], marker["cpu_seconds"]) == (2.0, 4.0, 5.0)


BURN = """
import sys, time
print("ready", flush=True)
sys.stdin.readline()
start = time.process_time()
while time.process_time() - start < 0.6:
    pass
print("burned", flush=True)
time.sleep(30)
"""


def test_cpu_clock_measures_the_model_process() -> None:
    from pipeline.cpu_time import CpuClock, process_cpu_seconds

    child = subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        clock = CpuClock.start(child.pid)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "burned"
        seconds = clock.seconds(child.pid)
        assert seconds is not None and 0.55 <= seconds <= 1.0, seconds  # its 0.6 s, not wall time
        before = process_cpu_seconds(child.pid)
        assert clock.seconds(None) is not None and clock.seconds(None) < 0.5  # child gone: own time only
    finally:
        child.kill()
        child.wait()
    assert before is not None and process_cpu_seconds(child.pid) is None  # reaped: no /proc entry
    own = CpuClock.start(None)  # no model process: this process's CPU
    start = time.process_time()
    while time.process_time() - start < 0.2:
        pass
    assert 0.19 <= own.seconds(None) <= 0.5


BAR_SCRIPT = """
import sys, threading, time
from pipeline.progress import BarReporter, OutputWatcher
from pipeline.storage import OutputLayout
layout = OutputLayout(sys.argv[1])
ids = ["a", "b", "c"]
watcher = OutputWatcher(layout, "j", lambda: iter(ids), interval_s=0.05, reporter=BarReporter(sys.stderr, 0.0))
watcher.start()
for vid in ids:
    time.sleep(0.3)
    layout.write_json_atomic(layout.done_path(vid), {"video_id": vid, "status": "ok" if vid != "b" else "failed",
        "error_type": None, "frames_decoded": 25, "num_tracks": 1, "job_id": "j"})
watcher.stop()
"""


@pytest.mark.parametrize("columns", [120, 0])  # 0: a pseudo-terminal that reports no size
def test_tqdm_bar_draws_on_a_terminal(tmp_path: Path, columns: int) -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24 if columns else 0, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-c", BAR_SCRIPT, str(tmp_path / "out")], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the terminal closed: the process is done
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    screen = b"".join(chunks).decode("utf-8", "replace")
    frames = screen.split("\r")  # a bar redraws in place
    assert len(frames) >= 3, screen
    assert re.search(r"labelling: 100%\|.*\| 3/3 \[", screen), screen
    assert re.search(r"labelling:\s+33%.* 1/3 ", screen), screen  # drawn while it ran
    assert "failed 1" in screen and "frames/s" in screen, screen


# ------------------------------------------------------------------ a real label run


@pytest.mark.slow
def test_label_run_progress_summary_quiet_verbose(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    from jobs.cli import main as cli_main

    corpus = tmp_path / "in"
    corpus.mkdir()
    for name in ("one_frame.mp4", "odd_321x183.webm", "empty.mp4"):
        (corpus / name).write_bytes((EDGE / name).read_bytes())
    out = tmp_path / "out"
    try:
        with caplog.at_level(logging.INFO):
            rc = cli_main(["label", str(corpus), str(out), *MODEL, *FAST, "--progress-every", "0.5",
                           "--cost-per-hour", "3.6"])
        printed = capsys.readouterr().out
        assert rc == 0
        lines = printed.strip().splitlines()
        assert lines[-1].startswith("daq-label label: 3 video(s) labelled (ok 2, partial 0, failed 1)")
        assert lines[0].startswith("summary: 3 video(s) labelled in ") and "by error_type: empty_file 1" in lines[0]
        progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress: ")]
        assert progress and progress[-1].startswith("progress: 3/3 videos (ok 2, partial 0, failed 1), 31 frames")
        # the figures against the videos table and the markers
        videos = pq.read_table(out / "videos").to_pylist()
        minutes = sum(v["duration_s"] or 0 for v in videos) / 60
        markers = [json.loads(p.read_text()) for p in (out / "_done").iterdir()]
        cpu = sum(m["cpu_seconds"] for m in markers)
        assert all(m["cpu_seconds"] > 0 for m in markers if m["status"] == "ok")
        assert sorted(m["duration_s"] for m in markers if m["duration_s"]) == sorted(
            v["duration_s"] for v in videos if v["duration_s"])
        assert f"{minutes:.3g} video-minutes (2 of 3 video(s) with a duration)" in printed, printed
        assert f"CPU {cpu:.1f}s" in printed and f"= {cpu / minutes:.1f} CPU-s per video-minute" in printed
        hours = cpu / minutes * (minutes / 3 * 3) / 3600  # corpus = the 3 videos
        assert f"need about {hours:.3g} CPU-hours" in printed and "projected from 3 video(s)" in printed
        usd = hours * 3.6
        assert (f"${usd:.3g} at $3.6 per CPU-hour" if usd < 1 else f"${usd:,.2f}") in printed, printed

        # --verbose: DEBUG of our loggers; --retry-failed labels empty.mp4 again (a rewritten marker)
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="jobs"):
            assert cli_main(["label", str(corpus), str(out), *MODEL, *FAST, "--verbose", "--retry-failed"]) == 0
        printed = capsys.readouterr().out
        assert "1 video(s) labelled (ok 0, partial 0, failed 1), 2 already done" in printed
        assert "summary: 1 video(s) labelled" in printed
        assert any(r.levelno == logging.DEBUG and r.name.startswith("jobs") for r in caplog.records)

        # --quiet: the final line only, no INFO of ours
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="jobs"):
            assert cli_main(["label", str(corpus), str(out), *MODEL, *FAST, "--quiet"]) == 0
        printed = capsys.readouterr().out
        assert printed.strip().splitlines() == [printed.strip()] and "0 video(s) labelled" in printed
        ours = [r for r in caplog.records if r.name.split(".")[0] in ("jobs", "pipeline", "daq_model")]
        assert all(r.levelno >= logging.WARNING for r in ours), [r.getMessage() for r in ours]
    finally:
        for name in ("jobs", "pipeline", "daq_model", "schemas"):
            logging.getLogger(name).setLevel(logging.NOTSET)

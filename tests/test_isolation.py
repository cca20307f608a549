"""Crash and hang isolation (docs/reliability.md): a video whose decode or inference segfaults,
aborts or hangs is recorded failed (worker_crashed / timeout) and every other video of the job is
labelled; the job exits 0. Faults are injected in the model process through
DAQ_LABEL_FAULT_INJECTION (pipeline/isolation.py), a test-only switch."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.cli import main as cli_main
from pipeline.inputs import make_ref
from pipeline.isolation import (
    FAULT_ENV,
    TIMEOUT,
    WORKER_CRASHED,
    IsolatedLabeler,
    IsolationSettings,
    describe_exit,
    parse_faults,
)
from pipeline.labeler import LabelSettings
from pipeline.model_source import resolve_model
from schemas.validate import validate_output

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "tests" / "data" / "reference_case1" / "online"
MODEL = ["--checkpoint", str(CASE / "weights.pt"), "--config", str(CASE / "config.yaml")]
EDGE = ROOT / "tests" / "data" / "videos_edge"


def test_time_limit_follows_the_length() -> None:
    settings = IsolationSettings(base_s=10, per_video_second=2, unknown_length_s=99)
    assert settings.limit_s(300, 30.0) == pytest.approx(10 + 2 * 10)
    assert settings.limit_s(60, None) == pytest.approx(10 + 2 * 2)  # 30 fps assumed
    assert settings.limit_s(None, 25.0) == 99
    with pytest.raises(ValueError, match="base_s must be > 0"):
        IsolationSettings(base_s=0)


def test_fault_specs_and_exit_descriptions() -> None:
    assert parse_faults("segfault:a.mp4; hang:b") == (("segfault", "a.mp4"), ("hang", "b"))
    assert parse_faults(None) == ()
    with pytest.raises(ValueError, match="ACTION:SUBSTRING"):
        parse_faults("explode:a.mp4")
    assert describe_exit(-signal.SIGSEGV) == "killed by SIGSEGV (exit code -11)"
    assert describe_exit(3) == "exited with status 3"


@pytest.mark.slow
def test_labeler_survives_crashes_and_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model process segfaults, aborts, hangs: each video fails with the reason, the process
    is restarted, and the next video is labelled as if nothing happened."""
    monkeypatch.setenv(FAULT_ENV, "segfault:rotated_90;abort:truncated_60pct;hang:one_frame")
    spec = resolve_model(str(CASE / "weights.pt"), str(CASE / "config.yaml"))
    labeler = IsolatedLabeler(spec, spec.provenance(), LabelSettings(), "cpu", 1,
                              IsolationSettings(base_s=15, per_video_second=1))
    results = {}
    try:
        labeler.start()
        for name in ["odd_321x183.webm", "rotated_90.mp4", "truncated_60pct.mp4", "one_frame.mp4",
                     "odd_321x183.webm"]:
            labels = labeler.label(make_ref(str(EDGE / name)))
            results.setdefault(name, []).append(labels)
    finally:
        labeler.stop()
    ok_first, ok_again = results["odd_321x183.webm"]
    assert ok_first.status == ok_again.status == "ok"
    assert ok_first.tracks.equals(ok_again.tracks)  # the restarted process labels the same
    crashed = results["rotated_90.mp4"][0].video_row
    assert (crashed["status"], crashed["error_type"]) == ("failed", WORKER_CRASHED)
    assert "SIGSEGV" in crashed["error_message"] and "rotated_90.mp4" in crashed["error_message"]
    aborted = results["truncated_60pct.mp4"][0].video_row
    assert aborted["error_type"] == WORKER_CRASHED and "SIGABRT" in aborted["error_message"]
    hung = results["one_frame.mp4"][0].video_row
    assert (hung["status"], hung["error_type"]) == ("failed", TIMEOUT)
    assert re.search(r"time limit of 15s", hung["error_message"])
    assert labeler.restarts == 3


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_job_finishes_when_a_video_crashes_its_process(tmp_path: Path, monkeypatch, capsys,
                                                       workers: int) -> None:
    """The whole job (Beam, 1 or 2 workers): a segfaulting and a hanging video fail with their
    reasons, every other video is labelled, the job exits 0 and its output validates."""
    monkeypatch.setenv(FAULT_ENV, "segfault:rotated_90;hang:one_frame")
    listing = tmp_path / "videos.txt"
    names = ["odd_321x183.webm", "rotated_90.mp4", "one_frame.mp4", "truncated_60pct.mp4", "empty.mp4"]
    listing.write_text("".join(f"{EDGE / n}\n" for n in names))
    out = tmp_path / "out"
    rc = cli_main(["label", str(listing), str(out), *MODEL, "--workers", str(workers),
                   "--torch-threads", "1", "--video-timeout", "20", "--video-timeout-per-second", "1"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "5 video(s) labelled (ok 1, partial 1, failed 3)" in printed
    rows = {Path(r["source_url"]).name: r for r in pq.read_table(out / "videos").to_pylist()}
    assert set(rows) == set(names)
    assert (rows["rotated_90.mp4"]["error_type"], rows["one_frame.mp4"]["error_type"]) == (WORKER_CRASHED, TIMEOUT)
    assert rows["odd_321x183.webm"]["status"] == "ok" and rows["odd_321x183.webm"]["num_tracks"] >= 0
    assert rows["truncated_60pct.mp4"]["status"] == "partial"
    assert rows["empty.mp4"]["error_type"] == "empty_file"
    report = validate_output(str(out), deep=True)
    assert report.ok, report.errors[:5]

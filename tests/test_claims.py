"""Claims and attempt markers (pipeline/claims.py): one job wins a video, a dead job's claim
lapses, the same job takes its own claim back, attempts are counted and cleared, and start-up
cleanup keeps what a live job is writing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.claims import (
    ClaimSettings,
    VideoClaims,
    claim_is_live,
    clear_stale_tmp,
    create_exclusive,
    process_started,
)
from pipeline.storage import OutputLayout

VID = "0123456789abcdef0123"


def _claims(out: Path, job: str, ttl: float = 60.0) -> VideoClaims:
    return VideoClaims(OutputLayout(str(out)), job, ClaimSettings(ttl_s=ttl))


def test_exclusive_create_has_one_winner(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path))
    path = str(tmp_path / "_claims" / VID / "0.json")
    assert create_exclusive(layout, path, b"first")
    assert not create_exclusive(layout, path, b"second")
    assert Path(path).read_bytes() == b"first"
    assert os.listdir(tmp_path / "_claims" / VID) == ["0.json"]  # no temporary left


def test_a_live_claim_keeps_other_jobs_out(tmp_path: Path) -> None:
    a, b = _claims(tmp_path, "job-a"), _claims(tmp_path, "job-b")
    assert a.try_claim(VID) == (True, None)
    claimed, holder = b.try_claim(VID)
    assert not claimed and holder["job_id"] == "job-a" and holder["pid"] == os.getpid()
    assert a.try_claim(VID)[0]  # the same job (a retried bundle) takes its claim back
    a.release(VID)
    assert b.try_claim(VID)[0]


def test_claims_of_dead_processes_and_expired_claims_lapse(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    folder = tmp_path / "_claims" / VID
    folder.mkdir(parents=True)
    from pipeline.claims import HOST

    claim = {"job_id": "killed", "host": HOST, "pid": pid, "pid_started": "1",
             "expires_at": time.time() + 3600}
    (folder / "0.json").write_text(json.dumps(claim))
    assert not claim_is_live(claim)  # its process is gone
    assert claim_is_live({**claim, "host": "another-host"})  # elsewhere: until it expires
    assert not claim_is_live({**claim, "host": "another-host", "expires_at": time.time() - 1})
    assert claim_is_live({**claim, "pid": os.getpid(), "pid_started": process_started(os.getpid())})
    b = _claims(tmp_path, "job-b")
    assert b.try_claim(VID) == (True, None)
    assert sorted(os.listdir(folder)) == ["0.json", "1.json"]  # the next generation
    assert json.loads((folder / "1.json").read_text())["job_id"] == "job-b"


def test_refresh_extends_and_notices_a_takeover(tmp_path: Path) -> None:
    a = _claims(tmp_path, "job-a", ttl=5)
    assert a.try_claim(VID)[0]
    path = str(tmp_path / "_claims" / VID / "0.json")
    before = json.loads(Path(path).read_text())["expires_at"]
    time.sleep(0.05)
    assert a.refresh(VID, path)
    assert json.loads(Path(path).read_text())["expires_at"] > before
    (tmp_path / "_claims" / VID / "1.json").write_text(json.dumps({"job_id": "job-b", "expires_at": 0}))
    assert not a.refresh(VID, path)
    a.release(VID)


def test_attempts_are_counted_and_cleared(tmp_path: Path) -> None:
    a = _claims(tmp_path, "job-a")
    assert a.attempts(VID) == 0
    a.record_attempt(VID)
    a.record_attempt(VID)
    assert a.attempts(VID) == 2
    a.release(VID)
    assert a.attempts(VID) == 0 and not (tmp_path / "_attempts" / VID).exists()
    with pytest.raises(ValueError, match="max attempts"):
        ClaimSettings(max_attempts=0)


def test_start_up_cleanup_keeps_what_a_live_job_writes(tmp_path: Path) -> None:
    other, me = _claims(tmp_path, "job-live"), _claims(tmp_path, "job-new")
    other_vid, dead_vid = "a" * 20, "b" * 20
    assert other.try_claim(other_vid)[0]
    tmp = tmp_path / "_tmp"
    tmp.mkdir()
    kept = tmp / f"{'1' * 32}.tracks__{other_vid}.parquet"
    gone = tmp / f"{'2' * 32}.tracks__{dead_vid}.parquet"
    young_probe = tmp / f"{'3' * 32}._write_check.{'f' * 32}"
    old_probe = tmp / f"{'4' * 32}._provenance.json"
    for path in (kept, gone, young_probe, old_probe):
        path.write_bytes(b"partial")
    os.utime(old_probe, (time.time() - 3600, time.time() - 3600))
    assert clear_stale_tmp(me.layout, me) == 2
    assert sorted(p.name for p in tmp.iterdir()) == sorted([kept.name, young_probe.name])
    other.release(other_vid)


def test_abandon_gives_up_this_process_claims_only(tmp_path: Path) -> None:
    """A run that stopped (e.g. a full disk) gives up what it still holds, so a rerun in the same
    process takes the videos at once; another job's claims stay."""
    layout = OutputLayout(str(tmp_path / "out"))
    first, other, rerun = (VideoClaims(layout, job, ClaimSettings()) for job in ("job-a", "job-b", "job-c"))
    assert first.try_claim("v1")[0] and first.try_claim("v2")[0] and other.try_claim("v3")[0]
    assert not rerun.try_claim("v1")[0]  # same host, live process: looks live
    assert first.abandon() == 2 and first.abandon() == 0
    assert rerun.try_claim("v1")[0] and rerun.try_claim("v2")[0]
    assert not rerun.try_claim("v3")[0]
    for claims in (other, rerun):
        for video in ("v1", "v2", "v3"):
            claims.release(video)

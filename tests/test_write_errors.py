"""Write errors on a real filesystem (issue #27, item 8): an OUTPUT that cannot be written is
refused before any decoding; a disk that fills up mid-job stops the job with one clear line,
every video recorded done has all its tables, and a rerun after freeing space finishes the job.

The filesystems are real tmpfs mounts (read-only, and a small one filled up), which needs root
and CAP_SYS_ADMIN, as on CI and the development machines; elsewhere these tests skip.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.storage import OutputLayout, is_fatal_write_error
from schemas.tables import TABLES

REPO = Path(__file__).resolve().parents[1]
EDGE = REPO / "tests" / "data" / "videos_edge"
CASE = REPO / "tests" / "data" / "reference_case1" / "online"


def _mount(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")


@pytest.fixture
def mounts(tmp_path: Path):
    made: list[Path] = []

    def mount(name: str, options: str) -> Path:
        target = tmp_path / name
        _mount(target, options)
        made.append(target)
        return target

    yield mount
    for target in reversed(made):
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _argv(corpus: Path, out: Path) -> list[str]:
    return ["label", str(corpus), str(out), "--checkpoint", str(CASE / "weights.pt"),
            "--config", str(CASE / "config.yaml"), "--workers", "1"]


def test_fatal_errors_are_found_in_the_cause_chain() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("bundle failed") from inner
    except RuntimeError as outer:
        assert is_fatal_write_error(outer)
    assert not is_fatal_write_error(OSError(errno.ECONNRESET, "reset"))
    assert not is_fatal_write_error(ValueError("x"))


def test_read_only_output_is_refused_before_decoding(mounts, tmp_path: Path, caplog) -> None:
    from jobs.cli import main

    ro = mounts("ro", "ro,size=1m")
    caplog.set_level("INFO")
    assert main(_argv(EDGE / "one_frame.mp4", ro / "labels")) == 2
    assert "is not writable" in caplog.text and "Read-only file system" in caplog.text
    assert "labelled file://" not in caplog.text  # no video was decoded


def test_check_writable_leaves_nothing_behind(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path / "out"))
    layout.check_writable()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["_tmp"]
    assert list((tmp_path / "out" / "_tmp").iterdir()) == []


@pytest.mark.slow
def test_disk_full_mid_job_keeps_every_done_video_whole(mounts, tmp_path: Path, caplog, capsys) -> None:
    from jobs.cli import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(8):
        shutil.copy(EDGE / "one_frame.mp4", corpus / f"clip_{i}.mp4")
    disk = mounts("disk", "size=1m")
    out = disk / "labels"
    # Fill the disk so that the provenance, the write check and a few videos fit, not all.
    stat = os.statvfs(disk)
    filler = disk / "filler.bin"
    filler.write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - 48 * 1024))
    caplog.set_level("INFO")
    code = main(_argv(corpus, out))
    assert code == 1
    assert "the label job stopped: OUTPUT cannot take more results" in caplog.text
    assert "No space left on device" in caplog.text
    done = {p.stem for p in (out / "_done").glob("*.json")} if (out / "_done").exists() else set()
    assert len(done) < 8  # the disk really filled before the end
    for video_id in done:  # done means every table is there and whole
        for spec in TABLES:
            table = pq.read_table(out / spec.name / f"{video_id}.parquet")
            assert table.schema.metadata[b"daq_label.table"] == spec.name.encode()
    for spec in TABLES:  # no partial file under a final name
        for path in (out / spec.name).glob("*.parquet") if (out / spec.name).exists() else []:
            pq.read_metadata(path)
    filler.unlink()
    caplog.clear()
    assert main(_argv(corpus, out)) == 0
    printed = capsys.readouterr().out
    assert f"{8 - len(done)} video(s) labelled" in printed and f"{len(done)} already done" in printed
    assert len(list((out / "_done").glob("*.json"))) == 8
    assert list((out / "_tmp").iterdir()) == []
    assert main(["validate", str(out)]) == 0
    rows = pq.ParquetDataset(str(out / "videos")).read().to_pylist()
    assert sorted(r["status"] for r in rows) == ["ok"] * 8
    assert all(json.loads(p.read_text())["status"] == "ok" for p in (out / "_done").glob("*.json"))

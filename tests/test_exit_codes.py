"""Exit codes of ``daq-label label`` (docs/reliability.md): 0 when the job ran to the end
whatever some videos did (the summary gives the counts by status and error_type);
``--max-failed-fraction F`` turns a bad run into exit 1 after everything is written; options
that cannot work exit 2 before OUTPUT is touched."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.cli import main as cli_main
from schemas.validate import validate_output

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "tests" / "data" / "reference_case1" / "online"
MODEL = ["--checkpoint", str(CASE / "weights.pt"), "--config", str(CASE / "config.yaml")]
EDGE = ROOT / "tests" / "data" / "videos_edge"
FAST = ["--workers", "1", "--torch-threads", "1"]


@pytest.mark.parametrize("option, message", [
    (["--max-failed-fraction", "1.5"], "--max-failed-fraction must be between 0 and 1"),
    (["--max-attempts", "0"], "max attempts must be >= 1"),
    (["--claim-ttl", "0"], "claim ttl must be > 0"),
    (["--video-timeout", "-1"], "base_s must be > 0"),
])
def test_unusable_reliability_options_exit_2(tmp_path: Path, caplog, option: list[str], message: str) -> None:
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        rc = cli_main(["label", str(EDGE / "one_frame.mp4"), str(out), *MODEL, *option])
    assert rc == 2 and message in caplog.text
    assert not out.exists()


def test_failed_fraction_exit_1_after_writing_everything(tmp_path: Path, capsys, caplog) -> None:
    listing = tmp_path / "videos.txt"
    listing.write_text("".join(f"{EDGE / n}\n" for n in ("one_frame.mp4", "empty.mp4", "not_a_video.mp4")))
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        rc = cli_main(["label", str(listing), str(out), *MODEL, *FAST, "--max-failed-fraction", "0.5"])
    printed = capsys.readouterr().out
    assert rc == 1, printed
    assert "3 video(s) labelled (ok 1, partial 0, failed 2)" in printed
    assert "by error_type: empty_file 1, not_a_video 1" in printed
    assert "2 of 3 video(s) failed (66.7%), more than --max-failed-fraction 0.5" in caplog.text
    assert len(list((out / "_done").iterdir())) == 3 and pq.read_table(out / "videos").num_rows == 3
    markers = [json.loads(p.read_text()) for p in (out / "_done").iterdir()]
    assert len({m["job_id"] for m in markers}) == 1  # the run that labelled them
    assert not any((out / "_claims").iterdir()) and not any((out / "_attempts").iterdir())
    assert validate_output(str(out), deep=True).ok
    # a rerun (nothing left to label) exits 0
    rc = cli_main(["label", str(listing), str(out), *MODEL, *FAST, "--max-failed-fraction", "0.7"])
    assert rc == 0 and "0 video(s) labelled" in capsys.readouterr().out

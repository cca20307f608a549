"""URL lists with malformed, repeated, blank and comment lines; video ids that can never leave
OUTPUT whatever the input names; duplicate inputs labelled once (issue #27, item 9)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.inputs import BAD_INPUT_LINE, InputError, InputSpec, check_list_entry, make_ref

EDGE = Path(__file__).resolve().parent / "data" / "videos_edge"
REPO = Path(__file__).resolve().parents[1]
CASE = REPO / "tests" / "data" / "reference_case1" / "online"


def _write_list(path: Path, lines: list[str | bytes]) -> Path:
    data = b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("entry, reason", [
    ("gs://", "without a path"),
    ("s3:///", "without a path"),
    ("gs:/bucket/v.mp4", "one slash"),
    ("nosuchproto://x/v.mp4", "unknown protocol"),
    ("C:\\videos\\a.mp4", "Windows drive"),
    ("a\x00b.mp4", "control characters"),
    ("tab\tinside.mp4", "control characters"),
    ("x" * 5000, "longer than"),
])
def test_malformed_entries_have_a_reason(entry: str, reason: str) -> None:
    assert reason in (check_list_entry(entry) or "")


@pytest.mark.parametrize("entry", ["a.mp4", "my video (1).mp4", "../up/v.mp4", "/abs/v.mp4",
                                   "gs://b/v.mp4", "https://h/v.mp4?sig=1", "vidéo_雪.mp4",
                                   "simplecache::gs://b/v.mp4"])
def test_ordinary_entries_pass(entry: str) -> None:
    assert check_list_entry(entry) is None


def test_malformed_lines_are_named_with_their_numbers(tmp_path: Path) -> None:
    listing = _write_list(tmp_path / "videos.txt", [
        "# corpus", "", str(EDGE / "one_frame.mp4"), "gs:/bucket/x.mp4", b"bad\xff\xfe.mp4",
        "   ", str(EDGE / "one_frame.mp4"), "nosuch://x/y.mp4"])
    spec = InputSpec.resolve(str(listing))
    with pytest.raises(InputError) as info:
        spec.check_url_list()
    text = str(info.value)
    assert "3 malformed line(s)" in text
    for needle in ("line 4: looks like a URL with one slash", "line 5: not valid UTF-8",
                   "line 8: unknown protocol nosuch://", "--skip-bad-input-lines"):
        assert needle in text
    # the strict expansion never yields them (the pre-flight refused the list already)
    assert list(spec.expand()) == [str(EDGE / "one_frame.mp4")] * 2


def test_repeats_are_counted_and_skip_mode_keeps_bad_lines(tmp_path: Path, caplog) -> None:
    listing = _write_list(tmp_path / "videos.lst", [
        "\ufeff" + str(EDGE / "one_frame.mp4"), "one_frame.mp4", "gs://", str(EDGE / "one_frame.mp4")])
    spec = InputSpec.resolve(str(listing), skip_bad_lines=True)
    bad, repeats = spec.check_url_list()
    assert [(b.line, b.reason) for b in bad] == [(3, "a URL without a path")]
    assert repeats == 1 and "line 4 repeats line 1" in caplog.text
    entries = list(spec.entries())
    assert len(entries) == 4 and entries[2] == bad[0]
    ref = make_ref(entries[2])
    assert ref.input_error and "line 3" in ref.input_error
    assert ref.url.endswith("videos.lst#line=3") and len(ref.video_id) == 20
    assert make_ref(entries[2]) == ref  # stable id: resume skips it


@pytest.mark.parametrize("name", ["..", "...mp4", "-rf.mp4", "vidéo_雪☃.mp4", "a" * 240 + ".mp4",
                                  "sp ace.mp4", "$(touch x).mp4"])
def test_video_ids_are_fixed_length_hex_whatever_the_name(tmp_path: Path, name: str) -> None:
    ref = make_ref(str(tmp_path / "sub" / ".." / name))
    assert len(ref.video_id) == 20 and all(c in "0123456789abcdef" for c in ref.video_id)


@pytest.mark.slow
def test_job_on_hostile_names_writes_only_under_output(tmp_path: Path, capsys) -> None:
    """A URL list naming files through '..', absolute paths, a symlink, unicode and a 240-char
    name, one repeat and one malformed line: every video labelled once, every file under OUTPUT
    named by a hex id, the bad line recorded failed with its reason."""
    from jobs.cli import main

    corpus = tmp_path / "corpus" / "deep"
    corpus.mkdir(parents=True)
    names = ["vidéo_雪☃.mp4", "a" * 240 + ".mp4", "plain.mp4"]
    for name in names:
        shutil.copy(EDGE / "one_frame.mp4", corpus / name)
    os.symlink(corpus / "plain.mp4", tmp_path / "corpus" / "link.mp4")
    listing = _write_list(tmp_path / "corpus" / "list.txt", [
        "deep/../deep/" + names[0], str(corpus / names[1]), "link.mp4", "deep/plain.mp4",
        "deep/plain.mp4", "gs:/oops/v.mp4"])
    out = tmp_path / "out"
    argv = ["label", str(listing), str(out), "--checkpoint", str(CASE / "weights.pt"),
            "--config", str(CASE / "config.yaml"), "--workers", "1"]
    assert main(argv) == 2  # strict: refused before anything is written
    assert not out.exists()
    assert main(argv + ["--skip-bad-input-lines"]) == 0
    rows = pq.ParquetDataset(str(out / "videos")).read().to_pylist()
    assert len(rows) == 5  # 4 distinct files named (the symlink is its own name) + the bad line
    bad = [r for r in rows if r["error_type"] == BAD_INPUT_LINE]
    assert len(bad) == 1 and "line 6" in bad[0]["error_message"] and bad[0]["status"] == "failed"
    assert [r["status"] for r in rows if r is not bad[0]] == ["ok"] * 4
    for path in out.rglob("*"):
        assert path.resolve().is_relative_to(out.resolve())
        if path.is_file() and path.parent.name in ("tracks", "videos", "track_summary", "_done"):
            stem = path.name.split(".")[0]
            assert len(stem) == 20 and int(stem, 16) >= 0
    done = [json.loads(p.read_text()) for p in (out / "_done").glob("*.json")]
    assert len(done) == 5
    assert main(argv + ["--skip-bad-input-lines"]) == 0  # rerun: all done, nothing relabelled
    assert "0 video(s) labelled" in capsys.readouterr().out

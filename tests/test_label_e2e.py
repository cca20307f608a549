"""End to end: the real DVIS-DAQ model (reference case's small weights) through the Beam runner on
sample clips and edge-case files; statuses against the edge manifest; validation; rerun and
resume after a simulated kill (same rows, no duplicates, no half-written final file)."""

from __future__ import annotations

import json
import re
import sys
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import av
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main as cli_main
from pipeline.inputs import make_ref
from schemas.validate import validate_output

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "tests" / "data" / "reference_case1"
ONLINE = ["--checkpoint", str(CASE / "online" / "weights.pt"), "--config", str(CASE / "online" / "config.yaml")]
SAMPLES = ROOT / "samples" / "videos"
EDGE = ROOT / "tests" / "data" / "videos_edge"
EDGE_FILES = ["empty.mp4", "not_a_video.mp4", "audio_only.m4a", "truncated_60pct.mp4",
              "one_frame.mp4", "rotated_90.mp4"]
SAMPLE_FILES = ["05_default_juggle.mp4", "01_dog.mp4"]
CLIP_FRAMES = 12  # sample clips are cut (remuxed, not re-encoded) to keep the suite fast
FAST = ["--workers", "1", "--torch-threads", "1"]
TIMING = ("decode_seconds", "model_seconds")
SUMMARY = re.compile(r"daq-label label: (\d+) video\(s\) labelled \(ok (\d+), partial (\d+), failed (\d+)\), "
                     r"(\d+) already done, (\d+) frames, (\d+) tracks")


def _run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, tuple[int, ...]]:
    rc = cli_main(["label", *args])
    out = capsys.readouterr().out
    match = SUMMARY.search(out)
    assert match, out
    return rc, tuple(int(g) for g in match.groups())


def _tables(out: Path) -> dict[str, pa.Table]:
    return {name: pq.read_table(out / name) for name in ("tracks", "track_summary", "videos")}


def _rows(table: pa.Table, video_id: str | None = None, drop: tuple[str, ...] = ()) -> list[dict]:
    rows = [{k: v for k, v in r.items() if k not in drop} for r in table.to_pylist()
            if video_id is None or r["video_id"] == video_id]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def cut_clip(source: Path, target: Path, frames: int) -> Path:
    """The first ``frames`` packets of a sample clip in a new MP4 (stream copy: same H.264 data)."""
    with av.open(str(source)) as src, av.open(str(target), "w", format="mp4") as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        muxed = 0
        for packet in src.demux(stream):
            if packet.dts is None or muxed == frames:
                continue
            packet.stream = out
            dst.mux(packet)
            muxed += 1
    return target


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("e2e")
    clips = [cut_clip(SAMPLES / n, work / n, CLIP_FRAMES) for n in SAMPLE_FILES]
    listing = work / "videos.txt"
    lines = [str(c) for c in clips] + [str(EDGE / n) for n in EDGE_FILES]
    lines.append(str(work / "vanished.mp4"))  # an unreadable URL
    lines.append(SAMPLE_FILES[0])  # named twice (relative to the list): labelled once
    listing.write_text("# e2e corpus\n" + "\n".join(lines) + "\n")
    out = work / "out"
    buffer = StringIO()  # capsys is function-scoped; the job runs once per module
    with redirect_stdout(buffer):
        rc = cli_main(["label", str(listing), str(out), *ONLINE, *FAST])
    return {"rc": rc, "stdout": buffer.getvalue(), "out": out, "listing": listing, "work": work}


def test_job_finishes_with_exit_0_and_a_summary(labelled: dict) -> None:
    assert labelled["rc"] == 0
    match = SUMMARY.search(labelled["stdout"])
    assert match, labelled["stdout"]
    videos, ok, partial, failed, done, frames, tracks = (int(g) for g in match.groups())
    # ok: 2 sample clips + one_frame, rotated; partial: truncated; failed: 3 bad files + vanished
    assert (videos, ok, partial, failed, done) == (9, 4, 1, 4, 0)
    assert frames == 2 * CLIP_FRAMES + 1 + 48 + 68
    assert tracks > 0


def test_statuses_match_the_edge_manifest(labelled: dict) -> None:
    manifest = {f["name"]: f for f in json.loads((EDGE / "manifest.json").read_text())["files"]}
    videos = {Path(r["source_url"]).name: r for r in _tables(labelled["out"])["videos"].to_pylist()}
    assert len(videos) == 9
    for name in EDGE_FILES:
        expected, row = manifest[name]["expected"], videos[name]
        assert row["status"] in expected["accept_status"], (name, row)
        assert expected["frames_min"] <= row["frames_decoded"] <= expected["frames_max"]
        if expected["error_kind"]:
            assert row["error_type"] == expected["error_kind"] and name in row["error_message"]
    vanished = videos["vanished.mp4"]
    assert (vanished["status"], vanished["error_type"]) == ("failed", "unreadable")
    assert (videos["rotated_90.mp4"]["width"], videos["rotated_90.mp4"]["height"]) == (180, 320)
    assert videos["rotated_90.mp4"]["rotation"] == 90
    assert videos["truncated_60pct.mp4"]["frames_expected"] == 120
    for name in SAMPLE_FILES:
        assert videos[name]["status"] == "ok" and videos[name]["model_seconds"] > 0
        assert videos[name]["frames_decoded"] == videos[name]["frames_expected"] == CLIP_FRAMES


def test_track_rows_are_consistent_with_the_videos(labelled: dict) -> None:
    tables = _tables(labelled["out"])
    videos = {r["video_id"]: r for r in tables["videos"].to_pylist()}
    key = json.loads((labelled["out"] / "_provenance.json").read_text())["provenance_key"]
    tracks = tables["tracks"]
    assert set(tracks["provenance_key"].to_pylist()) == {key}
    assert set(tables["videos"]["provenance_key"].to_pylist()) == {key}
    for row in tracks.select(["video_id", "frame_index", "mask"]).to_pylist():
        video = videos[row["video_id"]]
        assert video["status"] in ("ok", "partial")
        assert 0 <= row["frame_index"] < video["frames_decoded"]
        assert row["mask"]["size"] == [video["height"], video["width"]]
    for vid, video in videos.items():
        n = sum(1 for r in tables["track_summary"]["video_id"].to_pylist() if r == vid)
        assert n == video["num_tracks"]
        if video["status"] == "failed":
            assert n == 0


def test_output_validates_deep(labelled: dict) -> None:
    report = validate_output(str(labelled["out"]), deep=True)
    assert report.ok, report.errors[:5]
    assert report.videos == 9 and not report.warnings


def test_rerun_skips_done_videos_and_changes_nothing(labelled: dict, capsys) -> None:
    out = labelled["out"]
    before = {p: p.read_bytes() for p in out.rglob("*.parquet")}
    rc, counts = _run([str(labelled["listing"]), str(out), *ONLINE, *FAST], capsys)
    assert rc == 0 and counts[:5] == (0, 0, 0, 0, 9)
    assert {p: p.read_bytes() for p in out.rglob("*.parquet")} == before


def test_resume_after_a_kill_relabels_only_the_unfinished_video(labelled: dict, capsys) -> None:
    """Simulate a worker killed after writing one_frame.mp4's tracks but before its videos file
    and done marker (plus a stray temporary file): the rerun labels exactly that video, with the
    same rows as before, and leaves no duplicates and no temporary files."""
    out = labelled["out"]
    vid = make_ref(str(EDGE / "one_frame.mp4")).video_id
    before = _tables(out)
    (out / "_done" / f"{vid}.json").unlink()
    (out / "videos" / f"{vid}.parquet").unlink()
    (out / "_tmp").mkdir(exist_ok=True)
    (out / "_tmp" / f"deadbeef.videos__{vid}.parquet").write_bytes(b"half a parquet file")
    assert any("without a done marker" in w for w in validate_output(str(out)).warnings)
    rc, counts = _run([str(labelled["listing"]), str(out), *ONLINE, *FAST], capsys)
    assert rc == 0 and counts[:5] == (1, 1, 0, 0, 8)
    after = _tables(out)
    for name in ("tracks", "track_summary"):
        assert _rows(after[name]) == _rows(before[name])  # same rows, none duplicated
    assert _rows(after["videos"], vid, TIMING) == _rows(before["videos"], vid, TIMING)
    assert not list((out / "_tmp").iterdir())
    assert validate_output(str(out), deep=True).ok


def test_multi_process_runner_gives_the_same_rows(labelled: dict, capsys) -> None:
    """Two SDK worker processes (each loading the model once) label the same videos to the
    same rows as the in-process run."""
    out = labelled["work"] / "out_mp"
    inputs = labelled["work"] / "two.txt"
    inputs.write_text(f"{EDGE / 'one_frame.mp4'}\n{EDGE / 'odd_321x183.webm'}\n")
    rc, counts = _run([str(inputs), str(out), *ONLINE, "--workers", "2"], capsys)
    assert rc == 0 and counts[:4] == (2, 2, 0, 0)
    first, second = _tables(labelled["out"]), _tables(out)
    vid = make_ref(str(EDGE / "one_frame.mp4")).video_id
    assert _rows(second["tracks"], vid) == _rows(first["tracks"], vid)
    assert _rows(second["videos"], vid, TIMING) == _rows(first["videos"], vid, TIMING)
    odd = {r["source_url"].rsplit("/", 1)[1]: r for r in second["videos"].to_pylist()}["odd_321x183.webm"]
    assert (odd["width"], odd["height"], odd["frames_decoded"]) == (321, 183, 30)
    assert validate_output(str(out), deep=True).ok


def test_offline_model_uses_refined_masks(tmp_path: Path, capsys) -> None:
    from tests.reference_case import ReferenceCase

    weights = ReferenceCase.selected().weights_path("offline", tmp_path)
    out = tmp_path / "out"
    rc, counts = _run([str(EDGE / "one_frame.mp4"), str(out), "--checkpoint", str(weights),
                       "--config", str(CASE / "offline" / "config.yaml"), *FAST], capsys)
    assert rc == 0 and counts[:4] == (1, 1, 0, 0)
    tables = _tables(out)
    assert tables["videos"]["num_tracks"].to_pylist()[0] == tables["track_summary"].num_rows > 0
    assert validate_output(str(out), deep=True).ok

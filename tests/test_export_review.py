"""``daq-label review``: the K least confident videos / tracks, by the label-health figures,
exported (read back with the YouTube-VIS reader) with review_queue.csv in that order."""

from __future__ import annotations

import csv

import pytest

from tests.conftest_outputs import labelled_output  # noqa: F401 - fixture
from daq_eval.ytvis_format import read_dataset
from daq_label import open_output
from jobs.cli import main as cli_main


def _queue(dest):
    with open(dest / "review_queue.csv") as handle:
        return list(csv.DictReader(handle))


def test_worst_videos_by_mean_score_and_by_events(labelled_output, tmp_path):
    out = open_output(str(labelled_output))
    videos = [r for r in out.videos().to_pylist() if r["status"] != "failed"]  # never queued
    dest = tmp_path / "v"
    assert cli_main(["review", str(labelled_output), str(dest), "--worst", "1", "--format", "ytvis"]) == 0
    worst = min(videos, key=lambda r: r["mean_score"])
    assert [r["video_id"] for r in _queue(dest)] == [worst["video_id"]]
    dataset = read_dataset(dest / "dataset.json")
    assert [v.extra["daq_video_id"] for v in dataset.videos] == [worst["video_id"]]
    assert len(dataset.annotations) == worst["num_tracks"]
    dest = tmp_path / "e"
    assert cli_main(["review", str(labelled_output), str(dest), "--worst", "2", "--rank", "events",
                     "--format", "ytvis"]) == 0
    rate = {r["video_id"]: (r["appear_events"] + r["disappear_events"]) / r["num_tracks"] for r in videos}
    queued = [r["video_id"] for r in _queue(dest)]
    assert queued == sorted(rate, key=lambda v: (-rate[v], v))


def test_worst_tracks_with_a_filter(labelled_output, tmp_path):
    out = open_output(str(labelled_output))
    summary = [r for r in out.track_summary().to_pylist() if r["frames_present"] >= 3]
    expected = sorted(summary, key=lambda r: (r["score"], r["video_id"], r["track_id"]))[:3]
    dest = tmp_path / "t"
    assert cli_main(["review", str(labelled_output), str(dest), "--worst", "3", "--tracks",
                     "--min-track-length", "3", "--format", "ytvis"]) == 0
    queue = _queue(dest)
    assert [(q["video_id"], int(q["track_id"])) for q in queue] == [(r["video_id"], r["track_id"]) for r in expected]
    assert [float(q["value"]) for q in queue] == pytest.approx([r["score"] for r in expected])
    dataset = read_dataset(dest / "dataset.json")
    exported = {(dataset.videos_by_id[a.video_id].extra["daq_video_id"], a.extra["track_id"])
                for a in dataset.annotations}
    assert exported == {(r["video_id"], r["track_id"]) for r in expected}


def test_bad_review_arguments(labelled_output, tmp_path):
    for extra in (["--worst", "0"], ["--worst", "2", "--rank", "events", "--tracks"],
                  ["--worst", "2", "--rank", "score"]):
        assert cli_main(["review", str(labelled_output), str(tmp_path / "x"), "--format", "ytvis", *extra]) == 2
    assert not (tmp_path / "x").exists()

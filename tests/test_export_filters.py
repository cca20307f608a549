"""The export filters (daq_label/filters.py): each criterion against the track_summary rows it
should keep, combined filters, and unusable names refused with exit 2."""

from __future__ import annotations

import pytest

from tests.conftest_outputs import labelled_output  # noqa: F401 - fixture
from daq_label import OutputError, open_output
from daq_label.filters import TrackFilter
from jobs.cli import main as cli_main


def _kept(out, track_filter):
    selection = track_filter.select(out)
    return {(r["video_id"], r["track_id"]) for r in selection.track_summary.to_pylist()}, selection


def _expected(out, keep):
    return {(r["video_id"], r["track_id"]) for r in out.track_summary().to_pylist() if keep(r)}


def test_each_criterion_keeps_exactly_the_passing_tracks(labelled_output):
    out = open_output(str(labelled_output))
    summary = out.track_summary().to_pylist()
    scores = sorted(r["score"] for r in summary)
    lengths = sorted(r["frames_present"] for r in summary)
    areas = sorted(r["mean_area"] for r in summary)
    cases = [
        (TrackFilter(min_score=scores[len(scores) // 2]), lambda r: r["score"] >= scores[len(scores) // 2]),
        (TrackFilter(min_track_length=lengths[-1]), lambda r: r["frames_present"] >= lengths[-1]),
        (TrackFilter(min_mean_area=areas[len(areas) // 2]), lambda r: r["mean_area"] >= areas[len(areas) // 2]),
        (TrackFilter(categories=(summary[0]["category_name"],)),
         lambda r: r["category_name"] == summary[0]["category_name"]),
        (TrackFilter(categories=(str(summary[0]["category_id"]),)),
         lambda r: r["category_id"] == summary[0]["category_id"]),
        (TrackFilter(video_ids=(summary[0]["video_id"],)), lambda r: r["video_id"] == summary[0]["video_id"]),
        (TrackFilter(min_score=0.5, min_track_length=5),
         lambda r: r["score"] >= 0.5 and r["frames_present"] >= 5),
    ]
    for track_filter, keep in cases:
        kept, selection = _kept(out, track_filter)
        expected = _expected(out, keep)
        assert kept == expected, track_filter
        assert 0 < len(kept) < len(summary) or track_filter.video_ids, track_filter
        for vid in selection.video_ids:
            tracks = selection.tracks(vid)
            assert set(tracks["track_id"].to_pylist()) == {t for v, t in kept if v == vid}
    kept, selection = _kept(out, TrackFilter(video_ids=(summary[0]["video_id"],)))
    assert selection.video_ids == [summary[0]["video_id"]]
    kept, selection = _kept(out, TrackFilter(min_score=2.0))
    assert not kept and len(selection.video_ids) == 2  # videos without labels are still exported


def test_unknown_names_are_refused(labelled_output, tmp_path, caplog):
    out = open_output(str(labelled_output))
    with pytest.raises(OutputError, match="not one of the model's: disc"):
        TrackFilter(categories=("zebra",)).select(out)
    with pytest.raises(OutputError, match="has no video"):
        TrackFilter(video_ids=("feedfacefeedfacefeed",)).select(out)
    for extra in (["--category", "zebra"], ["--video", "feedfacefeedfacefeed"], ["--min-track-length", "0"]):
        assert cli_main(["export", str(labelled_output), str(tmp_path / "x"), "--format", "ytvis", *extra]) == 2
    assert cli_main(["export", str(tmp_path), str(tmp_path / "x"), "--format", "ytvis"]) == 2
    assert not (tmp_path / "x").exists()


def test_export_to_an_fsspec_url(labelled_output):
    import json

    import fsspec

    assert cli_main(["export", str(labelled_output), "memory://exports/ytvis", "--format", "ytvis",
                     "--min-score", "0.5"]) == 0
    fs = fsspec.filesystem("memory")
    results = json.loads(fs.cat("/exports/ytvis/results.json"))
    assert results and min(r["score"] for r in results) >= 0.5
    fs.rm("/exports", recursive=True)

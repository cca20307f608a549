"""daq_label.open_output on a real label-job OUTPUT: tables with their schemas, per-video reads,
mask decoding against pycocotools on the stored rows, frame iteration, clear errors."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from pycocotools import mask as mask_utils

from tests.conftest_outputs import labelled_output  # noqa: F401 - fixture
from daq_label import OutputError, open_output
from schemas.tables import TRACK_SUMMARY_V1, TRACKS_V1, VIDEOS_V1


def test_tables_have_their_schemas_and_read_per_video(labelled_output):
    out = open_output(str(labelled_output))
    ids = out.video_ids()
    statuses = dict(zip(out.videos()["video_id"].to_pylist(), out.videos()["status"].to_pylist()))
    assert sorted(statuses.values()) == ["failed", "ok", "ok"]
    ids = [v for v in ids if statuses[v] == "ok"]
    assert out.videos().schema.equals(VIDEOS_V1)
    assert out.tracks().schema.equals(TRACKS_V1)
    assert out.track_summary().schema.equals(TRACK_SUMMARY_V1)
    one = out.tracks([ids[1]])
    assert set(one["video_id"].to_pylist()) == {ids[1]}
    assert one.num_rows + out.tracks([ids[0]]).num_rows == out.tracks().num_rows
    high = out.tracks(filter=ds.field("score") > 0.5, columns=["video_id", "score"])
    assert high.column_names == ["video_id", "score"]
    assert pc.min(high["score"]).as_py() > 0.5
    assert out.provenance()["model_name"] == out.videos()["model_name"][0].as_py()


def test_decode_mask_equals_pycocotools_on_every_row(labelled_output):
    out = open_output(str(labelled_output))
    rows = out.tracks().to_pylist()
    assert rows
    for row in rows:
        expected = mask_utils.decode({"size": row["mask"]["size"], "counts": row["mask"]["counts"].encode()})
        got = out.decode_mask(row["video_id"], row["track_id"], row["frame_index"])
        assert got.dtype == bool and got.shape == tuple(row["mask"]["size"])
        assert np.array_equal(got, expected.astype(bool))
        assert int(got.sum()) == row["area"]


def test_absent_frame_is_empty_and_bad_ids_raise(labelled_output):
    out = open_output(str(labelled_output))
    summary = out.track_summary().to_pylist()
    short = min(summary, key=lambda r: r["frames_present"])
    present = set(pc.filter(out.tracks([short["video_id"]])["frame_index"],
                            pc.equal(out.tracks([short["video_id"]])["track_id"], short["track_id"])).to_pylist())
    frames = out.videos([short["video_id"]])["frames_decoded"][0].as_py()
    absent = [f for f in range(frames) if f not in present]
    assert absent, "the fixture has no track absent from some frame"
    mask = out.decode_mask(short["video_id"], short["track_id"], absent[0])
    assert mask.shape == out.frame_size(short["video_id"]) and not mask.any()
    with pytest.raises(OutputError, match="no video"):
        out.decode_mask("0" * 20, 0, 0)
    with pytest.raises(OutputError, match="no track 999"):
        out.decode_mask(short["video_id"], 999, 0)
    with pytest.raises(OutputError, match="outside"):
        out.decode_mask(short["video_id"], short["track_id"], frames)


def test_iter_frames_gives_every_frame_and_mask(labelled_output):
    out = open_output(str(labelled_output))
    for vid in out.video_ids():
        frames = list(out.iter_frames(vid))
        assert [f.frame_index for f in frames] == list(range(out.videos([vid])["frames_decoded"][0].as_py()))
        assert sum(len(f.track_ids) for f in frames) == out.tracks([vid]).num_rows
        if not frames:  # the failed video: no frames, no tracks
            assert out.videos([vid])["status"][0].as_py() == "failed"
            continue
        for f in frames:
            for i, track in enumerate(f.track_ids):
                assert np.array_equal(f.masks[i], out.decode_mask(vid, int(track), f.frame_index))
        only = {int(out.track_summary([vid])["track_id"][0].as_py())}
        assert {int(t) for f in out.iter_frames(vid, only) for t in f.track_ids} == only


def test_not_an_output_and_unknown_table(tmp_path, labelled_output):
    with pytest.raises(OutputError, match="not a daq-label output"):
        open_output(str(tmp_path))
    with pytest.raises(OutputError, match="unknown table"):
        open_output(str(labelled_output)).table("frames")


def test_pandas_is_optional(labelled_output, monkeypatch):
    out = open_output(str(labelled_output))
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        out.pandas("videos")
    monkeypatch.setitem(sys.modules, "duckdb", None)
    with pytest.raises(ImportError, match="pip install duckdb"):
        out.duckdb("videos")


def test_readme_python_api_example_runs(labelled_output, tmp_path, monkeypatch, capsys):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Python API"):]
    snippet = re.search(r"```python\n(.*?)\n```", section, flags=re.S).group(1)
    assert "open_output(\"out/samples\")" in snippet
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "samples").symlink_to(labelled_output)
    monkeypatch.chdir(tmp_path)
    pytest.importorskip("pandas")  # the example's last line; pandas comes with the test extra
    namespace: dict = {}
    exec(compile(snippet, "README.md (Python API)", "exec"), namespace)
    printed = capsys.readouterr().out
    out = open_output(str(labelled_output))
    best = max(out.track_summary().to_pylist(), key=lambda r: r["score"])
    assert namespace["mask"].sum() > 0 and namespace["best"]["track_id"] == best["track_id"]
    assert f"{best['category_name']} {out.frame_size(best['video_id'])}" in printed
    assert len(namespace["df"]) == out.track_summary().num_rows

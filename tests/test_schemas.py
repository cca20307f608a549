"""The versioned schemas and ``daq-label validate``: conforming output passes, bad files fail."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from daq_model.outputs import FrameTracks, Instance
from jobs.cli import main as cli_main
from pipeline.inputs import VideoRef
from pipeline.labeler import failed_labels
from pipeline.storage import OutputLayout
from pipeline.tables import LabelledInstance, Provenance, health, summary_table, tracks_table
from pipeline.tracks import TrackStream
from pipeline.transforms import write_parquet
from schemas.tables import SCHEMAS, TABLES, TRACKS_V1, VIDEOS_V1, schema_identity
from schemas.validate import validate_output

PROV = Provenance("m", "a" * 64, "c" * 16, "0.1.0", "feedfacefeedface")


def _good_video(layout: OutputLayout, video_id: str = "v1") -> None:
    """Write one labelled video (two tracks) and its done marker like the pipeline does."""
    rng = np.random.default_rng(0)
    stream = TrackStream(encode_masks=True)
    for t in range(4):
        masks = rng.random((2, 20, 30)) > 0.5
        stream.add(FrameTracks(t, np.array([3, 5]), np.ones(2, bool), np.array([0.8, 0.4], np.float32),
                               np.zeros(2, np.int64), masks))
    instances = [LabelledInstance(Instance(0, 3, 1, 0.7), 2, "b", stream.rows_for(Instance(0, 3, 1, 0.7))),
                 LabelledInstance(Instance(1, 5, 0, 0.2), 1, "a", stream.rows_for(Instance(1, 5, 0, 0.2)))]
    times = [0.0, 0.1, 0.2, 0.3]
    failed = failed_labels(VideoRef(video_id, f"file:///x/{video_id}.mp4"), PROV, "x", "y")
    row = dict(failed.video_row, status="ok", error_type=None, error_message=None, frames_decoded=4,
               width=30, height=20, **health(instances, 4))
    tables = {"tracks": tracks_table(video_id, instances, times, 10.0, PROV.key, 20, 30),
              "track_summary": summary_table(video_id, instances, times, 10.0, PROV.key),
              "videos": pa.table({k: [row[k]] for k in VIDEOS_V1.names}, schema=VIDEOS_V1)}
    for name, table in tables.items():
        write_parquet(layout, layout.table_path(name, video_id), table)
    layout.write_json_atomic(layout.done_path(video_id), {"video_id": video_id, "status": "ok"})


@pytest.fixture()
def output(tmp_path: Path) -> tuple[Path, OutputLayout]:
    layout = OutputLayout(str(tmp_path / "out"))
    layout.write_json_atomic(layout.provenance_path, {"provenance_key": PROV.key})
    _good_video(layout, "v1")
    failed = failed_labels(VideoRef("v2", "file:///x/v2.mp4"), PROV, "not_a_video", "v2.mp4: bad")
    for spec, table in zip(TABLES, (failed.tracks, failed.track_summary, None)):
        write_parquet(layout, layout.table_path(spec.name, "v2"),
                      table if table is not None else pa.table({k: [failed.video_row[k]] for k in VIDEOS_V1.names},
                                                               schema=VIDEOS_V1))
    layout.write_json_atomic(layout.done_path("v2"), {"video_id": "v2", "status": "failed"})
    return tmp_path / "out", layout


def test_schemas_are_versioned_and_self_describing() -> None:
    for spec in TABLES:
        assert schema_identity(spec.schema) == (spec.name, spec.version)
        assert SCHEMAS[(spec.name, spec.version)] is spec.schema
        assert all(f.metadata and f.metadata.get(b"description") for f in spec.schema)


def test_conforming_output_validates(output) -> None:
    root, _ = output
    report = validate_output(str(root), deep=True)
    assert report.ok, report.errors
    assert report.videos == 2 and report.files == 6
    assert report.rows["tracks"] == 8 and report.rows["videos"] == 2
    assert cli_main(["validate", str(root), "--deep"]) == 0


def _rewrite(path: Path, table: pa.Table, **kwargs) -> None:
    pq.write_table(table, path, compression=kwargs.pop("compression", "zstd"), **kwargs)


@pytest.mark.parametrize("damage, message", [
    ("int32_area", "schema differs"),
    ("no_metadata", "no daq_label table/schema_version metadata"),
    ("snappy", "not ZSTD"),
    ("extra_column", "unexpected column"),
    ("wrong_video_id", "does not match the file name"),
    ("other_provenance", "differs from OUTPUT/_provenance.json"),
    ("bbox_outside", "outside the mask"),
    ("rle_mismatch", "disagree with the decoded mask"),
    ("not_parquet", "not a readable Parquet file"),
    ("missing_summary", "missing although the video is marked done"),
    ("summary_disagrees", "frames_present per track disagrees"),
])
def test_validation_fails_on_a_bad_file(output, damage: str, message: str) -> None:
    root, _ = output
    path = root / "tracks" / "v1.parquet"
    table = pq.read_table(path)
    if damage == "int32_area":
        _rewrite(path, table.set_column(table.schema.get_field_index("area"),
                                        pa.field("area", pa.int32(), nullable=False),
                                        table["area"].cast(pa.int32())))
    elif damage == "no_metadata":
        _rewrite(path, table.replace_schema_metadata(None))
    elif damage == "snappy":
        _rewrite(path, table, compression="snappy")
    elif damage == "extra_column":
        _rewrite(path, table.append_column("extra", pa.array([1] * table.num_rows)))
    elif damage == "wrong_video_id":
        ids = pa.array(["v9"] * table.num_rows)
        _rewrite(path, table.set_column(0, TRACKS_V1.field("video_id"), ids))
    elif damage == "other_provenance":
        (root / "_provenance.json").write_text(json.dumps({"provenance_key": "0123456789abcdef"}))
    elif damage in ("bbox_outside", "rle_mismatch"):
        rows = table.to_pylist()
        if damage == "bbox_outside":
            rows[0]["bbox"] = [25.0, 0.0, 10.0, 5.0]  # x + w = 35 > width 30
        else:
            rows[0]["area"] += 1
        _rewrite(path, pa.Table.from_pylist(rows, schema=TRACKS_V1))
    elif damage == "not_parquet":
        path.write_bytes(b"PAR1 this is not parquet")
    elif damage == "missing_summary":
        (root / "track_summary" / "v1.parquet").unlink()
    elif damage == "summary_disagrees":
        _rewrite(path, table.slice(1))
    report = validate_output(str(root), deep=True)
    assert not report.ok
    assert any(message in e for e in report.errors), report.errors
    assert cli_main(["validate", str(root), "--deep"]) == 1


def test_videos_row_rules(output) -> None:
    root, _ = output
    path = root / "videos" / "v2.parquet"
    rows = pq.read_table(path).to_pylist()
    rows[0]["error_type"] = None  # failed without a reason
    _rewrite(path, pa.Table.from_pylist(rows, schema=VIDEOS_V1))
    report = validate_output(str(root))
    assert any("without error_type" in e for e in report.errors)


def test_files_without_done_marker_are_warnings_and_missing_output_is_an_error(output, tmp_path: Path) -> None:
    root, layout = output
    (root / "_done" / "v1.json").unlink()
    report = validate_output(str(root))
    assert report.ok and any("without a done marker" in w for w in report.warnings)
    assert cli_main(["validate", str(tmp_path / "nowhere")]) == 2

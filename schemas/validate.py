"""Check a label job's OUTPUT against the versioned schemas (``daq-label validate OUTPUT``).

Per file: Parquet readable, table name and schema version in its metadata are known, the Arrow
schema equals that version exactly (names, order, types, nullability), zstd compression, the
file name is its ``video_id``, value rules (ranges, status/error consistency, one provenance key).
Per video: a done marker implies all three tables; tracks rows, track_summary and the videos row
agree (frames present, track counts, provenance). ``deep`` also decodes every mask RLE and checks
its size, area and box. Files without a done marker are reported as warnings (a run in progress
or interrupted; rerunning ``label`` replaces them).
"""

from __future__ import annotations

import json
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from schemas.tables import DONE_DIR, PROVENANCE_FILE, SCHEMAS, STATUSES, TABLES, TMP_DIR, schema_identity


@dataclass
class ValidationReport:
    output: str
    files: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    videos: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def merge(self, other: "ValidationReport") -> None:
        self.files += other.files
        for k, v in other.rows.items():
            self.rows[k] = self.rows.get(k, 0) + v
        self.errors += other.errors
        self.warnings += other.warnings


def _check(report: ValidationReport, condition: bool, path: str, message: str) -> bool:
    if not condition:
        report.errors.append(f"{path}: {message}")
    return condition


def read_table_file(fs: Any, path: str, expected: str, report: ValidationReport) -> pa.Table | None:
    """Read one Parquet file and check its schema; None if it is unusable."""
    try:
        with fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            schema = parquet.schema_arrow
            meta = parquet.metadata
            table = parquet.read()
    except Exception as exc:  # noqa: BLE001 - any reason a file is unreadable is an error
        report.errors.append(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})")
        return None
    report.files += 1
    identity = schema_identity(schema)
    if not _check(report, identity is not None, path, "no daq_label table/schema_version metadata"):
        return None
    name, version = identity
    if not _check(report, name == expected, path, f"holds table {name!r}, expected {expected!r}"):
        return None
    want = SCHEMAS.get((name, version))
    if not _check(report, want is not None, path, f"unknown schema version {name} v{version}"):
        return None
    if not schema.equals(want, check_metadata=False):
        diffs = _schema_diff(schema, want)
        report.errors.append(f"{path}: schema differs from {name} v{version}: {diffs}")
        return None
    for rg in range(meta.num_row_groups):
        for col in range(meta.num_columns):
            codec = meta.row_group(rg).column(col).compression
            if codec != "ZSTD":
                report.errors.append(f"{path}: column {meta.schema.column(col).path} is {codec}, not ZSTD")
                return table
    report.rows[name] = report.rows.get(name, 0) + table.num_rows
    return table


def _schema_diff(got: pa.Schema, want: pa.Schema) -> str:
    out = []
    for f in want:
        if f.name not in got.names:
            out.append(f"missing column {f.name}")
        elif not got.field(f.name).equals(f):
            g = got.field(f.name)
            out.append(f"{f.name}: {g.type}{'' if g.nullable else ' not null'} instead of "
                       f"{f.type}{'' if f.nullable else ' not null'}")
    out += [f"unexpected column {n}" for n in got.names if n not in want.names]
    if not out and got.names != want.names:
        out.append(f"column order {got.names}")
    return "; ".join(out) or "field metadata"


def _all(column: pa.ChunkedArray | pa.Array, predicate: Any) -> bool:
    if len(column) == 0:
        return True
    return bool(pc.all(predicate).as_py())


def _check_common(report: ValidationReport, path: str, table: pa.Table, video_id: str,
                  provenance: str | None) -> None:
    ids = set(table.column("video_id").to_pylist())
    _check(report, ids <= {video_id}, path, f"video_id {sorted(ids)} does not match the file name")
    keys = set(table.column("provenance_key").to_pylist())
    if provenance is not None:
        _check(report, keys <= {provenance}, path,
               f"provenance_key {sorted(keys)} differs from OUTPUT/_provenance.json ({provenance})")


def check_tracks(report: ValidationReport, path: str, t: pa.Table, deep: bool) -> None:
    if t.num_rows == 0:
        return
    _check(report, _all(t["frame_index"], pc.greater_equal(t["frame_index"], 0)), path, "negative frame_index")
    _check(report, _all(t["track_id"], pc.greater_equal(t["track_id"], 0)), path, "negative track_id")
    _check(report, _all(t["category_id"], pc.greater_equal(t["category_id"], 1)), path, "category_id < 1")
    _check(report, _all(t["area"], pc.greater(t["area"], 0)), path, "rows with an empty mask (area 0)")
    _check(report, _all(t["timestamp_s"], pc.is_finite(t["timestamp_s"])), path, "non-finite timestamp_s")
    for col in ("score", "frame_score"):
        values = t[col].drop_null() if hasattr(t[col], "drop_null") else t[col]
        _check(report, _all(values, pc.and_(pc.greater_equal(values, 0), pc.less_equal(values, 1))),
               path, f"{col} outside [0, 1]")
    keys = list(zip(t["track_id"].to_pylist(), t["frame_index"].to_pylist()))
    _check(report, len(set(keys)) == len(keys), path, "duplicate (track_id, frame_index) rows")
    masks = t["mask"].combine_chunks()
    sizes = np.asarray(masks.field("size").flatten()).reshape(-1, 2)
    boxes = np.asarray(t["bbox"].combine_chunks().flatten(), dtype=np.float64).reshape(-1, 4)
    _check(report, bool((sizes > 0).all()), path, "mask size not positive")
    inside = (boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0) & \
        (boxes[:, 0] + boxes[:, 2] <= sizes[:, 1] + 1e-3) & (boxes[:, 1] + boxes[:, 3] <= sizes[:, 0] + 1e-3)
    _check(report, bool(inside.all()), path, f"{int((~inside).sum())} bbox(es) outside the mask")
    if deep:
        from pycocotools import mask as mask_utils

        counts = masks.field("counts").to_pylist()
        areas = t["area"].to_pylist()
        for i, (size, text) in enumerate(zip(sizes.tolist(), counts)):
            rle = {"size": size, "counts": text.encode("ascii")}
            try:
                area = int(mask_utils.area(rle))
                box = mask_utils.toBbox(rle)
            except Exception as exc:  # noqa: BLE001
                report.errors.append(f"{path}: row {i}: mask RLE does not decode ({exc})")
                return
            if area != areas[i] or not np.allclose(box, boxes[i], atol=1e-3):
                report.errors.append(f"{path}: row {i}: area/bbox disagree with the decoded mask")
                return


def check_summary(report: ValidationReport, path: str, t: pa.Table) -> None:
    if t.num_rows == 0:
        return
    first, last, present = (np.asarray(t[c]) for c in ("first_frame", "last_frame", "frames_present"))
    _check(report, bool((first <= last).all()), path, "first_frame after last_frame")
    _check(report, bool(((present >= 1) & (present <= last - first + 1)).all()), path,
           "frames_present outside [1, last_frame - first_frame + 1]")
    mean, high = np.asarray(t["mean_frame_score"]), np.asarray(t["max_frame_score"])
    _check(report, bool((mean <= high + 1e-6).all()), path, "mean_frame_score above max_frame_score")
    ids = t["track_id"].to_pylist()
    _check(report, len(set(ids)) == len(ids), path, "duplicate track_id")


def check_video_row(report: ValidationReport, path: str, t: pa.Table) -> dict[str, Any] | None:
    if not _check(report, t.num_rows == 1, path, f"{t.num_rows} rows, expected exactly 1"):
        return None
    row = t.to_pylist()[0]
    status = row["status"]
    _check(report, status in STATUSES, path, f"status {status!r} not one of {STATUSES}")
    if status == "ok":
        _check(report, row["error_type"] is None, path, "status ok with an error_type")
    else:
        _check(report, bool(row["error_type"]) and bool(row["error_message"]), path,
               f"status {status} without error_type and error_message")
    if status in ("ok", "partial"):
        _check(report, row["frames_decoded"] >= 1 and row["width"] and row["height"], path,
               f"status {status} without decoded frames and a frame size")
    return row


def validate_video(fs: Any, root: str, video_id: str, present: set[str], done: bool,
                   provenance: str | None, deep: bool) -> ValidationReport:
    report = ValidationReport(root)
    if done:
        for spec in TABLES:
            _check(report, spec.name in present, posixpath.join(root, spec.name, f"{video_id}.parquet"),
                   "missing although the video is marked done")
    tables: dict[str, pa.Table] = {}
    for spec in TABLES:
        if spec.name not in present:
            continue
        path = posixpath.join(root, spec.name, f"{video_id}.parquet")
        table = read_table_file(fs, path, spec.name, report)
        if table is None:
            continue
        tables[spec.name] = table
        _check_common(report, path, table, video_id, provenance)
        if spec.name == "tracks":
            check_tracks(report, path, table, deep)
        elif spec.name == "track_summary":
            check_summary(report, path, table)
    row = check_video_row(report, posixpath.join(root, "videos", f"{video_id}.parquet"),
                          tables["videos"]) if "videos" in tables else None
    if "tracks" in tables and "track_summary" in tables:
        per_track: dict[int, int] = {}
        for tid in tables["tracks"]["track_id"].to_pylist():
            per_track[tid] = per_track.get(tid, 0) + 1
        summary = dict(zip(tables["track_summary"]["track_id"].to_pylist(),
                           tables["track_summary"]["frames_present"].to_pylist()))
        _check(report, per_track == summary, posixpath.join(root, "track_summary", video_id),
               "frames_present per track disagrees with the tracks rows")
        if row is not None:
            _check(report, row["num_tracks"] == len(summary), posixpath.join(root, "videos", video_id),
                   f"num_tracks {row['num_tracks']} but {len(summary)} tracks in track_summary")
    return report


def _ids(fs: Any, directory: str, suffix: str, report: ValidationReport) -> set[str]:
    if not fs.exists(directory):
        return set()
    out = set()
    for path in fs.find(directory):
        name = posixpath.basename(path)
        if name.endswith(suffix):
            out.add(name[: -len(suffix)])
        else:
            report.errors.append(f"{path}: unexpected file in {posixpath.basename(directory)}/")
    return out


def validate_output(url: str, deep: bool = False, threads: int = 8,
                    storage_options: dict[str, Any] | None = None) -> ValidationReport:
    """Validate every table file under OUTPUT ``url`` (``storage_options``: fsspec options)."""
    fs, root = url_to_fs(url, **(storage_options or {}))
    root = root.rstrip("/")
    report = ValidationReport(url)
    if not fs.exists(root):
        report.errors.append(f"{url}: does not exist")
        return report
    provenance = None
    prov_path = posixpath.join(root, PROVENANCE_FILE)
    if fs.exists(prov_path):
        with fs.open(prov_path, "rb") as handle:
            provenance = json.loads(handle.read().decode()).get("provenance_key")
    else:
        report.warnings.append(f"{prov_path}: missing (not written by daq-label label?)")
    done = _ids(fs, posixpath.join(root, DONE_DIR), ".json", report)
    present: dict[str, set[str]] = {}
    for spec in TABLES:
        for vid in _ids(fs, posixpath.join(root, spec.name), ".parquet", report):
            present.setdefault(vid, set()).add(spec.name)
    for vid in sorted(set(present) - done):
        report.warnings.append(f"{vid}: tables without a done marker (run in progress or interrupted)")
    tmp = posixpath.join(root, TMP_DIR)
    if fs.exists(tmp) and fs.find(tmp):
        report.warnings.append(f"{tmp}: temporary files of an interrupted run (removed by the next run)")
    video_ids: Iterable[str] = sorted(set(present) | done)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        parts = pool.map(lambda vid: validate_video(fs, root, vid, present.get(vid, set()), vid in done,
                                                    provenance, deep), video_ids)
        for part in parts:
            report.merge(part)
            report.videos += 1
    if not present and not done:
        report.errors.append(f"{url}: holds no tables")
    return report

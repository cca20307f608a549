"""One video's labels as Arrow tables (``tracks``, ``track_summary``, ``videos``) and the
label-health figures that need no ground truth.

Health figures (``videos`` row), over the instances written for the video:

* ``num_tracks``: instances with at least one non-empty mask; ``num_tracker_tracks``: distinct
  tracker tracks among them;
* ``short_fragments``: instances present in fewer than ``min(5, frames_decoded)`` frames;
* ``appear_events`` / ``disappear_events``: absent-to-present / present-to-absent transitions,
  not counting presence at the first / last frame (a track that flickers adds one of each per gap);
* ``mean_score``: mean instance score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from daq_model.outputs import Instance
from pipeline.tracks import MaskRow
from schemas.tables import TRACK_SUMMARY_V1, TRACKS_V1, VIDEOS_V1

SHORT_FRAGMENT_FRAMES = 5


@dataclass
class Provenance:
    """Who labelled: the model and the code. ``key`` is in every row we write."""

    model_name: str
    checkpoint_sha256: str
    config_hash: str
    package_version: str
    key: str

    def as_columns(self) -> dict[str, str]:
        return {
            "model_name": self.model_name,
            "checkpoint_sha256": self.checkpoint_sha256,
            "config_hash": self.config_hash,
            "package_version": self.package_version,
            "provenance_key": self.key,
        }


@dataclass
class VideoLabels:
    """Everything written for one video."""

    video_id: str
    video_row: dict[str, Any]
    tracks: pa.Table
    track_summary: pa.Table
    #: CPU seconds the worker measured around this video (decode + model + masks; None: not
    #: measured). Recorded in the done marker, not in the tables.
    cpu_seconds: float | None = None

    @property
    def status(self) -> str:
        return str(self.video_row["status"])


@dataclass
class LabelledInstance:
    """An instance of the final result with its category and its non-empty mask rows."""

    instance: Instance
    category_id: int
    category_name: str
    rows: list[MaskRow]


def _timestamp(timestamps: Sequence[float], frame: int, fps: float | None) -> float:
    if 0 <= frame < len(timestamps):
        return float(timestamps[frame])
    return frame / fps if fps else float(frame)


def tracks_table(video_id: str, instances: Sequence[LabelledInstance], timestamps: Sequence[float],
                 fps: float | None, provenance_key: str, height: int, width: int) -> pa.Table:
    """Rows ordered by (track_id, frame_index); masks are ``height`` x ``width``."""
    cols: dict[str, list[Any]] = {name: [] for name in TRACKS_V1.names}
    size = [int(height), int(width)]
    for item in instances:
        inst = item.instance
        for row in sorted(item.rows, key=lambda r: r.frame_index):
            cols["track_id"].append(inst.instance_id)
            cols["tracker_track_id"].append(inst.track_id)
            cols["frame_index"].append(row.frame_index)
            cols["timestamp_s"].append(_timestamp(timestamps, row.frame_index, fps))
            cols["category_id"].append(item.category_id)
            cols["category_name"].append(item.category_name)
            cols["score"].append(inst.score)
            cols["frame_score"].append(row.frame_score)
            cols["tracker_valid"].append(row.tracker_valid)
            cols["bbox"].append(list(row.bbox))
            cols["area"].append(row.area)
            cols["mask"].append({"size": size, "counts": row.counts})
    n = len(cols["track_id"])
    cols["video_id"] = [video_id] * n
    cols["provenance_key"] = [provenance_key] * n
    return pa.table(cols, schema=TRACKS_V1) if n else TRACKS_V1.empty_table()


def summary_table(video_id: str, instances: Sequence[LabelledInstance], timestamps: Sequence[float],
                  fps: float | None, provenance_key: str) -> pa.Table:
    cols: dict[str, list[Any]] = {name: [] for name in TRACK_SUMMARY_V1.names}
    for item in instances:
        if not item.rows:
            continue
        inst = item.instance
        frames = sorted(r.frame_index for r in item.rows)
        scores = np.array([r.frame_score if r.frame_score is not None else inst.score
                           for r in item.rows], dtype=np.float64)
        areas = np.array([r.area for r in item.rows], dtype=np.float64)
        cols["video_id"].append(video_id)
        cols["track_id"].append(inst.instance_id)
        cols["tracker_track_id"].append(inst.track_id)
        cols["category_id"].append(item.category_id)
        cols["category_name"].append(item.category_name)
        cols["score"].append(inst.score)
        cols["first_frame"].append(frames[0])
        cols["last_frame"].append(frames[-1])
        cols["frames_present"].append(len(frames))
        cols["first_timestamp_s"].append(_timestamp(timestamps, frames[0], fps))
        cols["last_timestamp_s"].append(_timestamp(timestamps, frames[-1], fps))
        cols["mean_frame_score"].append(float(scores.mean()))
        cols["max_frame_score"].append(float(scores.max()))
        cols["mean_area"].append(float(areas.mean()))
        cols["provenance_key"].append(provenance_key)
    return pa.table(cols, schema=TRACK_SUMMARY_V1) if cols["video_id"] else TRACK_SUMMARY_V1.empty_table()


def health(instances: Sequence[LabelledInstance], frames_decoded: int) -> dict[str, Any]:
    present = [sorted({r.frame_index for r in item.rows}) for item in instances if item.rows]
    short_limit = min(SHORT_FRAGMENT_FRAMES, max(frames_decoded, 1))
    appear = disappear = 0
    for frames in present:
        arr = np.asarray(frames)
        gaps = int(np.count_nonzero(np.diff(arr) > 1)) if arr.size > 1 else 0
        appear += gaps + (1 if arr[0] > 0 else 0)
        disappear += gaps + (1 if arr[-1] < frames_decoded - 1 else 0)
    kept = [item for item in instances if item.rows]
    return {
        "num_tracks": len(kept),
        "num_tracker_tracks": len({item.instance.track_id for item in kept if item.instance.track_id >= 0}),
        "short_fragments": sum(1 for frames in present if len(frames) < short_limit),
        "appear_events": appear,
        "disappear_events": disappear,
        "mean_score": float(np.mean([item.instance.score for item in kept])) if kept else None,
    }


EMPTY_HEALTH = {"num_tracks": 0, "num_tracker_tracks": 0, "short_fragments": 0, "appear_events": 0,
                "disappear_events": 0, "mean_score": None}


def videos_table(row: dict[str, Any]) -> pa.Table:
    missing = [name for name in VIDEOS_V1.names if name not in row]
    if missing:
        raise KeyError(f"videos row lacks {missing}")
    return pa.table({name: [row[name]] for name in VIDEOS_V1.names}, schema=VIDEOS_V1)

"""The review queue: the K least confident videos or tracks of an OUTPUT, for people to correct
first (``daq-label review``).

Ranking keys (ties broken by ``video_id``, then ``track_id``), least confident first:

videos (the label-health figures of the ``videos`` table):
  * ``mean_score``: mean instance score, lowest first (a video without any instance first);
  * ``short_fragments``: share of instances present in fewer than min(5, frames) frames, highest first;
  * ``events``: appear + disappear events per instance (objects flickering in and out), highest first;
tracks (``track_summary``):
  * ``score``: the instance's video-level score, lowest first;
  * ``mean_frame_score``: the tracker's mean per-frame score, lowest first;
  * ``frames_present``: the shortest tracks first.

The filters apply first (e.g. ``--min-track-length 2`` leaves one-frame blips out of the queue);
failed videos have nothing to correct and are never queued.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from daq_label.filters import Selection

VIDEO_KEYS = ("mean_score", "short_fragments", "events")
TRACK_KEYS = ("score", "mean_frame_score", "frames_present")


def _video_priority(row: dict[str, Any], key: str) -> float:
    """Smaller = less confident = reviewed earlier."""
    tracks = row["num_tracks"] or 0
    if key == "mean_score":
        return -1.0 if row["mean_score"] is None else float(row["mean_score"])
    if key == "short_fragments":
        return -(row["short_fragments"] / tracks) if tracks else 0.0
    if key == "events":
        return -((row["appear_events"] + row["disappear_events"]) / tracks) if tracks else 0.0
    raise ValueError(f"unknown video ranking {key!r}; choose from {', '.join(VIDEO_KEYS)}")


def worst_videos(selection: Selection, k: int, key: str = "mean_score") -> tuple[Selection, list[dict]]:
    """The selection cut to its ``k`` least confident videos (all their selected tracks), and the
    queue rows (rank, video, the figure ranked by)."""
    if k < 1:
        raise ValueError("--worst must be >= 1")
    rows = sorted(selection.video_rows(), key=lambda r: (_video_priority(r, key), r["video_id"]))[:k]
    ids = [r["video_id"] for r in rows]
    videos = selection.videos.filter(pc.is_in(selection.videos["video_id"], pa.array(ids, pa.string())))
    summary = selection.track_summary.filter(pc.is_in(selection.track_summary["video_id"], pa.array(ids, pa.string())))
    queue = [{"rank": i + 1, "video_id": r["video_id"], "source_url": r["source_url"], "track_id": "",
              "ranked_by": key, "value": _video_priority(r, key) * (1 if key == "mean_score" else -1),
              "num_tracks": r["num_tracks"], "mean_score": r["mean_score"],
              "short_fragments": r["short_fragments"],
              "events": r["appear_events"] + r["disappear_events"]} for i, r in enumerate(rows)]
    return _narrowed(selection, videos, summary), queue


def worst_tracks(selection: Selection, k: int, key: str = "score") -> tuple[Selection, list[dict]]:
    """The selection cut to its ``k`` least confident tracks (and their videos), and the queue."""
    if k < 1:
        raise ValueError("--worst must be >= 1")
    if key not in TRACK_KEYS:
        raise ValueError(f"unknown track ranking {key!r}; choose from {', '.join(TRACK_KEYS)}")
    summary = selection.track_summary.sort_by([(key, "ascending"), ("video_id", "ascending"),
                                               ("track_id", "ascending")]).slice(0, k)
    ids = sorted(set(summary["video_id"].to_pylist()))
    videos = selection.videos.filter(pc.is_in(selection.videos["video_id"], pa.array(ids, pa.string())))
    sources = dict(zip(videos["video_id"].to_pylist(), videos["source_url"].to_pylist()))
    queue = [{"rank": i + 1, "video_id": r["video_id"], "source_url": sources[r["video_id"]],
              "track_id": r["track_id"], "ranked_by": key, "value": r[key],
              "category_name": r["category_name"], "score": r["score"],
              "mean_frame_score": r["mean_frame_score"], "frames_present": r["frames_present"]}
             for i, r in enumerate(summary.to_pylist())]
    return _narrowed(selection, videos, summary.sort_by([("video_id", "ascending"), ("track_id", "ascending")])), queue


def _narrowed(selection: Selection, videos: pa.Table, summary: pa.Table) -> Selection:
    return Selection(selection.output, selection.filter, videos.sort_by("video_id"), summary,
                     skipped_failed=selection.skipped_failed)


def queue_csv(queue: list[dict]) -> str:
    """The queue as CSV (the union of the rows' columns, in first-seen order)."""
    columns: list[str] = []
    for row in queue:
        columns.extend(c for c in row if c not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or ["rank"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(queue)
    return buffer.getvalue()


__all__ = ["TRACK_KEYS", "VIDEO_KEYS", "queue_csv", "worst_tracks", "worst_videos"]

"""Which tracks an export (or a review queue) takes from an OUTPUT: one filter, one place.

A track (one row of ``track_summary``) is kept when it passes every criterion given:

* ``min_score``: its video-level ``score`` >= the value;
* ``min_track_length``: present (non-empty mask) in at least this many frames (``frames_present``);
* ``min_mean_area``: its ``mean_area`` in pixels >= the value;
* ``categories``: its ``category_name`` or ``category_id`` is one of these;
* ``video_ids``: its video is one of these (the others are not exported at all).

Videos whose status is ``failed`` have no frames and are never exported; the other videos in
``video_ids`` (default: all) are exported even when no track of theirs passes (a video with no
labels is a label too). A name that matches nothing (a video id not in OUTPUT, a category the
model does not have) is an error, not an empty export.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from daq_label.output import Output, OutputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackFilter:
    min_score: float | None = None
    min_track_length: int | None = None
    min_mean_area: float | None = None
    categories: tuple[str, ...] = ()
    video_ids: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [f"{name}={value}" for name, value in (
            ("min_score", self.min_score), ("min_track_length", self.min_track_length),
            ("min_mean_area", self.min_mean_area)) if value is not None]
        if self.categories:
            parts.append("categories=" + ",".join(self.categories))
        if self.video_ids:
            parts.append(f"videos={len(self.video_ids)}")
        return " ".join(parts) or "no filter"

    def select(self, output: Output) -> "Selection":
        """The videos and tracks of ``output`` this filter keeps."""
        videos = output.videos(self.video_ids or None)
        failed = pc.equal(videos["status"], "failed")
        skipped = videos.filter(failed)["video_id"].to_pylist()
        if skipped:
            logger.info("%d failed video(s) have no frames and are not exported", len(skipped))
        videos = videos.filter(pc.invert(failed)).sort_by("video_id")
        summary = output.track_summary(videos["video_id"].to_pylist())
        keep = pa.array([True] * summary.num_rows, pa.bool_())
        if self.min_score is not None:
            keep = pc.and_(keep, pc.greater_equal(summary["score"], self.min_score))
        if self.min_track_length is not None:
            keep = pc.and_(keep, pc.greater_equal(summary["frames_present"], self.min_track_length))
        if self.min_mean_area is not None:
            keep = pc.and_(keep, pc.greater_equal(summary["mean_area"], self.min_mean_area))
        if self.categories:
            keep = pc.and_(keep, self._category_mask(output, summary))
        kept = summary.filter(keep).sort_by([("video_id", "ascending"), ("track_id", "ascending")])
        return Selection(output, self, videos, kept, skipped_failed=tuple(skipped))

    def _category_mask(self, output: Output, summary: pa.Table) -> pa.Array:
        names, ids = category_table(output, summary)
        wanted_ids: set[int] = set()
        for item in self.categories:
            if item in names:
                wanted_ids.add(names[item])
            elif item.isdigit() and int(item) in ids:
                wanted_ids.add(int(item))
            else:
                known = ", ".join(f"{n} ({i})" for n, i in sorted(names.items(), key=lambda kv: kv[1]))
                raise OutputError(f"category {item!r} is not one of the model's: {known}")
        return pc.is_in(summary["category_id"], pa.array(sorted(wanted_ids), pa.int32()))


def category_table(output: Output, summary: pa.Table | None = None) -> tuple[dict[str, int], set[int]]:
    """name -> category_id of the model's classes (from the run's provenance config; the names
    seen in ``track_summary`` where the config has none), and the set of ids."""
    names: dict[str, int] = {}
    try:
        config = output.provenance().get("config") or {}
        for index, name in enumerate(config.get("class_names") or ()):
            names[str(name)] = index + 1
    except (FileNotFoundError, ValueError):
        logger.warning("%s has no readable _provenance.json: categories from the tracks only", output.url)
    summary = output.track_summary(columns=["category_id", "category_name"]) if summary is None else summary
    for cid, name in zip(summary["category_id"].to_pylist(), summary["category_name"].to_pylist()):
        names.setdefault(name, cid)
    return names, set(names.values())


@dataclass
class Selection:
    """The kept videos (``videos`` rows, sorted by id) and tracks (``track_summary`` rows)."""

    output: Output
    filter: TrackFilter
    videos: pa.Table
    track_summary: pa.Table
    skipped_failed: tuple[str, ...] = ()
    _kept: dict[str, set[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for vid, tid in zip(self.track_summary["video_id"].to_pylist(),
                            self.track_summary["track_id"].to_pylist()):
            self._kept.setdefault(vid, set()).add(int(tid))

    @property
    def video_ids(self) -> list[str]:
        return self.videos["video_id"].to_pylist()

    def video_rows(self) -> list[dict[str, Any]]:
        return self.videos.to_pylist()

    def track_ids(self, video_id: str) -> list[int]:
        return sorted(self._kept.get(video_id, ()))

    def tracks(self, video_id: str) -> pa.Table:
        """The ``tracks`` rows of the kept tracks of one video, by (track_id, frame_index)."""
        table = self.output.tracks([video_id])
        kept = pa.array(self.track_ids(video_id), pa.int32())
        table = table.filter(pc.is_in(table["track_id"], kept))
        return table.sort_by([("track_id", "ascending"), ("frame_index", "ascending")])

    def categories(self) -> list[tuple[int, str]]:
        """(category_id, name) of every class of the model, by id."""
        names, _ = category_table(self.output)
        return sorted((cid, name) for name, cid in names.items())


# ----------------------------------------------------------------------------- command line


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters (a track is kept when it passes all given)")
    group.add_argument("--min-score", type=float, metavar="S", help="video-level score >= S")
    group.add_argument("--min-track-length", type=int, metavar="N",
                       help="present (non-empty mask) in >= N frames")
    group.add_argument("--min-mean-area", type=float, metavar="PX", help="mean mask area >= PX pixels")
    group.add_argument("--category", action="append", default=[], metavar="NAME|ID",
                       help="keep this category (repeatable, or comma-separated)")
    group.add_argument("--video", action="append", default=[], metavar="VIDEO_ID",
                       help="export this video only (repeatable, or comma-separated)")


def _split(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.strip() for item in items for p in item.split(",") if p.strip()))


def filter_from_args(args: argparse.Namespace) -> TrackFilter:
    if args.min_track_length is not None and args.min_track_length < 1:
        raise ValueError("--min-track-length must be >= 1")
    return TrackFilter(min_score=args.min_score, min_track_length=args.min_track_length,
                       min_mean_area=args.min_mean_area, categories=_split(args.category),
                       video_ids=_split(args.video))

"""The data behind the report page (daq_label/report.py collects it, daq_label/report_html.py
renders it): its settings, the rows it shows and the thumbnails as data URIs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from daq_label.overlay import OverlayStyle
from daq_label.review_queue import VIDEO_KEYS


@dataclass(frozen=True)
class ReportSettings:
    thumbnails: int = 12            # videos with thumbnails, least confident first
    frames_per_video: int = 3       # thumbnails per video, spread over its frames
    thumb_width: int = 240          # pixels
    max_rows: int = 1000            # rows of the per-video tables (the rest are counted)
    rank: str = "mean_score"        # review_queue ranking: mean_score | short_fragments | events
    style: OverlayStyle = field(default_factory=lambda: OverlayStyle(font_size=10))

    def check(self) -> None:
        if self.rank not in VIDEO_KEYS:
            raise ValueError(f"unknown ranking {self.rank!r}; choose from {', '.join(VIDEO_KEYS)}")
        if self.thumbnails < 0 or self.frames_per_video < 1 or self.thumb_width < 16 or self.max_rows < 1:
            raise ValueError("--thumbnails >= 0, --frames-per-video >= 1, --thumb-width >= 16 and "
                             "--max-rows >= 1 are needed")


@dataclass(frozen=True)
class Thumbnails:
    video_id: str
    images: tuple[tuple[int, str], ...]    # (frame index, data URI)
    error: str | None = None               # why frames could not be shown


@dataclass(frozen=True)
class ReportData:
    url: str
    generated_utc: str
    provenance: dict[str, Any] | None
    shipped_model: bool
    videos: list[dict[str, Any]]           # VIDEO_COLUMNS of every video
    tracks: list[dict[str, Any]]           # track_summary: video_id, track_id, score, frames_present
    queue: list[dict[str, Any]]            # review_queue rows, least confident first (not failed)
    thumbnails: dict[str, Thumbnails]
    settings: ReportSettings
    class_names: tuple[str, ...] = ()
    tool_version: str = ""                 # daq-label that wrote the page


__all__ = ["ReportData", "ReportSettings", "Thumbnails"]

"""``daq-label report``: one self-contained HTML page on a label job's OUTPUT.

    from daq_label import open_output
    from daq_label.report import ReportSettings, collect_report, write_report

    write_report(open_output("out/samples"), "report.html")

The page (rendered by daq_label/report_html.py) holds, in order: the model and its provenance
(with the synthetic-shapes notice when the bundled model labelled), counts by status and
error type, the label-health figures, histograms (track scores, track lengths, per-video mean
scores) as inline SVG, the least confident videos first (daq_label/review_queue.py's ranking)
with thumbnails of sampled frames with their mask overlays (daq_label/overlay.py; JPEG data URIs),
and every video's status and reason. Nothing is fetched when it opens: CSS inline, images as
data URIs, no script, and a Content-Security-Policy that forbids anything else.

Cost: the tables are read once; thumbnails decode each shown video up to its last sampled frame
(``ReportSettings.thumbnails`` videos, least confident first).
"""

from __future__ import annotations

import base64
import io
import logging
import posixpath
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import fsspec
from PIL import Image

from daq_label.filters import TrackFilter
from daq_label.output import Output
from daq_label.overlay import draw_overlay, evenly_spaced, labelled_frames, scaled
from daq_label.report_data import ReportData, ReportSettings, Thumbnails
from daq_label.report_html import render_report
from daq_label.review_queue import worst_videos
from pipeline.model_source import package_version

logger = logging.getLogger(__name__)

VIDEO_COLUMNS = ("video_id", "source_url", "status", "error_type", "error_message", "frames_decoded",
                 "frames_expected", "decode_errors", "width", "height", "fps", "duration_s",
                 "decode_seconds", "model_seconds", "num_tracks", "num_tracker_tracks",
                 "short_fragments", "appear_events", "disappear_events", "mean_score")
JPEG_QUALITY = 82


def is_shipped_model(provenance: dict[str, Any] | None) -> bool:
    """Whether OUTPUT was labelled by the model bundled with daq-label: the provenance says so
    (``model_origin``), or its checkpoint hash is the bundled checkpoint's."""
    if not provenance:
        return False
    if provenance.get("model_origin") == "shipped":
        return True
    from daq_model.checkpoint import file_sha256
    from pipeline.model_source import shipped_model

    try:
        shipped = shipped_model()
        return bool(shipped) and file_sha256(shipped[0]) == provenance.get("checkpoint_sha256")
    except Exception as exc:  # noqa: BLE001 - a broken install must not stop a report
        logger.debug("cannot hash the shipped checkpoint: %s", exc)
        return False


def _data_uri(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def video_thumbnails(output: Output, row: dict[str, Any], settings: ReportSettings,
                     storage_options: dict[str, Any] | None = None) -> Thumbnails:
    """Thumbnails with overlays of frames spread evenly over a labelled video. A source that
    cannot be decoded now (moved, deleted, no credentials) gives no images and the reason."""
    vid = row["video_id"]
    picks = evenly_spaced(int(row["frames_decoded"] or 0), settings.frames_per_video)
    images: list[tuple[int, str]] = []
    try:
        for image, frame in labelled_frames(output, vid, indices=picks, storage_options=storage_options):
            small, small_frame = scaled(image, frame, settings.thumb_width)
            images.append((frame.frame_index, _data_uri(Image.fromarray(draw_overlay(small, small_frame, settings.style)))))
    except Exception as exc:  # noqa: BLE001 - one video's frames must not stop the report
        logger.warning("report: frames of %s: %s", row["source_url"], exc)
        return Thumbnails(vid, tuple(images), f"{type(exc).__name__}: {exc}")
    if len(images) < len(picks):
        return Thumbnails(vid, tuple(images), f"{len(images)} of {len(picks)} sampled frames decode now")
    return Thumbnails(vid, tuple(images))


def collect_report(output: Output, settings: ReportSettings = ReportSettings(),
                   storage_options: dict[str, Any] | None = None) -> ReportData:
    """Everything the page shows, read from ``output`` (and the thumbnails' frames decoded)."""
    settings.check()
    try:
        provenance: dict[str, Any] | None = output.provenance()
    except (FileNotFoundError, ValueError) as exc:
        logger.warning("%s: no readable _provenance.json (%s)", output.url, exc)
        provenance = None
    videos = output.videos(columns=list(VIDEO_COLUMNS)).to_pylist()
    tracks = output.track_summary(columns=["video_id", "track_id", "category_name", "score",
                                           "frames_present"]).to_pylist()
    selection = TrackFilter().select(output)
    queue: list[dict[str, Any]] = []
    if selection.videos.num_rows:
        _, queue = worst_videos(selection, selection.videos.num_rows, settings.rank)
    by_id = {r["video_id"]: r for r in videos}
    thumbs = {q["video_id"]: video_thumbnails(output, by_id[q["video_id"]], settings, storage_options)
              for q in queue[: settings.thumbnails]}
    names = tuple((provenance or {}).get("config", {}).get("class_names") or ())
    return ReportData(url=output.url, generated_utc=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                      provenance=provenance, shipped_model=is_shipped_model(provenance), videos=videos,
                      tracks=tracks, queue=queue, thumbnails=thumbs, settings=settings, class_names=names,
                      tool_version=package_version())


@dataclass(frozen=True)
class ReportResult:
    dest: str
    bytes: int
    videos: int
    thumbnails: int


def write_report(output: Output, dest: str, settings: ReportSettings = ReportSettings(),
                 storage_options: dict[str, Any] | None = None) -> ReportResult:
    """Collect, render and write the page to ``dest`` (a local path or any fsspec URL)."""
    data = collect_report(output, settings, storage_options)
    page = render_report(data).encode("utf-8")
    fs, path = fsspec.core.url_to_fs(dest, **(storage_options or {}))
    parent = posixpath.dirname(path)
    if parent and "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        fs.makedirs(parent, exist_ok=True)  # object stores have no directories to make
    with fs.open(path, "wb") as handle:
        handle.write(page)
    shown = sum(len(t.images) for t in data.thumbnails.values())
    logger.info("report: %d video(s), %d thumbnail(s), %d bytes -> %s", len(data.videos), shown, len(page), dest)
    return ReportResult(dest, len(page), len(data.videos), shown)


__all__ = ["ReportData", "ReportResult", "ReportSettings", "Thumbnails", "collect_report",
           "is_shipped_model", "video_thumbnails", "write_report"]

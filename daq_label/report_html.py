"""The report's HTML (see daq_label/report.py): one page, CSS inline, images as data URIs, charts
as inline SVG, no script. Every text from OUTPUT (video URLs are user input, error messages quote
them) goes through :func:`html.escape`; attributes are quoted and escaped too."""

from __future__ import annotations

import html
import posixpath
from collections import Counter
from typing import Any, Iterable, Sequence

from daq_label.report_data import ReportData
from daq_label.report_charts import histogram_svg, integer_bins, score_bins

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
SYNTHETIC_NOTICE = (
    "These labels were made by the model bundled with daq-label, which was trained on synthetic "
    "shapes only (discs, squares, triangles, stars, rings and crosses on procedural backgrounds). "
    "On real footage it marks shape-like regions with those six names: the labels show the "
    "pipeline working, they are not useful labels. For real labels, label with an official "
    "DVIS-DAQ checkpoint (--checkpoint PATH --config PRESET) or a model trained on real data.")
STATUS_ORDER = {"failed": 0, "partial": 1, "ok": 2}

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:18px 24px 40px}
h1{font-size:24px;margin:8px 0 2px}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #d5dae1;padding-bottom:4px}
.sub{color:#5b6675;margin:0 0 12px;word-break:break-all}
nav a{margin-right:14px;color:#2a5db0;text-decoration:none}
.notice{background:#fff4d6;border:1px solid #e0b84c;border-radius:6px;padding:10px 14px;margin:12px 0}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0}
.card{background:#fff;border:1px solid #d5dae1;border-radius:6px;padding:8px 14px;min-width:96px}
.card b{display:block;font-size:20px}.card span{color:#5b6675;font-size:12px}
table.queue,table.videos{width:100%}td .name{font-weight:600}
table{border-collapse:collapse;background:#fff;margin:6px 0;font-size:13px}
th,td{border:1px solid #d5dae1;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.status{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;font-weight:600}
.status-ok{background:#d9f2df;color:#1c6b34}.status-partial{background:#fdecc8;color:#8a5a00}
.status-failed{background:#f9d6d5;color:#9b1c1c}
.url{color:#5b6675;font-size:11px;word-break:break-all}.reason{max-width:460px;word-break:break-word}
.thumbs{display:flex;gap:6px;flex-wrap:wrap}.thumbs figure{margin:0}.thumbs figcaption{font-size:11px;color:#5b6675}
.thumbs img{display:block;border:1px solid #c8ced6}
.charts{display:flex;flex-wrap:wrap;gap:14px}.chart{background:#fff;border:1px solid #d5dae1;border-radius:6px}
.chart-title{font-size:13px;font-weight:600}.tick{font-size:10px;fill:#5b6675}.axis-label{font-size:11px;fill:#1d2430}
.grid{stroke:#e3e7ec}.axis{stroke:#7a8594}.note{color:#5b6675;font-size:12px}
"""


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _size(row: dict[str, Any]) -> str:
    return "—" if row["width"] is None or row["height"] is None else f"{row['width']}×{row['height']}"


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _name(url: str) -> str:
    return posixpath.basename(url.rstrip("/")) or url


def _video_cell(row: dict[str, Any]) -> str:
    return (f'<span class="name" title="{e(row["source_url"])}">{e(_name(row["source_url"]))}</span>'
            f'<div class="url">{e(row["source_url"])}</div><div class="url">id {e(row["video_id"])}</div>')


def _status(status: str) -> str:
    return f'<span class="status status-{e(status)}">{e(status)}</span>'


def _reason(row: dict[str, Any]) -> str:
    if not row.get("error_type") and not row.get("error_message"):
        return ""
    return f'<b class="error-type">{e(row.get("error_type"))}</b>: <span class="error-message">{e(row.get("error_message"))}</span>'


def _table(headers: Sequence[str], rows: Iterable[str], cls: str) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    return f'<table class="{e(cls)}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _cards(items: Sequence[tuple[str, Any]]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><b>{e(v)}</b><span>{e(k)}</span></div>' for k, v in items) + "</div>"


def _model_section(data: ReportData) -> str:
    prov = data.provenance
    if prov is None:
        return '<p class="notice">This OUTPUT has no readable _provenance.json: the model that labelled it is unknown.</p>'
    rows = [("model", prov.get("model_name")), ("origin", "bundled with daq-label" if data.shipped_model
                                                 else prov.get("model_origin") or "given with --checkpoint"),
            ("checkpoint sha256", prov.get("checkpoint_sha256")), ("config hash", prov.get("config_hash")),
            ("daq-label version", prov.get("package_version")), ("provenance key", prov.get("provenance_key")),
            ("categories", ", ".join(data.class_names) or "—")]
    body = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    return f'<table class="model"><tbody>{body}</tbody></table>'


def _summary_section(data: ReportData) -> str:
    statuses = Counter(r["status"] for r in data.videos)
    errors = Counter(r["error_type"] for r in data.videos if r["error_type"])
    frames = sum(int(r["frames_decoded"] or 0) for r in data.videos)
    seconds = sum(float(r["duration_s"] or 0.0) for r in data.videos if r["status"] != "failed")
    cards = _cards([("videos", len(data.videos)), ("ok", statuses["ok"]), ("partial", statuses["partial"]),
                    ("failed", statuses["failed"]), ("frames labelled", frames), ("tracks", len(data.tracks)),
                    ("video duration", _duration(seconds))])
    status_rows = [f'<tr><td>{_status(s)}</td><td class="num" data-status="{e(s)}">{statuses[s]}</td></tr>'
                   for s in ("ok", "partial", "failed")]
    error_rows = [f'<tr><td>{e(t)}</td><td class="num">{n}</td></tr>' for t, n in sorted(errors.items())]
    errors_html = (_table(("error_type", "videos"), error_rows, "errors") if error_rows
                   else '<p class="note">No video has an error.</p>')
    return cards + '<div class="cards">' + _table(("status", "videos"), status_rows, "statuses") + errors_html + "</div>"


def _health_section(data: ReportData) -> str:
    labelled = [r for r in data.videos if r["status"] != "failed"]
    instances = sum(int(r["num_tracks"] or 0) for r in labelled)
    scores = [float(t["score"]) for t in data.tracks]
    per_video = [float(r["mean_score"]) for r in labelled if r["mean_score"] is not None]
    short = sum(int(r["short_fragments"] or 0) for r in labelled)
    events = sum(int(r["appear_events"] or 0) + int(r["disappear_events"] or 0) for r in labelled)
    rows = [("mean instance score", _num(sum(scores) / len(scores) if scores else None),
             "mean of every track's video-level score"),
            ("mean of per-video mean scores", _num(sum(per_video) / len(per_video) if per_video else None),
             "each labelled video counts once"),
            ("short-fragment share", _num(_share(short, instances)),
             f"{short} of {instances} instances present in fewer than min(5, frames) frames"),
            ("appear/disappear events per instance", _num(_share(events, instances)),
             f"{events} presence transitions (objects flickering in and out), first/last frame not counted"),
            ("labelled videos without any instance", str(sum(1 for r in labelled if not r["num_tracks"])), "")]
    body = "".join(f'<tr><th>{e(k)}</th><td class="num">{e(v)}</td><td class="note">{e(n)}</td></tr>'
                   for k, v, n in rows)
    return f'<table class="health"><tbody>{body}</tbody></table>'


def _charts_section(data: ReportData) -> str:
    scores = [float(t["score"]) for t in data.tracks]
    lengths = [int(t["frames_present"]) for t in data.tracks]
    per_video = [float(r["mean_score"]) for r in data.videos if r["mean_score"] is not None]
    charts = [histogram_svg(score_bins(scores), "Track scores", "score", "tracks"),
              histogram_svg(integer_bins(lengths), "Track lengths", "frames present", "tracks"),
              histogram_svg(score_bins(per_video, 0.1), "Per-video mean score", "mean score", "videos")]
    return '<div class="charts">' + "".join(charts) + "</div>"


def _thumbs_cell(data: ReportData, video_id: str) -> str:
    thumbs = data.thumbnails.get(video_id)
    if thumbs is None:
        return f'<span class="note">not shown (thumbnails for the first {data.settings.thumbnails} only)</span>'
    figures = "".join(f'<figure><img src="{uri}" alt="frame {i} with mask overlays">'
                      f"<figcaption>frame {i}</figcaption></figure>" for i, uri in thumbs.images)
    error = f'<div class="note thumb-error">{e(thumbs.error)}</div>' if thumbs.error else ""
    return f'<div class="thumbs">{figures}</div>{error}'


def _queue_section(data: ReportData) -> str:
    if not data.queue:
        return '<p class="note">No labelled video (every video failed).</p>'
    by_id = {r["video_id"]: r for r in data.videos}
    rows = []
    for q in data.queue[: data.settings.max_rows]:
        row = by_id[q["video_id"]]
        tracks = row["num_tracks"] or 0
        events = (row["appear_events"] or 0) + (row["disappear_events"] or 0)
        rows.append(f'<tr class="queue-row" data-video-id="{e(q["video_id"])}" '
                    f'data-mean-score="{e(_num(row["mean_score"], 6))}"><td class="num">{q["rank"]}</td>'
                    f'<td>{_video_cell(row)}<div>{_status(row["status"])} {_reason(row)}</div></td>'
                    f'<td class="num">{_num(row["mean_score"])}</td>'
                    f'<td class="num">{_num(_share(row["short_fragments"] or 0, tracks))}</td>'
                    f'<td class="num">{_num(_share(events, tracks))}</td><td class="num">{tracks}</td>'
                    f'<td class="num">{row["frames_decoded"]}</td></tr>'
                    f'<tr class="thumb-row"><td></td><td colspan="6">{_thumbs_cell(data, q["video_id"])}</td></tr>')
    more = len(data.queue) - data.settings.max_rows
    note = f'<p class="note">{more} more video(s) not listed (--max-rows).</p>' if more > 0 else ""
    ranked = {"mean_score": "mean instance score, lowest first",
              "short_fragments": "share of short fragments, highest first",
              "events": "appear/disappear events per instance, highest first"}[data.settings.rank]
    return (f'<p class="note">Ranked by {e(ranked)} (as daq-label review); failed videos are listed '
            f'under Videos. Thumbnails: frames spread over each video with their mask overlays.</p>'
            + _table(("#", "video", "mean score", "short-fragment share", "events per instance", "tracks",
                      "frames"), rows, "queue") + note)


def _videos_section(data: ReportData) -> str:
    ordered = sorted(data.videos, key=lambda r: (STATUS_ORDER.get(r["status"], 3), r["source_url"]))
    rows = [f'<tr class="video-row status-row-{e(r["status"])}" data-video-id="{e(r["video_id"])}">'
            f'<td>{_video_cell(r)}</td><td>{_status(r["status"])}</td><td class="reason">{_reason(r)}</td>'
            f'<td class="num">{r["frames_decoded"]} / {_num(r["frames_expected"])}</td>'
            f'<td class="num">{_num(r["num_tracks"])}</td><td class="num">{_num(r["mean_score"])}</td>'
            f'<td class="num">{_size(r)}</td>'
            f'<td class="num">{_num(r["decode_seconds"], 2)} / {_num(r["model_seconds"], 2)}</td></tr>'
            for r in ordered[: data.settings.max_rows]]
    more = len(ordered) - data.settings.max_rows
    note = f'<p class="note">{more} more video(s) not listed (--max-rows).</p>' if more > 0 else ""
    return ('<p class="note">Failed videos first, then partial, then ok.</p>'
            + _table(("video", "status", "reason (error_type: error_message)", "frames decoded / expected",
                      "tracks", "mean score", "size", "decode / model s"), rows, "videos") + note)


SECTIONS = (("model", "Model"), ("summary", "Summary"), ("health", "Label health"),
            ("histograms", "Histograms"), ("least-confident", "Least confident videos first"),
            ("videos", "Videos"))


def render_report(data: ReportData) -> str:
    """The whole page as one string."""
    builders = {"model": _model_section, "summary": _summary_section, "health": _health_section,
                "histograms": _charts_section, "least-confident": _queue_section, "videos": _videos_section}
    nav = "".join(f'<a href="#{key}">{e(title)}</a>' for key, title in SECTIONS)
    notice = (f'<p class="notice" id="synthetic-model-notice"><b>About the model.</b> {e(SYNTHETIC_NOTICE)}</p>'
              if data.shipped_model else "")
    sections = "".join(f'<section id="{key}"><h2>{e(title)}</h2>{builders[key](data)}</section>'
                       for key, title in SECTIONS)
    version = data.tool_version
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{e(CSP)}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>daq-label report: {e(data.url)}</title><style>{STYLE}</style></head>"
            f'<body><main><h1>daq-label report</h1><p class="sub">{e(data.url)} · generated '
            f"{e(data.generated_utc)}</p><nav>{nav}</nav>{notice}{sections}"
            f'<p class="note">Written by daq-label {e(version)} (daq-label report).</p></main></body></html>\n')


__all__ = ["CSP", "SECTIONS", "SYNTHETIC_NOTICE", "render_report"]

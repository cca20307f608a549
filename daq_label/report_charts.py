"""Histograms as inline SVG for the HTML report (no chart library, no script): bars with a
tooltip each (``<title>``), axes, tick labels and counts. Every text is escaped."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

WIDTH, HEIGHT = 460, 210
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 44, 12, 26, 40
BAR_COLOUR = "#3b7dd8"


@dataclass(frozen=True)
class Bins:
    edges: tuple[float, ...]     # len(counts) + 1 ascending edges
    counts: tuple[int, ...]
    integer: bool = False        # integer-valued data: bins are [lo, hi) of whole numbers


def score_bins(values: Sequence[float], width: float = 0.05) -> Bins:
    """Bins of ``width`` over [0, 1] (scores); a value of 1.0 falls in the last bin."""
    n = round(1.0 / width)
    edges = np.linspace(0.0, 1.0, n + 1)
    counts, _ = np.histogram(np.clip(np.asarray(values, float), 0.0, 1.0), bins=edges)
    return Bins(tuple(float(e) for e in edges), tuple(int(c) for c in counts))


def integer_bins(values: Sequence[int], max_bins: int = 24) -> Bins:
    """Bins of whole numbers from 1 (or the minimum) to the maximum: one per value while they fit
    in ``max_bins``, else equal widths rounded up to a whole number."""
    data = np.asarray(values, int)
    lo = int(min(1, data.min())) if data.size else 1
    hi = int(data.max()) if data.size else 1
    step = max(1, math.ceil((hi - lo + 1) / max_bins))
    edges = np.arange(lo, hi + step + 1, step)
    counts, _ = np.histogram(data, bins=edges)
    return Bins(tuple(float(e) for e in edges), tuple(int(c) for c in counts), integer=True)


def _bin_label(bins: Bins, i: int) -> str:
    lo, hi = bins.edges[i], bins.edges[i + 1]
    if bins.integer:
        return f"{int(lo)}" if hi - lo == 1 else f"{int(lo)}–{int(hi) - 1}"
    return f"{lo:.2f}–{hi:.2f}"


def _tick(value: float, integer: bool) -> str:
    return f"{int(value)}" if integer or value in (0.0, 1.0) else f"{value:.2f}"


def histogram_svg(bins: Bins, title: str, x_label: str, unit: str) -> str:
    """An ``<svg role="img">`` histogram; ``unit`` names what is counted (e.g. ``tracks``)."""
    e = html.escape
    n = len(bins.counts)
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    top = max(bins.counts) if bins.counts and max(bins.counts) > 0 else 1
    total = sum(bins.counts)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{WIDTH}" '
             f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" aria-label="{e(title, quote=True)}">',
             f'<text x="{WIDTH / 2:.0f}" y="16" text-anchor="middle" class="chart-title">{e(title)}</text>']
    # y axis: 0, half, top
    for frac in (0.0, 0.5, 1.0):
        y = MARGIN_TOP + plot_h * (1 - frac)
        value = top * frac
        label = f"{value:.0f}" if value == int(value) else f"{value:.1f}"
        parts.append(f'<line x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{MARGIN_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" class="tick">{label}</text>')
    bar_w = plot_w / max(n, 1)
    for i, count in enumerate(bins.counts):
        h = plot_h * count / top
        x = MARGIN_LEFT + i * bar_w
        y = MARGIN_TOP + plot_h - h
        tip = f"{x_label} {_bin_label(bins, i)}: {count} {unit}"
        parts.append(f'<rect class="bar" x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 0.5):.1f}" '
                     f'height="{h:.1f}" fill="{BAR_COLOUR}" data-count="{count}"><title>{e(tip)}</title></rect>')
    # x ticks: whole-number bins are labelled at their bar, others at the edges
    if bins.integer:
        places = [(MARGIN_LEFT + (i + 0.5) * bar_w, _bin_label(bins, i))
                  for i in sorted({0, n - 1} | {round((n - 1) * k / 4) for k in range(1, 4)}) if n]
    else:
        places = [(MARGIN_LEFT + i * bar_w, _tick(bins.edges[i], False))
                  for i in sorted({0, n} | {round(n * k / 4) for k in range(1, 4)})]
    for x, label in places:
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - MARGIN_BOTTOM + 14}" text-anchor="middle" '
                     f'class="tick">{e(label)}</text>')
    parts.append(f'<line x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{MARGIN_TOP + plot_h}" '
                 f'y2="{MARGIN_TOP + plot_h}" class="axis"/>')
    parts.append(f'<text x="{MARGIN_LEFT + plot_w / 2:.0f}" y="{HEIGHT - 6}" text-anchor="middle" '
                 f'class="axis-label">{e(x_label)} ({total} {e(unit)})</text>')
    parts.append("</svg>")
    return "".join(parts)


__all__ = ["Bins", "histogram_svg", "integer_bins", "score_bins"]

"""Polygons from binary masks, for formats without mask tracks (CVAT for video).

:func:`mask_polygons` traces the outline of each 4-connected part of a mask along pixel edges
(vertices on pixel corners, so each polygon encloses exactly its part's pixels with the holes
filled), largest part first, and drops the vertices in the middle of straight runs. Holes are
lost (a CVAT polygon has none): :class:`PolygonStats` counts the pixels filled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

_FOUR = ndimage.generate_binary_structure(2, 1)


@dataclass
class PolygonStats:
    masks: int = 0
    parts: int = 0                # polygons written (a mask in several parts gives several)
    pixels_holes_filled: int = 0  # pixels inside the polygons that the mask does not have


def _boundary_loops(part: np.ndarray) -> list[list[tuple[int, int]]]:
    """Closed loops of directed pixel edges around ``part`` (clockwise on screen: inside on the
    right), as lists of (x, y) corners."""
    padded = np.pad(part, 1)
    inside = padded[1:-1, 1:-1]
    nexts: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def add(rows: np.ndarray, cols: np.ndarray, start: tuple[int, int], end: tuple[int, int]) -> None:
        for r, c in zip(rows.tolist(), cols.tolist()):
            nexts.setdefault((c + start[0], r + start[1]), []).append((c + end[0], r + end[1]))

    add(*np.nonzero(inside & ~padded[:-2, 1:-1]), (0, 0), (1, 0))   # top edge, going right
    add(*np.nonzero(inside & ~padded[1:-1, 2:]), (1, 0), (1, 1))    # right edge, going down
    add(*np.nonzero(inside & ~padded[2:, 1:-1]), (1, 1), (0, 1))    # bottom edge, going left
    add(*np.nonzero(inside & ~padded[1:-1, :-2]), (0, 1), (0, 0))   # left edge, going up
    loops = []
    while nexts:
        start = min(nexts)
        loop = [start]
        point, previous = start, None
        while True:
            options = nexts[point]
            if len(options) > 1 and previous is not None:  # a pinch corner: turn left, stay outside
                dx, dy = point[0] - previous[0], point[1] - previous[1]
                left = (point[0] + dy, point[1] - dx)
                choice = left if left in options else options[0]
            else:
                choice = options[0]
            options.remove(choice)
            if not options:
                del nexts[point]
            previous, point = point, choice
            if point == start:
                break
            loop.append(point)
        loops.append(loop)
    return loops


def _signed_area(loop: list[tuple[int, int]]) -> float:
    xs = np.array([p[0] for p in loop], dtype=np.float64)
    ys = np.array([p[1] for p in loop], dtype=np.float64)
    return 0.5 * float(np.dot(xs, np.roll(ys, -1)) - np.dot(np.roll(xs, -1), ys))


def _drop_straight(loop: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    n = len(loop)
    for i, p in enumerate(loop):
        a, b = loop[i - 1], loop[(i + 1) % n]
        if (p[0] - a[0]) * (b[1] - p[1]) != (p[1] - a[1]) * (b[0] - p[0]):
            out.append(p)
    return out


def _outline(part: np.ndarray) -> list[float]:
    outer = max(_boundary_loops(part), key=_signed_area)
    return [float(v) for point in _drop_straight(outer) for v in point]


def mask_polygons(mask: np.ndarray, stats: PolygonStats | None = None) -> list[list[float]]:
    """Flat [x0, y0, x1, y1, ...] outlines of the mask's parts, largest first ([] if empty)."""
    labels, count = ndimage.label(mask, structure=_FOUR)
    if count == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    boxes = ndimage.find_objects(labels)
    outlines = []
    for index in np.argsort(-sizes, kind="stable"):
        rows, cols = boxes[index]  # trace within the part's box, then shift to frame coordinates
        part = ndimage.binary_fill_holes(labels[rows, cols] == index + 1, structure=_FOUR)
        if stats is not None:
            stats.pixels_holes_filled += int(part.sum() - sizes[index])
        outline = _outline(part)
        outline[0::2] = [x + cols.start for x in outline[0::2]]
        outline[1::2] = [y + rows.start for y in outline[1::2]]
        outlines.append(outline)
    if stats is not None:
        stats.masks += 1
        stats.parts += count
    return outlines

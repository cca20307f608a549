"""Shapes and textures of the synthetic video generator, and drawing one object into a frame.

A shape is a predicate on object coordinates ``(u, v)`` measured in units of the object's radius
(the shape fits in the unit disc; ``v`` points down as image rows do). Shapes are deliberately
distinct in outline (holes, corners, arms). Texture kind, saturation and brightness are drawn
independently of the class; hues are too unless the generator gives each class a colour family
(``SynthConfig.class_hue``), as real categories have typical appearances.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

Predicate = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ShapeSpec:
    name: str
    inside: Predicate
    # radius of the largest disc centred on the object that the shape covers (0 if it has a hole);
    # an object can hide another completely only if its inradius exceeds the other's radius.
    inradius: float


def _star_shaped_polygon(vertices: np.ndarray) -> Predicate:
    """Inside test of a polygon that is star-shaped about the origin (vertices by angle, CCW)."""
    ang = np.arctan2(vertices[:, 1], vertices[:, 0]) % (2 * np.pi)
    order = np.argsort(ang)
    ang, pts = ang[order], vertices[order]
    nxt = np.roll(pts, -1, axis=0)
    edge = nxt - pts
    # ray t*d meets edge k where t = cross(P_k, e_k) / cross(d, e_k)
    num = pts[:, 0] * edge[:, 1] - pts[:, 1] * edge[:, 0]

    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        a = np.arctan2(v, u) % (2 * np.pi)
        k = (np.searchsorted(ang, a, side="right") - 1) % len(ang)
        den = np.cos(a) * edge[k, 1] - np.sin(a) * edge[k, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = num[k] / den
        return (u * u + v * v) <= np.where(den > 0, t, np.inf) ** 2

    return inside


def _regular(n: int, radius: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    outer, inn = _regular(points), _regular(points, inner, -np.pi / 2 + np.pi / points)
    return np.stack([outer, inn], axis=1).reshape(-1, 2)


def _cross(half_width: float = 0.3, arm: float = 0.95) -> np.ndarray:
    w, L = half_width, arm
    return np.array([(L, w), (w, w), (w, L), (-w, L), (-w, w), (-L, w),
                     (-L, -w), (-w, -w), (-w, -L), (w, -L), (w, -w), (L, -w)], dtype=np.float64)


def _disc(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 1.0


def _ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.58 ** 2)


def _crescent(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u * u + v * v <= 1.0) & ((u - 0.5) ** 2 + v * v >= 0.8 ** 2)


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # classic algebraic heart (x^2 + y^2 - 1)^3 <= x^2 y^3, scaled and shifted into the unit disc
    x, y = u * 1.34, -v * 1.34 + 0.12
    return (x * x + y * y - 1.0) ** 3 <= x * x * y ** 3


SHAPES: dict[str, ShapeSpec] = {s.name: s for s in (
    ShapeSpec("disc", _disc, 1.0),
    ShapeSpec("square", _star_shaped_polygon(_regular(4, 1.0, np.pi / 4)), np.sqrt(0.5)),
    ShapeSpec("triangle", _star_shaped_polygon(_regular(3)), 0.5),
    ShapeSpec("star", _star_shaped_polygon(_star()), 0.45 * np.cos(np.pi / 5)),
    ShapeSpec("ring", _ring, 0.0),
    ShapeSpec("cross", _star_shaped_polygon(_cross()), 0.3),
    ShapeSpec("crescent", _crescent, 0.0),
    ShapeSpec("heart", _heart, 0.0),
)}

TEXTURE_KINDS: tuple[str, ...] = ("solid", "stripes", "checker", "gradient", "noise")


@dataclass(frozen=True)
class Texture:
    """Pattern painted in object coordinates, so it moves and turns with the object."""

    kind: str
    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    frequency: float
    angle: float
    noise: np.ndarray | None = None  # small [n, n] field in [0, 1] for kind == "noise"

    def shade(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """RGB uint8 colours [N, 3] at object coordinates u, v (1-D arrays)."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        if self.kind == "solid":
            w = np.zeros_like(u)
        elif self.kind == "stripes":
            w = (np.sin(np.pi * self.frequency * (u * c + v * s)) > 0).astype(np.float64)
        elif self.kind == "checker":
            w = ((np.floor(u * self.frequency) + np.floor(v * self.frequency)) % 2).astype(np.float64)
        elif self.kind == "gradient":
            w = np.clip((u * c + v * s + 1.0) / 2.0, 0.0, 1.0)
        elif self.kind == "noise" and self.noise is not None:
            n = self.noise.shape[0] - 1
            iu = np.clip(np.rint((u + 1) / 2 * n), 0, n).astype(np.intp)
            iv = np.clip(np.rint((v + 1) / 2 * n), 0, n).astype(np.intp)
            w = self.noise[iv, iu]
        else:
            raise ValueError(f"unknown texture kind {self.kind!r}")
        a, b = np.asarray(self.color_a), np.asarray(self.color_b)
        return np.clip(np.rint(a + (b - a) * w[:, None]), 0, 255).astype(np.uint8)


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (255 * r, 255 * g, 255 * b)


def random_texture(rng: np.random.Generator, hue_centre: float | None = None,
                   hue_width: float = 0.0) -> Texture:
    """A random pattern of two random colours. With ``hue_centre``, both colours' hues are drawn
    from ``hue_centre +- hue_width / 2`` (a class's colour family) instead of the whole circle
    (saturation and brightness stay random, so patterns stay visible); the random draws are the
    same either way, so only the hues change."""
    kind = TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))]
    h = float(rng.random())
    if hue_centre is not None:
        h = (hue_centre + (h - 0.5) * hue_width) % 1.0
    color_a = _hsv_to_rgb(h, float(rng.uniform(0.45, 1.0)), float(rng.uniform(0.45, 1.0)))
    offset = float(rng.uniform(0.15, 0.85))
    h2 = (h + offset) % 1.0
    if hue_centre is not None:  # the second colour from the same family
        h2 = (hue_centre + ((offset - 0.15) / 0.7 - 0.5) * hue_width) % 1.0
    color_b = _hsv_to_rgb(h2, float(rng.uniform(0.2, 1.0)), float(rng.uniform(0.2, 1.0)))
    noise = rng.random((6, 6)) if kind == "noise" else None
    return Texture(kind, color_a, color_b, float(rng.uniform(1.5, 4.0)),
                   float(rng.uniform(0, np.pi)), noise)


def draw_object(canvas: np.ndarray, labels: np.ndarray, label: int, shape: ShapeSpec,
                texture: Texture, cx: float, cy: float, radius: float, theta: float) -> int:
    """Paint one object over ``canvas`` [H, W, 3] and write ``label`` into ``labels`` [H, W].

    Pixel (row y, column x) is covered when its centre (x + 0.5, y + 0.5) is inside the shape.
    Returns the number of pixels covered (the object's unoccluded area inside the frame).
    """
    H, W = labels.shape
    x0, x1 = max(int(np.floor(cx - radius)), 0), min(int(np.ceil(cx + radius)) + 1, W)
    y0, y1 = max(int(np.floor(cy - radius)), 0), min(int(np.ceil(cy + radius)) + 1, H)
    if x0 >= x1 or y0 >= y1 or radius <= 0:
        return 0
    dx = (np.arange(x0, x1) + 0.5 - cx)[None, :]
    dy = (np.arange(y0, y1) + 0.5 - cy)[:, None]
    c, s = np.cos(theta), np.sin(theta)
    u = (dx * c + dy * s) / radius
    v = (-dx * s + dy * c) / radius
    inside = shape.inside(u, v)
    n = int(inside.sum())
    if n:
        canvas[y0:y1, x0:x1][inside] = texture.shade(u[inside], v[inside])
        labels[y0:y1, x0:x1][inside] = label
    return n

"""Scripting the objects of one synthetic video: who is where, when, in front of whom.

Each object gets a *life*: the frames ``[start, end)`` in which it exists, and optional gaps
``[g0, g1)`` in which it is out of sight. An object that starts late enters across a frame
border; one that ends early leaves across a border; a gap is either a trip out of the frame
(``border``) or a full occlusion by a larger object drawn in front of it (``occlusion``), where
both objects are pinned to the same point for the gap's frames. Between pinned points objects
follow a random piecewise-linear path with a speed limit, spin and breathe (radius +-zoom).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from daq_train.synthetic_config import SynthConfig
from daq_train.synthetic_shapes import SHAPES, Texture, random_texture

_OCCLUSION_MARGIN_PX = 1.0


@dataclass
class ObjectPlan:
    category: str
    texture: Texture
    z: int  # drawing order: higher is drawn later, i.e. in front
    radius: float  # base radius in pixels
    start: int  # first frame of its life
    end: int  # one past its last frame
    gaps: list[tuple[int, int, str]] = field(default_factory=list)  # (g0, g1, "border"|"occlusion")
    pins: dict[int, tuple[float, float]] = field(default_factory=dict)  # frame -> (x, y)
    holds: list[tuple[int, int]] = field(default_factory=list)  # [f0, f1): stay at the pinned point
    waypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # rows (frame, x, y)
    theta0: float = 0.0
    spin: float = 0.0
    zoom: float = 0.0
    zoom_period: float = 1.0
    zoom_phase: float = 0.0
    role: str = "scripted"  # or "occluder": added only to hide another object, no events of its own
    occludes: int = 0  # how many gaps of other objects it hides

    def drawn(self, t: int) -> bool:
        """Whether the object is painted at frame t (it may still be hidden behind others)."""
        if not self.start <= t < self.end:
            return False
        return not any(g0 <= t < g1 and cause == "border" for g0, g1, cause in self.gaps)

    def radius_at(self, t: int) -> float:
        return self.radius * (1.0 + self.zoom * np.sin(2 * np.pi * t / self.zoom_period + self.zoom_phase))


def object_pose(obj: ObjectPlan, t: int) -> tuple[float, float, float, float] | None:
    """(cx, cy, radius, theta) at frame t, or None where the object is not drawn."""
    if not obj.drawn(t):
        return None
    f, x, y = obj.waypoints[:, 0], obj.waypoints[:, 1], obj.waypoints[:, 2]
    return (float(np.interp(t, f, x)), float(np.interp(t, f, y)), obj.radius_at(t),
            obj.theta0 + obj.spin * t)


def _sample_life(config: SynthConfig, rng: np.random.Generator) -> tuple[int, int, int | None]:
    """(start, end, gap length or None) honouring the configured event probabilities."""
    T = config.frames
    late = rng.random() < config.p_late_entry
    leaves = rng.random() < config.p_early_exit
    gap = None
    if rng.random() < config.p_reappear:
        longest = T - 2 - 2 * config.min_visible_frames  # room for late entry and early exit
        gap = int(rng.integers(config.gap_frames[0], min(config.gap_frames[1], longest) + 1))
    vis = config.min_visible_frames
    need = gap + 2 * vis if gap is not None else vis  # life long enough to be seen around a gap
    start = int(rng.integers(1, T - need - int(leaves) + 1)) if late else 0
    end = int(rng.integers(start + need, T)) if leaves else T
    return start, end, gap


def _border_point(config: SynthConfig, rng: np.random.Generator, radius: float) -> tuple[float, float]:
    """A centre just across a random frame border: the object shows only a part of itself."""
    W, H = config.width, config.height
    side = int(rng.integers(4))
    depth = float(rng.uniform(0.0, 0.5)) * radius
    along = float(rng.uniform(0.15, 0.85))
    if side == 0:
        return (-depth, along * H)
    if side == 1:
        return (W + depth, along * H)
    if side == 2:
        return (along * W, -depth)
    return (along * W, H + depth)


def _busy(obj: ObjectPlan, lo: int, hi: int) -> bool:
    return any(lo <= f < hi for f in obj.pins)


def _is_occludee(obj: ObjectPlan) -> bool:
    return any(cause == "occlusion" for _, _, cause in obj.gaps)


def _try_occlusion(objects: list[ObjectPlan], i: int, g0: int, g1: int,
                   planned_gaps: dict[int, tuple[int, int]], config: SynthConfig,
                   rng: np.random.Generator) -> bool:
    """Hide object i during [g0, g1) behind an object drawn in front of it.

    The occluder's inscribed disc must cover the occludee's outline at every moment (both
    breathe by +-zoom). Earlier pairings stay valid: an object that already hides another is
    never shrunk, one already hidden by another is never grown nor brought forward.
    """
    occludee = objects[i]
    side = min(config.height, config.width)
    r_min, r_cap = config.radius[0] * side, 0.35 * side
    # the occludee may shrink (to no less than the smallest configured radius) unless it hides someone
    r_i = occludee.radius if occludee.occludes else min(occludee.radius, r_min)
    order = [int(j) for j in rng.permutation(len(objects)) if j != i]
    # first pass: objects already in front and large enough; second: bring forward and grow
    candidates = [(j, True) for j in order] + [(j, False) for j in order]
    for j, strict in candidates:
        occ = objects[j]
        inr = SHAPES[occ.category].inradius
        a, b = planned_gaps.get(j, (0, 0))
        if (inr <= 0 or not (occ.start <= g0 - 1 and g1 + 1 <= occ.end)
                or (a < g1 + 1 and g0 - 1 < b) or _busy(occ, g0 - 2, g1 + 2)):
            continue
        hidden = _is_occludee(occ)
        if occ.z < occludee.z and (hidden or strict):
            continue  # coming forward would put it in front of its own occluder
        # occluder radius needed at the worst moment of both breathing cycles
        need = (r_i * (1 + occludee.zoom) + _OCCLUSION_MARGIN_PX) / (inr * (1 - occ.zoom))
        if need > occ.radius and (hidden or strict or need > r_cap):
            continue
        # largest occludee radius this occluder (possibly grown) can hide
        occ.radius = max(occ.radius, need)
        limit = (occ.radius * inr * (1 - occ.zoom) - _OCCLUSION_MARGIN_PX) / (1 + occludee.zoom)
        if not occludee.occludes:
            occludee.radius = min(occludee.radius, limit)
        if occ.z < occludee.z:
            occ.z = max(o.z for o in objects) + 1
        occ.occludes += 1
        p = (float(rng.uniform(0.15, 0.85)) * config.width, float(rng.uniform(0.15, 0.85)) * config.height)
        for obj in (occludee, occ):
            obj.pins[g0] = p
            obj.pins[g1 - 1] = p
            obj.holds.append((g0, g1))
        occludee.gaps.append((g0, g1, "occlusion"))
        return True
    return False


def _waypoints(obj: ObjectPlan, config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Piecewise-linear path through the pins, random (speed-limited) between them."""
    W, H = config.width, config.height
    vmax = config.max_speed * min(W, H)
    lo = np.array([0.3 * obj.radius, 0.3 * obj.radius])
    hi = np.array([W - 0.3 * obj.radius, H - 0.3 * obj.radius])
    pins = sorted(obj.pins.items())
    frames = sorted(set(range(obj.start, obj.end, int(rng.integers(4, 9)))) | {obj.end - 1})
    frames = [f for f in frames if all(abs(f - p) > 1 for p, _ in pins)
              and not any(h0 - 1 <= f <= h1 for h0, h1 in obj.holds)]
    rows: list[tuple[int, float, float]] = []
    prev_f, prev = None, None
    for f in sorted(set(frames) | {p for p, _ in pins}):
        nxt = next(((pf, np.array(pp)) for pf, pp in pins if pf > f), None)
        target = np.array([rng.uniform(lo[0], hi[0]), rng.uniform(lo[1], hi[1])])
        if f in obj.pins:
            pos = np.array(obj.pins[f])
        elif prev is None:  # first point: anywhere, but within reach of the next pin
            pos = target
            if nxt is not None:
                d = pos - nxt[1]
                pos = nxt[1] + d * min(1.0, vmax * (nxt[0] - f) / max(float(np.linalg.norm(d)), 1e-9))
        else:
            reach = vmax * (f - prev_f)
            if nxt is not None:  # on the way to the next pin, with some wandering
                on_way = prev + (nxt[1] - prev) * (f - prev_f) / (nxt[0] - prev_f)
                target = on_way + (target - on_way) * min(1.0, 0.5 * reach / max(
                    float(np.linalg.norm(target - on_way)), 1e-9))
            move = target - prev
            pos = np.clip(prev + move * min(1.0, reach / max(float(np.linalg.norm(move)), 1e-9)), lo, hi)
        rows.append((f, float(pos[0]), float(pos[1])))
        prev_f, prev = f, pos
    return np.array(rows, dtype=np.float64)


def _new_object(config: SynthConfig, rng: np.random.Generator, category: str, start: int,
                end: int, z: int) -> ObjectPlan:
    side = min(config.height, config.width)
    hue = None
    if config.class_hue > 0:
        hue = config.categories.index(category) / len(config.categories)
    return ObjectPlan(category=category, texture=random_texture(rng, hue, config.class_hue), z=z,
                      radius=float(rng.uniform(*config.radius)) * side, start=start, end=end,
                      theta0=float(rng.uniform(0, 2 * np.pi)),
                      spin=float(rng.uniform(-config.max_spin, config.max_spin)),
                      zoom=config.zoom, zoom_period=float(rng.uniform(0.5, 2.0)) * config.frames,
                      zoom_phase=float(rng.uniform(0, 2 * np.pi)))


def plan_video(config: SynthConfig, rng: np.random.Generator) -> list[ObjectPlan]:
    """Script every object of one video.

    A gap meant to be an occlusion uses an object of the video as the occluder; if none can, and
    the video has fewer than ``objects[1]`` objects, an occluder is added (present throughout, no
    events of its own, of a category that can hide others); otherwise the object leaves the frame.
    """
    n = int(rng.integers(config.objects[0], config.objects[1] + 1))
    z_order = rng.permutation(n)
    objects: list[ObjectPlan] = []
    planned_gaps: dict[int, tuple[int, int]] = {}
    for k in range(n):
        category = config.categories[int(rng.integers(len(config.categories)))]
        start, end, gap = _sample_life(config, rng)
        obj = _new_object(config, rng, category, start, end, int(z_order[k]))
        if start > 0:
            obj.pins[start] = _border_point(config, rng, obj.radius)
        if end < config.frames:
            obj.pins[end - 1] = _border_point(config, rng, obj.radius)
        objects.append(obj)
        if gap is not None:
            vis = config.min_visible_frames
            g0 = int(rng.integers(start + vis, end - gap - vis + 1))
            planned_gaps[k] = (g0, g0 + gap)
    occluder_kinds = [c for c in config.categories if SHAPES[c].inradius >= 0.5]
    for k, (g0, g1) in planned_gaps.items():
        obj = objects[k]
        if rng.random() < config.p_gap_by_occlusion:
            if _try_occlusion(objects, k, g0, g1, planned_gaps, config, rng):
                continue
            if occluder_kinds and len(objects) < config.objects[1]:
                kind = occluder_kinds[int(rng.integers(len(occluder_kinds)))]
                objects.append(_new_object(config, rng, kind, 0, config.frames,
                                           max(o.z for o in objects) + 1))
                objects[-1].role = "occluder"
                if _try_occlusion(objects, k, g0, g1, planned_gaps, config, rng):
                    continue
                objects.pop()
        obj.gaps.append((g0, g1, "border"))
        obj.pins[g0 - 1] = _border_point(config, rng, obj.radius)
        obj.pins[g1] = _border_point(config, rng, obj.radius)
    for obj in objects:
        obj.waypoints = _waypoints(obj, config, rng)
    return objects

"""The settings of the procedural synthetic video generator (:class:`SynthConfig`) and its named
presets (:data:`PRESETS`, :func:`get_preset`).

Its own module so the motion planner (:mod:`daq_train.synthetic_motion`) can read a config
without importing the renderer (:mod:`daq_train.synthetic`), which imports the planner. Everything
here is re-exported by :mod:`daq_train.synthetic`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from daq_train.synthetic_shapes import SHAPES

DEFAULT_CATEGORIES: tuple[str, ...] = ("disc", "square", "triangle", "star", "ring", "cross")
BACKGROUNDS = ("video", "plain", "none")


@dataclass(frozen=True)
class SynthConfig:
    name: str = "custom"
    num_videos: int = 200
    frames: int = 24
    height: int = 160
    width: int = 160
    objects: tuple[int, int] = (1, 4)  # objects per video, inclusive range
    categories: tuple[str, ...] = DEFAULT_CATEGORIES
    radius: tuple[float, float] = (0.08, 0.2)  # object radius as a fraction of min(height, width)
    max_speed: float = 0.05  # fraction of min(height, width) per frame
    max_spin: float = 0.12  # radians per frame
    zoom: float = 0.12  # radius varies by +-zoom over time
    p_late_entry: float = 0.2  # object absent from frame 0, enters later
    p_early_exit: float = 0.2  # object leaves before the last frame (and does not return)
    p_reappear: float = 0.15  # object disappears for gap_frames frames, then comes back
    p_gap_by_occlusion: float = 0.5  # a gap is full occlusion by a larger object (else: off-frame)
    gap_frames: tuple[int, int] = (2, 5)  # inclusive range of a gap's length
    min_visible_frames: int = 3  # scripted frames of an object's life before/after a gap, at least
    # class cue besides the outline: the hues of an object's colours are drawn from a band of this
    # width (fraction of the hue circle) around hue k/K for category k; 0 = hue says nothing of the
    # class. A from-scratch small segmenter at 128 px does not learn outline-only classes in the
    # shipped budget (issue #5), so the train / val / held-out presets give classes colour families.
    class_hue: float = 0.0
    background: str = "video"  # "video" (real footage), "plain" (smooth random field), "none"
    background_dir: str | None = None  # default: samples/videos of this repository
    image_format: str = "jpg"  # "jpg" or "png"
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"SynthConfig {self.name!r}: {message}")

        check(self.num_videos >= 0, "num_videos must be >= 0")
        check(self.height >= 16 and self.width >= 16, "frames must be at least 16x16 pixels")
        check(1 <= self.objects[0] <= self.objects[1], "objects must be (min, max) with 1 <= min <= max")
        check(len(self.categories) > 0 and len(set(self.categories)) == len(self.categories),
              "categories must be distinct and non-empty")
        unknown = [c for c in self.categories if c not in SHAPES]
        check(not unknown, f"unknown shape(s) {unknown}; available: {sorted(SHAPES)}")
        check(0 < self.radius[0] <= self.radius[1] <= 0.5, "radius must satisfy 0 < min <= max <= 0.5")
        check(1 <= self.gap_frames[0] <= self.gap_frames[1], "gap_frames must be (min, max) with min >= 1")
        check(self.min_visible_frames >= 1, "min_visible_frames must be >= 1")
        check(self.frames >= self.gap_frames[0] + 2 * self.min_visible_frames + 2,
              "frames must be >= gap_frames[0] + 2 * min_visible_frames + 2 so that late entry, "
              "early exit and a gap can all happen to one object")
        for name in ("p_late_entry", "p_early_exit", "p_reappear", "p_gap_by_occlusion"):
            check(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1]")
        check(0.0 <= self.zoom < 0.5, "zoom must be in [0, 0.5)")
        check(0.0 <= self.class_hue <= 1.0, "class_hue must be in [0, 1]")
        check(self.background in BACKGROUNDS, f"background must be one of {BACKGROUNDS}")
        check(self.image_format in ("jpg", "png"), "image_format must be 'jpg' or 'png'")


CLASS_HUE = 0.15  # colour-family width of the train / val / held-out presets (v1 data)

PRESETS: dict[str, SynthConfig] = {
    # seconds in a test: a handful of small videos with every kind of event
    "tiny": SynthConfig(name="tiny", num_videos=3, frames=8, height=64, width=64, objects=(1, 3),
                        p_late_entry=0.3, p_early_exit=0.3, p_reappear=0.3, gap_frames=(1, 3), min_visible_frames=2),
    # the training distribution: mostly persistent objects, some entries, exits and gaps
    "train": SynthConfig(name="train", num_videos=1000, class_hue=CLASS_HUE),
    "val": SynthConfig(name="val", num_videos=100, class_hue=CLASS_HUE),
    # tracker training with frequent entries, exits and gaps (more positives for the emerging
    # queries than "train" gives in 5-frame clips); milder than the held-out set
    "train_appear_disappear": SynthConfig(
        name="train_appear_disappear", num_videos=1000, objects=(1, 5), p_late_entry=0.4,
        p_early_exit=0.3, p_reappear=0.4, gap_frames=(2, 8), class_hue=CLASS_HUE),
    # held-out set where appearing, disappearing and coming back is the rule, not the exception
    "heldout_appear_disappear": SynthConfig(
        name="heldout_appear_disappear", num_videos=100, frames=36, objects=(2, 5),
        p_late_entry=0.6, p_early_exit=0.5, p_reappear=0.5, gap_frames=(2, 8), class_hue=CLASS_HUE),
}


def get_preset(name: str, **overrides: object) -> SynthConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown synthetic preset {name!r}; available: {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides) if overrides else PRESETS[name]

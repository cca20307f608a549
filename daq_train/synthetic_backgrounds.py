"""Backgrounds of the synthetic videos: clips of real footage, smooth random fields, or flat grey.

Real-footage backgrounds are decoded once (PyAV, downscaled) from a folder of videos; each
synthetic video takes consecutive frames of one source (so the background moves as the real
camera did), a random crop that pans slowly, an optional horizontal flip and a mild
brightness/contrast change.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


def default_background_dir() -> Path:
    """The bundled sample corpus (``samples/videos`` beside the packages)."""
    return Path(__file__).resolve().parent.parent / "samples" / "videos"


def decode_video(path: Path, short_side: int, max_frames: int) -> np.ndarray:
    """Up to ``max_frames`` RGB frames [N, h, w, 3] with the short side scaled to ``short_side``."""
    import av

    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            w, h = frame.width, frame.height
            scale = short_side / min(w, h)
            out = frame.reformat(width=max(1, round(w * scale)), height=max(1, round(h * scale)),
                                 format="rgb24")
            frames.append(out.to_ndarray())
            if len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"{path}: no decodable video frames")
    return np.stack(frames)


class VideoBackgrounds:
    """Background clips cut from real videos (decoded lazily, on first use)."""

    def __init__(self, video_paths: Sequence[Path], short_side: int, max_frames_per_video: int = 64):
        self.video_paths = [Path(p) for p in video_paths]
        self.short_side = short_side
        self.max_frames = max_frames_per_video
        self._clips: list[np.ndarray] | None = None

    @classmethod
    def from_dir(cls, directory: Path, short_side: int) -> "VideoBackgrounds":
        directory = Path(directory)
        paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES) \
            if directory.is_dir() else []
        if not paths:
            raise FileNotFoundError(f"{directory}: no background videos ({', '.join(VIDEO_SUFFIXES)}); "
                                    "pass another folder or use background='plain'")
        return cls(paths, short_side)

    @property
    def clips(self) -> list[np.ndarray]:
        if self._clips is None:
            clips = []
            for path in self.video_paths:
                try:
                    clips.append(decode_video(path, self.short_side, self.max_frames))
                except Exception as exc:  # a broken file loses only itself
                    logger.warning("background video %s skipped: %s", path, exc)
            if not clips:
                raise ValueError(f"none of the {len(self.video_paths)} background videos could be "
                                 f"decoded (first: {self.video_paths[0]})")
            logger.info("decoded %d background videos (%d frames)", len(clips), sum(len(c) for c in clips))
            self._clips = clips
        return self._clips

    def clip(self, rng: np.random.Generator, frames: int, height: int, width: int) -> np.ndarray:
        """[frames, height, width, 3] uint8 background clip."""
        clips = self.clips
        src = clips[int(rng.integers(len(clips)))]
        n, sh, sw = src.shape[:3]
        stride = int(rng.integers(1, 3))
        start = int(rng.integers(n))
        # ping-pong through the source so any clip length works
        period = max(2 * (n - 1), 1)
        idx = [(start + stride * t) % period for t in range(frames)]
        idx = [i if i < n else period - i for i in idx]
        # crop with the output's aspect ratio, covering 45-100% of the short side, panning linearly
        aspect = width / height
        ch = min(sh, int(sh * rng.uniform(0.45, 1.0)))
        cw = min(sw, int(round(ch * aspect)))
        ch = min(ch, int(round(cw / aspect)))
        start_xy = np.array([rng.uniform(0, sw - cw), rng.uniform(0, sh - ch)])
        end_xy = np.clip(start_xy + rng.normal(0, 0.15, 2) * np.array([cw, ch]), 0, [sw - cw, sh - ch])
        flip = bool(rng.random() < 0.5)
        gain, bias = rng.uniform(0.75, 1.15), rng.uniform(-20, 20)
        out = np.empty((frames, height, width, 3), dtype=np.uint8)
        for t, i in enumerate(idx):
            x, y = (start_xy + (end_xy - start_xy) * (t / max(frames - 1, 1))).round().astype(int)
            crop = Image.fromarray(src[i, y:y + ch, x:x + cw]).resize((width, height), Image.BILINEAR)
            arr = np.asarray(crop)
            out[t] = arr[:, ::-1] if flip else arr
        return np.clip(out.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)


def plain_clip(rng: np.random.Generator, frames: int, height: int, width: int) -> np.ndarray:
    """A smooth random colour field that drifts slowly: a background without real footage."""
    field = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(
        (2 * width, 2 * height), Image.BICUBIC)
    big = np.asarray(field)
    start = np.array([rng.uniform(0, width), rng.uniform(0, height)])
    end = np.clip(start + rng.normal(0, 0.1, 2) * np.array([width, height]), 0, [width, height])
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        x, y = (start + (end - start) * (t / max(frames - 1, 1))).round().astype(int)
        out[t] = big[y:y + height, x:x + width]
    return out


def flat_clip(rng: np.random.Generator, frames: int, height: int, width: int) -> np.ndarray:
    """One flat grey level for the whole clip."""
    level = int(rng.integers(40, 216))
    return np.full((frames, height, width, 3), level, dtype=np.uint8)

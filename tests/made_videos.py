"""Small videos made in the tests with PyAV (no files in the repo, no ffmpeg binary needed)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np


def make_video(path: Path, frames: int = 40, size: tuple[int, int] = (64, 48), gop: int = 10,
               codec: str = "libx264", fmt: str | None = None,
               intervals_ms: Sequence[int] | None = None, rate: int = 25) -> Path:
    """Moving noise (every frame differs), ``size`` = (width, height). With ``intervals_ms`` the
    frame times follow that cycle of intervals (variable frame rate), else ``rate`` fps."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        if intervals_ms:
            stream.codec_context.time_base = Fraction(1, 1000)
        t = 0
        for i in range(frames):
            image = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if intervals_ms:
                frame.pts, frame.time_base = t, Fraction(1, 1000)
                t += intervals_ms[i % len(intervals_ms)]
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def keyframe_frame_indices(path: Path) -> tuple[list[int], list[int]]:
    """(presentation times of all frames sorted, indices in that order of the keyframes)."""
    with av.open(str(path)) as src:
        packets = [p for p in src.demux(src.streams.video[0]) if p.dts is not None]
    times = sorted(p.pts for p in packets)
    return times, [times.index(p.pts) for p in packets if p.is_keyframe]


def stream_copy_cut(source: Path, target: Path, cut_frame: int) -> tuple[Path, int]:
    """What ``ffmpeg -ss T -i source -c copy`` makes: packets copied from the keyframe before
    frame ``cut_frame``, timestamps shifted so the cut is at 0; the MP4 muxer writes an edit list
    that hides the frames before the cut (index first, so a truncated copy still opens). Returns (target, index of that keyframe)."""
    times, keys = keyframe_frame_indices(source)
    key = max(k for k in keys if k <= cut_frame)
    key_pts, shift = times[key], times[cut_frame]
    with av.open(str(source)) as src, av.open(str(target), "w", format="mp4",
                                                     options={"movflags": "faststart"}) as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        started = False
        for packet in src.demux(stream):
            if packet.dts is None:
                continue
            started = started or (packet.is_keyframe and packet.pts == key_pts)
            if not started:
                continue
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = out
            dst.mux(packet)
    return target, key

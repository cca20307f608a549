"""Robust streaming decode of one video through fsspec and PyAV.

* Opens the file through fsspec (local, ``gs://``, ``s3://``, ...) and demuxes the first video
  stream only (audio and other streams are ignored).
* Demuxes packet by packet; a packet whose decode raises is skipped and counted, a demux error
  ends the stream; the decoder is flushed at the end. Frames are converted to RGB by PyAV
  (swscale), which handles odd sizes; the display rotation (multiples of 90 degrees) is applied so
  frames come out as a player shows them.
* Frames are yielded in batches of ``batch_size`` as they decode, so memory stays bounded by one
  batch (plus the prefetch queue: ``batches(prefetch=N)``, see :mod:`pipeline.prefetch`).
* Closing is safe on every path (an error in the consumer, an abandoned iterator, an interrupt,
  a call from another thread): :meth:`StreamingDecoder.close` first stops and joins the prefetch
  threads it started and closes the iterators it handed out, then closes the container under
  the lock that every demux/decode step holds, and a step that comes after the close ends the
  stream instead of touching the freed container (which would crash libavformat).
* Opening errors are classified (:class:`VideoError` with a ``kind``) with a message naming the file.
* With ``limits`` (:class:`pipeline.limits.VideoLimits`) the file size and the header's frame size
  and length are checked before anything is decoded (a :class:`VideoError` of the limit's kind),
  the first decoded frame's size again (``stats.rejected``), frames larger than ``max_side`` are
  scaled down by swscale as they are converted (aspect kept), and decoding stops after the
  frames the length limits allow (``stats.limit``).
* The decoder keeps PyAV's default (slice) threading: frame threading drops the last frames before
  a damaged packet (2 of 68 on the truncated edge-case file).

Frames expected (what a player shows: edit lists, header count, packets read, duration x rate)
and the ok / partial / failed classification are in :mod:`pipeline.decode_report`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from pipeline.decode_report import (  # noqa: F401 - re-exported: decode.X is the public name
    CORRUPT,
    EMPTY_FILE,
    MODEL_ERROR,
    NO_FRAMES,
    NO_VIDEO_STREAM,
    NOT_A_VIDEO,
    TRUNCATED,
    UNREADABLE,
    UNSUPPORTED_CODEC,
    DecodeStats,
    StreamInfo,
    classify_decode,
)
from pipeline.container_size import declared_size
from pipeline.limits import VideoLimits, scaled_size
from pipeline.prefetch import Prefetcher, prefetch
from pipeline.storage import is_local, url_to_fs

__all__ = ["StreamingDecoder", "StreamInfo", "DecodeStats", "FrameBatch", "VideoError",
           "classify_decode", "prefetch", "Prefetcher"]

logger = logging.getLogger(__name__)

#: fsspec read-ahead block for remote files (PyAV reads sequentially after the header).
REMOTE_BLOCK_SIZE = 8 * 1024 * 1024


class VideoError(Exception):
    """A video that cannot be labelled at all; ``kind`` is one of the error kinds above."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class FrameBatch:
    """Consecutive decoded frames: ``frames`` (N, H, W, 3) uint8 RGB as displayed."""

    frames: np.ndarray
    start_index: int
    timestamps: list[float] = field(default_factory=list)


def _seconds(frame: Any, time_base: tuple[int, int] | None) -> float | None:
    """Presentation time of a frame in seconds (frames flushed from the decoder carry no time
    base of their own, so the stream's is used), or None without a timestamp. ``time_base`` as
    (numerator, denominator): integer true division rounds exactly as ``float(Fraction)`` does,
    without building a Fraction per frame."""
    pts = frame.pts
    if pts is None or time_base is None:
        return None
    try:
        value = pts * time_base[0] / time_base[1]
    except (OverflowError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) else None


def _time_base(stream: Any) -> tuple[int, int] | None:
    base = stream.time_base
    if base is None or not base.denominator:
        return None
    return int(base.numerator), int(base.denominator)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


class StreamingDecoder:
    """Decode one video as a stream of RGB frame batches (use as a context manager)."""

    def __init__(self, url: str, batch_size: int = 8, storage_options: dict[str, Any] | None = None,
                 limits: VideoLimits | None = None, chunked: bool = False,
                 max_side: int | None = None):
        """``limits``: check and bound the video (module docstring); ``chunked``: its length is
        handled by chunks (only the pixel budget bounds it); ``max_side``: downscale frames whose
        longer side is above it (default: ``limits.max_side``, or never without limits)."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.url = url
        self.limits = limits
        self.chunked = chunked
        self.max_side = max_side if max_side is not None else (limits.max_side if limits else None)
        self._target: tuple[int, int] | None = None  # coded (width, height) frames are converted to
        self._frame_cap: int | None = None  # frames the length limits allow, and why
        self._cap_reason: tuple[str, str] | None = None
        self.batch_size = batch_size
        self.storage_options = storage_options
        self.stats = DecodeStats()
        self.info: StreamInfo | None = None
        self._file: Any = None
        self._container: Any = None
        self._lock = threading.RLock()  # held by every demux/decode step and by close()
        self._closed = False
        self._prefetchers: list[Prefetcher] = []
        self._iterators: list[Iterator[FrameBatch]] = []
        self._read_to_end = False  # the demuxer reached the end of the stream (not closed early)
        # One swscale context for every frame of the video (frame.to_ndarray(format=...) builds
        # a new one per frame: most of the conversion's cost); used by the decoding thread only.
        self._reformatter = VideoReformatter()

    # ------------------------------------------------------------------ open / close

    def __enter__(self) -> "StreamingDecoder":
        start = time.perf_counter()
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        finally:
            self.stats.seconds += time.perf_counter() - start
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    #: seconds close() waits for each prefetch thread to stop (it always stops at the next step)
    CLOSE_WAIT_S = 30.0

    def close(self) -> None:
        """Stop and join the prefetch threads, close the batch iterators, then the container
        and the file. Idempotent; safe from any thread: the container is freed under the lock
        that each demux/decode step holds, and a later step sees the close and ends the stream."""
        for fetcher in reversed(self._prefetchers):
            if not fetcher.close(timeout=self.CLOSE_WAIT_S):
                logger.warning("%s: a prefetch thread is still in a decode step", self.url)
        for iterator in reversed(self._iterators):
            try:
                iterator.close()  # type: ignore[attr-defined]
            except ValueError:  # running in another thread: it stops at its next step
                pass
        with self._lock:
            self._closed = True
            self._prefetchers, self._iterators = [], []
            for obj in (self._container, self._file):
                if obj is not None:
                    try:
                        obj.close()
                    except Exception as exc:  # noqa: BLE001 - closing must not mask the real error
                        logger.debug("closing %s: %s", self.url, exc)
            self._container = self._file = None

    def _open(self) -> None:
        try:
            fs, path = url_to_fs(self.url, self.storage_options)
            size = fs.size(path)
            options = {} if is_local(fs) else {"block_size": REMOTE_BLOCK_SIZE}
            self._file = fs.open(path, "rb", **options)
        except FileNotFoundError as exc:
            raise VideoError(UNREADABLE, f"{self.url}: file not found ({_describe(exc)})") from exc
        except Exception as exc:  # noqa: BLE001 - any storage failure makes the URL unreadable
            raise VideoError(UNREADABLE, f"{self.url}: cannot open ({_describe(exc)})") from exc
        if size == 0:
            raise VideoError(EMPTY_FILE, f"{self.url}: empty file (0 bytes)")
        if self.limits is not None:
            self._reject(self.limits.check_file(size))
        try:
            declared = declared_size(self._file, size)
        except Exception as exc:  # noqa: BLE001 - optional evidence; the open below says what is wrong
            logger.debug("%s: container size unknown: %s", self.url, exc)
            declared = None
        try:
            self._container = av.open(self._file, mode="r", metadata_errors="ignore")
        except av.error.InvalidDataError as exc:
            raise VideoError(NOT_A_VIDEO, f"{self.url}: not a video container FFmpeg can read "
                                          f"({_describe(exc)})") from exc
        except av.error.FFmpegError as exc:
            # FFmpeg's own errors while parsing the header (end of file inside a box, an
            # allocation refused for a size the header claims, ...): a damaged container.
            # Storage failures reach us as the file object's own exception, below.
            raise VideoError(NOT_A_VIDEO, f"{self.url}: damaged or truncated container: FFmpeg "
                                          f"could not read its header ({_describe(exc)})") from exc
        except Exception as exc:  # noqa: BLE001 - the storage failed while FFmpeg read the header
            raise VideoError(UNREADABLE, f"{self.url}: cannot read ({_describe(exc)})") from exc
        if not self._container.streams.video:
            streams = list(self._container.streams)
            fmt = self._container.format.name
            if not streams:
                raise VideoError(NOT_A_VIDEO, f"{self.url}: not a video: FFmpeg read it as {fmt!r} "
                                              "but found no stream in it")
            kinds = sorted({s.type for s in streams})
            raise VideoError(NO_VIDEO_STREAM, f"{self.url}: no video stream ({fmt}; streams: "
                                              f"{', '.join(kinds)})")
        stream = self._container.streams.video[0]
        ctx = None
        try:
            ctx = stream.codec_context
            codec = ctx.name
            width, height = int(ctx.width), int(ctx.height)
            if self.limits is not None:  # FFmpeg refuses larger frames, whatever the header said
                ctx.options = {**ctx.options, "max_pixels": str(self.limits.max_source_pixels)}
        except Exception as exc:  # noqa: BLE001 - PyAV raises several types for unknown codecs
            why = ("FFmpeg knows no decoder for its codec (a damaged header can name a codec that "
                   "does not exist)" if ctx is None else _describe(exc))
            raise VideoError(UNSUPPORTED_CODEC, f"{self.url}: cannot decode the video stream: {why}") from exc
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else None
        duration = start = None
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
            if stream.start_time is not None:
                start = float(stream.start_time * stream.time_base)
        elif self._container.duration:
            duration = self._container.duration / av.time_base
            if self._container.start_time is not None:
                start = self._container.start_time / av.time_base
        self.info = StreamInfo(
            container_format=self._container.format.name,
            codec=codec,
            coded_width=width,
            coded_height=height,
            fps=fps if fps and math.isfinite(fps) and fps > 0 else None,
            duration_s=duration if duration and duration > 0 else None,
            frames_header=int(stream.frames) if stream.frames else None,
            file_bytes=int(size) if size is not None else None,
            start_s=start if start is not None and math.isfinite(start) else None,
            declared_bytes=declared,
        )
        if self.limits is not None:
            self._reject(self.limits.check_header(self.info, self.max_side, self.chunked))

    def _reject(self, rejection: Any) -> None:
        if rejection is not None:
            raise VideoError(rejection.kind, f"{self.url}: {rejection.message}")

    # ------------------------------------------------------------------ decode

    def _frames(self) -> Iterator[tuple[Any, float | None]]:
        """Decoded PyAV frames of the first video stream, skipping packets that fail."""
        with self._lock:
            if self._closed:
                return
            stream = self._container.streams.video[0]
            time_base = _time_base(stream)
            packets = self._container.demux(stream)
        try:
            while True:
                with self._lock:  # one demux + decode step; never across a yield
                    if self._closed:
                        return
                    decoded = self._step(packets)
                if decoded is None:
                    break
                for frame in decoded:
                    yield frame, _seconds(frame, time_base)
            with self._lock:
                if self._closed:
                    return
                try:
                    flushed = list(stream.codec_context.decode(None))
                except EOFError:
                    flushed = []
                except Exception as exc:  # noqa: BLE001
                    flushed = []
                    self.stats.bad_packets += 1
                    self.stats.first_error = self.stats.first_error or f"flush: {_describe(exc)}"
            self._read_to_end = True
            for frame in flushed:
                yield frame, _seconds(frame, time_base)
        finally:
            with self._lock:
                packets.close()  # PyAV's demux generator frees only its own buffers here

    def _step(self, packets: Iterator[Any]) -> list[Any] | None:
        """Demux and decode one packet (frames, possibly none); None at the end of the stream."""
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return None
            except Exception as exc:  # noqa: BLE001 - a demux error ends the stream
                self.stats.demux_error = _describe(exc)
                self.stats.first_error = self.stats.first_error or f"demux: {self.stats.demux_error}"
                logger.info("%s: demux stopped after %d packets: %s", self.url, self.stats.packets,
                            self.stats.demux_error)
                return None
            if packet.size == 0 and packet.dts is None:
                continue  # the flush packet PyAV yields at EOF; we flush explicitly after
            self.stats.packets += 1
            if packet.is_discard:  # outside the edit list: a reference for the frames shown
                self.stats.discarded_packets += 1
            try:
                return list(packet.decode())
            except Exception as exc:  # noqa: BLE001 - skip the packet, keep decoding
                self.stats.bad_packets += 1
                self.stats.first_error = self.stats.first_error or f"decode: {_describe(exc)}"
                return []

    def _first_frame(self, frame: Any) -> bool:
        """Sizes from the first decoded frame: the displayed size, the size it is labelled at
        (downscaled to ``max_side``), the limits' checks; False when the video is rejected."""
        stats = self.stats
        rotation = int(round((frame.rotation or 0) / 90.0)) % 4 * 90
        stats.rotation = rotation
        stats.coded_width, stats.coded_height = frame.width, frame.height
        target = (frame.width, frame.height)
        if self.max_side is not None and frame.width > 0 and frame.height > 0:
            target = scaled_size(frame.width, frame.height, self.max_side)
        self._target = target
        swap = rotation in (90, 270)
        stats.source_width, stats.source_height = (frame.height, frame.width) if swap else (frame.width, frame.height)
        stats.width, stats.height = (target[1], target[0]) if swap else target
        if self.limits is not None:
            rejection = self.limits.check_frame(frame.width, frame.height, "decoded frames")
            if rejection is not None:
                stats.rejected = (rejection.kind, rejection.message)
                logger.warning("%s: rejected: %s", self.url, rejection.message)
                return False
            self._frame_cap, reason = self.limits.frame_cap(stats.width, stats.height, self.chunked)
            self._cap_reason = (reason.kind, reason.message)
        return True

    def _to_rgb(self, frame: Any) -> np.ndarray:
        stats = self.stats
        target = self._target
        if (frame.width, frame.height) != target:
            if (frame.width, frame.height) != (stats.coded_width, stats.coded_height):
                stats.resized_frames += 1  # mid-stream size change: keep the first frame's size
            rgb = self._reformatter.reformat(frame, width=target[0], height=target[1], format="rgb24",
                                             interpolation="AREA").to_ndarray()
        else:
            rgb = self._reformatter.reformat(frame, format="rgb24").to_ndarray()
        if stats.rotation:  # a view: the copy into the batch makes it contiguous
            rgb = np.rot90(rgb, k=stats.rotation // 90)
        return rgb  # a view of the converted frame's (row-padded) buffer

    def batches(self, prefetch: int = 0) -> Iterator[FrameBatch]:
        """Batches of up to ``batch_size`` displayed RGB frames, in decode order, decoded
        ``prefetch`` batches ahead on a background thread when ``prefetch`` > 0. An unexpected
        error while decoding or converting ends the stream and is recorded like a demux error.
        The decoder owns what it returns: :meth:`close` stops it."""
        if self._container is None:
            raise RuntimeError("use StreamingDecoder as a context manager")
        iterator = self._guarded_batches()
        self._iterators.append(iterator)
        if prefetch <= 0:
            return iterator
        fetcher = Prefetcher(iterator, prefetch)
        self._prefetchers.append(fetcher)
        return fetcher

    def _guarded_batches(self) -> Iterator[FrameBatch]:
        try:
            yield from self._batches()
        except Exception as exc:  # noqa: BLE001 - keep the frames we have, record why we stopped
            self.stats.demux_error = _describe(exc)
            self.stats.first_error = self.stats.first_error or f"decode: {self.stats.demux_error}"
            logger.warning("%s: decoding stopped after %d frames: %s", self.url, self.stats.frames,
                           self.stats.demux_error)
        self._account()

    def _account(self) -> None:
        """Tell the stream info what the demuxer found (see :mod:`pipeline.decode_report`)."""
        info, stats = self.info, self.stats
        if info is None:
            return
        info.frames_discarded = stats.discarded_packets
        if self._read_to_end and not stats.demux_error and info.reached_end(stats.last_time) \
                and not info.file_cut:
            info.packets_complete = stats.packets - stats.discarded_packets

    def _batches(self) -> Iterator[FrameBatch]:
        """Each converted frame is copied at once (while it is in cache) into the batch's array,
        the only copy between swscale's output and the model."""
        fps = self.info.fps if self.info else None
        batch: np.ndarray | None = None
        filled = 0
        times: list[float] = []
        start_index = 0
        clock = time.perf_counter()
        for frame, t in self._frames():
            if self._target is None and not self._first_frame(frame):
                break
            index = self.stats.frames
            if self._frame_cap is not None and index >= self._frame_cap:
                self.stats.limit = self._cap_reason
                logger.warning("%s: %s", self.url, self._cap_reason[1])
                break
            if getattr(frame, "is_corrupt", False):  # decoded with errors concealed
                self.stats.corrupt_frames += 1
                if self.stats.first_corrupt_frame is None:
                    self.stats.first_corrupt_frame = index
            rgb = self._to_rgb(frame)
            if batch is None:
                batch = np.empty((self.batch_size, *rgb.shape), dtype=np.uint8)
            elif rgb.shape != batch.shape[1:]:
                raise ValueError(f"frame {index} is {rgb.shape}, the batch {batch.shape[1:]}")
            batch[filled] = rgb
            filled += 1
            times.append(float(t) if t is not None else (index / fps if fps else float(index)))
            if t is not None and (self.stats.last_time is None or t > self.stats.last_time):
                self.stats.last_time = float(t)
            self.stats.frames += 1
            if filled == self.batch_size:
                self.stats.seconds += time.perf_counter() - clock
                yield FrameBatch(batch, start_index, times)
                clock = time.perf_counter()
                start_index, batch, filled, times = self.stats.frames, None, 0, []
        if filled:
            self.stats.seconds += time.perf_counter() - clock
            yield FrameBatch(batch[:filled], start_index, times)
        else:
            self.stats.seconds += time.perf_counter() - clock

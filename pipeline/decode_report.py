"""What a video's container announces and what decoding it found: error kinds, :class:`StreamInfo`,
:class:`DecodeStats`, the frame accounting and :func:`classify_decode` (ok / partial / failed).

Frames expected (``frames_expected`` and its ``frames_expected_source``) is the count a player
shows, taken from the best evidence there is:

* ``edit_list``: the header's sample count less the samples the demuxer marks as outside the
  edit list (a stream-copy cut starts at the keyframe before the cut; the frames before the cut
  are decoded, as references only, and not shown);
* ``header``: the container's own frame count (MP4/MOV sample tables), when nothing was cut;
* ``packets``: no header count, but the demuxer reached the end of the stream cleanly (no read
  error, the last frame at the announced end, the file as long as its container declares:
  :mod:`pipeline.container_size`): every packet the stream holds was read, one shown frame
  each. This is exact for variable frame rate, where duration x rate is not;
* ``duration``: round(duration x rate), an estimate (tolerance max(1, 2%) frames), when the stream
  ended early or with an error, or before decoding.

``partial`` means frames were really lost or damaged: fewer frames than an exact count (or than
the estimate beyond its tolerance; no tolerance for a file shorter than its container declares),
packets that failed to decode, frames the decoder flagged corrupt (errors concealed: H.264,
HEVC, MPEG-4 flag them; VP9 and AV1 do not), or a read error.
"""

from __future__ import annotations

from dataclasses import dataclass

# error kinds (videos.error_type)
EMPTY_FILE = "empty_file"
UNREADABLE = "unreadable"
NOT_A_VIDEO = "not_a_video"
NO_VIDEO_STREAM = "no_video_stream"
UNSUPPORTED_CODEC = "unsupported_codec"
NO_FRAMES = "no_frames_decoded"
TRUNCATED = "truncated"
CORRUPT = "corrupt_packets"
MODEL_ERROR = "model_error"

#: sources of frames_expected (videos.frames_expected_source)
SOURCE_HEADER, SOURCE_EDIT_LIST, SOURCE_PACKETS, SOURCE_DURATION = "header", "edit_list", "packets", "duration"
_EXACT = (SOURCE_HEADER, SOURCE_EDIT_LIST, SOURCE_PACKETS)


@dataclass
class StreamInfo:
    """What the container says about the first video stream; the decoder adds what the demuxer
    found (``frames_discarded``, ``packets_complete``) once the stream has been read."""

    container_format: str
    codec: str
    coded_width: int
    coded_height: int
    fps: float | None
    duration_s: float | None
    frames_header: int | None
    file_bytes: int | None
    start_s: float | None = None
    frames_discarded: int = 0  # packets the demuxer marked outside the edit list
    packets_complete: int | None = None  # packets read, when the whole stream was read cleanly
    declared_bytes: int | None = None  # the size the container's structure declares (container_size)

    @property
    def file_cut(self) -> bool:
        """The file is shorter than its container declares (cut: its last packets may be gone,
        and reading to the cut looks like reaching the end)."""
        return bool(self.declared_bytes and self.file_bytes is not None
                    and self.file_bytes < self.declared_bytes)

    @property
    def frames_estimate(self) -> int | None:
        if self.duration_s and self.fps:
            return int(round(self.duration_s * self.fps))
        return None

    @property
    def frames_expected(self) -> int | None:
        return self._expected()[0]

    @property
    def frames_expected_source(self) -> str | None:
        return self._expected()[1]

    def _expected(self) -> tuple[int | None, str | None]:
        if self.frames_header:
            if self.frames_discarded:
                return max(0, self.frames_header - self.frames_discarded), SOURCE_EDIT_LIST
            return self.frames_header, SOURCE_HEADER
        if self.packets_complete is not None:
            return self.packets_complete, SOURCE_PACKETS
        estimate = self.frames_estimate
        return (estimate, SOURCE_DURATION) if estimate is not None else (None, None)

    def reached_end(self, last_time: float | None) -> bool:
        """Whether a frame at ``last_time`` seconds is the stream's last one (within 2.5 frame
        intervals or 1% of the duration); True when the container announces no duration."""
        if not self.duration_s:
            return True
        if last_time is None:
            return False
        end = (self.start_s or 0.0) + self.duration_s
        slack = max(2.5 / self.fps if self.fps else 0.1, 0.01 * self.duration_s)
        return last_time + slack >= end


@dataclass
class DecodeStats:
    """Counts gathered while decoding; complete once the batch iterator is exhausted."""

    frames: int = 0
    packets: int = 0
    bad_packets: int = 0
    corrupt_frames: int = 0  # frames the decoder output with errors concealed (FFmpeg's corrupt flag)
    first_corrupt_frame: int | None = None
    discarded_packets: int = 0  # outside the edit list: decoded as references, not shown
    demux_error: str | None = None
    first_error: str | None = None
    rotation: int = 0
    width: int | None = None  # displayed size of the frames yielded
    height: int | None = None
    coded_width: int | None = None  # size of the first decoded frame before rotation
    coded_height: int | None = None
    resized_frames: int = 0  # frames whose coded size differed from the first frame's
    source_width: int | None = None  # displayed size of the source, before a downscale (limits)
    source_height: int | None = None
    rejected: tuple[str, str] | None = None  # (kind, why): the first frame broke a size limit
    limit: tuple[str, str] | None = None  # (kind, why): decoding stopped at a length limit
    last_time: float | None = None  # latest presentation time decoded (seconds)
    seconds: float = 0.0

    @property
    def errors(self) -> int:
        return self.bad_packets + (1 if self.demux_error else 0)


def classify_decode(stats: DecodeStats, info: StreamInfo | None) -> tuple[str, str | None, str | None]:
    """(status, error kind, message) of a decode: ok, partial or failed.

    failed: the decoded frames broke a size limit (``stats.rejected``, :mod:`pipeline.limits`), or
    no frame decoded. partial: decoding stopped at a length limit (``stats.limit``), or frames missing against ``info.frames_expected`` (exactly
    for an exact source, beyond max(1, 2%) frames for a duration estimate), or decode errors.
    ok otherwise.
    """
    if stats.rejected is not None:  # pipeline.limits: the decoded frames' size
        return "failed", stats.rejected[0], stats.rejected[1]
    if stats.frames == 0:
        why = stats.first_error or "the video stream yielded no frames"
        return "failed", NO_FRAMES, f"no frame could be decoded ({why})"
    if stats.limit is not None:  # pipeline.limits: stopped at the length the limits allow
        return "partial", stats.limit[0], stats.limit[1]
    expected, source = (info.frames_expected, info.frames_expected_source) if info else (None, None)
    if expected is not None and source != SOURCE_PACKETS:  # packets: a loss is a failed packet
        # a cut file: any frame short of the estimate is lost, not the estimate's rounding
        tolerance = 0 if source in _EXACT or info.file_cut else max(1, int(0.02 * expected))
        if expected - stats.frames > tolerance:
            detail = f"; first error: {stats.first_error}" if stats.first_error else ""
            if info is not None and info.file_cut:
                detail += (f"; the file has {info.file_bytes} of the {info.declared_bytes} bytes its "
                           "container declares")
            return ("partial", TRUNCATED,
                    f"decoded {stats.frames} of {expected} expected frames ({source}; file "
                    f"truncated or damaged){detail}")
    if stats.errors or stats.corrupt_frames:
        parts = []
        if stats.errors:
            parts.append(f"{stats.errors} packet(s) failed to decode; first error: {stats.first_error}")
        if stats.corrupt_frames:
            parts.append(f"{stats.corrupt_frames} frame(s) decoded with errors the decoder concealed "
                         f"(damaged data; first: frame {stats.first_corrupt_frame})")
        return "partial", CORRUPT, "; ".join(parts)
    return "ok", None, None

"""How many bytes a video file's container says it has, from its top-level structure, to tell a
truncated file from a whole one when the header gives no frame count (Matroska/WebM).

* ISO BMFF (MP4, MOV, M4V, 3GP): the top-level boxes are walked by their size fields (a few small
  reads); the declared size is where the last box ends (a box of size 0 runs to the end of the
  file). Box sizes past the end of the file mean it was cut.
* Matroska / WebM: the EBML header's size, then the Segment element's size (unless it is the
  "unknown size" a live muxer writes).
* Anything else: unknown (None).

Found by the fuzzer: a WebM cut inside its last cluster lost its last frame without any read
error, the demuxer reaching the cut as if it were the end; the frame accounting took the packets
read as exact, and the video was ``ok``. With the declared size the decoder knows the file is
shorter than its container says, and does not count the packets read as every frame.
"""

from __future__ import annotations

import struct
from typing import Any

EBML_ID = b"\x1a\x45\xdf\xa3"
SEGMENT_ID = b"\x18\x53\x80\x67"
MAX_BOXES = 4096  # top-level boxes walked at most (real files have a handful)


def _vint(data: bytes, pos: int) -> tuple[int | None, int] | None:
    """An EBML variable-length size at ``pos``: (value or None for 'unknown', its length)."""
    if pos >= len(data) or data[pos] == 0:
        return None
    first = data[pos]
    length = 8 - first.bit_length() + 1
    if pos + length > len(data):
        return None
    value = first & ((1 << (8 - length)) - 1)
    for byte in data[pos + 1:pos + length]:
        value = (value << 8) | byte
    return (None if value == (1 << (7 * length)) - 1 else value), length


def matroska_size(head: bytes) -> int | None:
    """Declared size of a Matroska/WebM file from its first bytes (EBML header + Segment)."""
    if not head.startswith(EBML_ID):
        return None
    header = _vint(head, 4)
    if header is None or header[0] is None:
        return None
    segment = 4 + header[1] + header[0]
    if head[segment:segment + 4] != SEGMENT_ID:
        return None
    size = _vint(head, segment + 4)
    if size is None or size[0] is None:
        return None
    return segment + 4 + size[1] + size[0]


def mp4_size(file: Any, file_bytes: int) -> int | None:
    """Declared size of an ISO BMFF file: where its last top-level box ends."""
    pos = 0
    for _ in range(MAX_BOXES):
        if pos >= file_bytes:
            return pos
        file.seek(pos)
        header = file.read(16)
        if len(header) < 8:
            return None
        size, kind = struct.unpack(">I4s", header[:8])
        if not kind.isalnum() and kind != b"\xa9too":
            return None  # not a box: trailing junk or damage, say nothing
        if size == 1:
            if len(header) < 16:
                return None
            size = struct.unpack(">Q", header[8:16])[0]
        elif size == 0:
            return file_bytes  # runs to the end of the file
        if size < 8:
            return None
        pos += size
    return None


def declared_size(file: Any, file_bytes: int | None) -> int | None:
    """Bytes the container of ``file`` (an open binary file object) says it has, or None when
    that is unknown; the file position is left at 0."""
    if not file_bytes:
        return None
    try:
        file.seek(0)
        head = file.read(64)
        if head.startswith(EBML_ID):
            return matroska_size(head)
        if head[4:8] == b"ftyp":
            return mp4_size(file, file_bytes)
        return None
    finally:
        file.seek(0)

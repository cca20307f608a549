"""Chunk plans of long videos (pipeline/chunking.py): every frame labelled, consecutive chunks
share exactly the overlap, each frame kept from exactly one chunk, far from that chunk's edges."""

from __future__ import annotations

import itertools

import pytest

from pipeline.chunking import ChunkSettings, plan_chunks, shared_frames


def _check_plan(total: int, length: int, overlap: int) -> None:
    chunks = plan_chunks(total, ChunkSettings(length, overlap))
    assert chunks[0].start == 0 and chunks[-1].end == total
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(c.count == len(chunks) for c in chunks)
    assert [c.open_end for c in chunks] == [False] * (len(chunks) - 1) + [True]
    if total <= length:
        assert len(chunks) == 1
    for chunk in chunks:
        assert 0 < chunk.frames <= length
        assert chunk.start <= chunk.keep_start < chunk.keep_end <= chunk.end
    for a, b in zip(chunks, chunks[1:]):
        assert len(shared_frames(a, b)) == overlap  # exactly the overlap, also for the last pair
        assert b.frames > overlap  # every chunk brings new frames
        assert a.keep_end == b.keep_start
        # the kept boundary is the middle of the shared frames
        assert abs((a.keep_end - b.start) - (a.end - a.keep_end)) <= 1
    for c, d in zip(chunks, chunks[2:]):
        assert c.end <= d.start  # a frame lies in at most two chunks
    for frame in range(total):
        holders = [c.index for c in chunks if c.holds(frame)]
        keepers = [c.index for c in chunks if c.keeps(frame)]
        assert 1 <= len(holders) <= 2 and len(keepers) == 1 and keepers[0] in holders
    # equal lengths (the last may be shorter by the rounding): no stub of a few frames at the end
    assert max(c.frames for c in chunks) - min(c.frames for c in chunks) < len(chunks) + 1


@pytest.mark.parametrize("total,length,overlap", [
    (60, 24, 8), (100, 30, 10), (3001, 3000, 16), (6000, 3000, 16), (6001, 3000, 16),
    (10, 24, 8), (24, 24, 8), (25, 24, 8), (1000, 48, 16), (97, 9, 3),
])
def test_plan_covers_every_frame_with_the_overlap(total: int, length: int, overlap: int) -> None:
    _check_plan(total, length, overlap)


def test_plan_property_over_many_sizes() -> None:
    for total, length, overlap in itertools.product(range(1, 130, 7), (9, 12, 20, 33), (1, 3)):
        _check_plan(total, length, overlap)


def test_sixty_frames_in_chunks_of_24_overlap_8() -> None:
    chunks = plan_chunks(60, ChunkSettings(24, 8))
    assert [(c.start, c.end) for c in chunks] == [(0, 21), (13, 34), (26, 47), (39, 60)]
    assert [(c.keep_start, c.keep_end) for c in chunks] == [(0, 17), (17, 30), (30, 43), (43, 60)]


def test_one_chunk_when_off_short_or_of_unknown_length() -> None:
    for total, settings in [(10_000, ChunkSettings()), (100, ChunkSettings(3000, 16)),
                            (None, ChunkSettings(30, 8)), (0, ChunkSettings(30, 8))]:
        (chunk,) = plan_chunks(total, settings)
        assert chunk.start == 0 and chunk.open_end and chunk.keeps(10**9) and chunk.holds(10**9)


def test_the_last_chunk_takes_frames_beyond_the_estimate() -> None:
    last = plan_chunks(100, ChunkSettings(30, 5))[-1]
    assert last.holds(150) and last.keeps(150)


@pytest.mark.parametrize("length,overlap,message", [
    (-1, 8, "max_frames must be >= 0"), (30, 0, "overlap must be >= 1"), (20, 8, "at least 3 x overlap"),
])
def test_bad_settings_say_why(length: int, overlap: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChunkSettings(length, overlap)


def test_negative_length_and_non_consecutive_chunks_are_refused() -> None:
    with pytest.raises(ValueError, match="num_frames"):
        plan_chunks(-5, ChunkSettings(30, 8))
    chunks = plan_chunks(100, ChunkSettings(30, 8))
    with pytest.raises(ValueError, match="not consecutive"):
        shared_frames(chunks[0], chunks[2])

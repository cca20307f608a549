"""Per-video tracker state: track records, id issuing, EMA anchors and the per-frame bookkeeping
of the DAQ tracker (SPEC §3.6.2, §3.6.5, §3.6.6), plus the official noise filter (§3.6.7).

Memory is bounded per frame: a record keeps its last query, its EMA anchor, the last
``anchor_history - 1`` anchors (all the EMA ever reads), a float64 running sum of its logits and,
only for offline models (``keep_embeds``), its per-frame query features (the refiner's input).
``keep_history`` (reference/debug runs) additionally keeps per-frame logits and appearance flags.
Records that die before reaching ``noise_frame_num`` frames can never pass the noise filter and
are released (unless ``keep_history``).
"""

from __future__ import annotations

import logging
import random
from collections import deque
from dataclasses import dataclass, field

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

OFFICIAL_ID_RANGE = 100_000  # official ids are random.randint(0, 100000)


class GrowingRows:
    """Append-only rows stored in fixed chunks of ``CHUNK_ROWS`` (at most ``CHUNK_ROWS - 1`` rows
    of slack per instance, no re-allocation of earlier rows)."""

    CHUNK_ROWS = 32

    def __init__(self) -> None:
        self._chunks: list[Tensor] = []
        self.size = 0

    def append(self, row: Tensor) -> None:
        if self.size == len(self._chunks) * self.CHUNK_ROWS:
            self._chunks.append(row.new_empty((self.CHUNK_ROWS, row.shape[0])))
        self._chunks[-1][self.size % self.CHUNK_ROWS] = row
        self.size += 1

    def view(self) -> Tensor:
        """The rows as one (n, D) tensor (a copy)."""
        if not self._chunks:
            raise ValueError("no rows")
        return torch.cat(self._chunks)[: self.size]

    def nbytes(self) -> int:
        return sum(c.numel() * c.element_size() for c in self._chunks)


class OfficialIds:
    """Track ids drawn like the official tracker: ``rng.randint(0, 100000)`` once per emerging
    query row, re-drawn while the id was ever issued. ``issued`` is deliberately NOT reset between
    videos (the official ``memory_seq_ids`` list never is), so a predictor reproduces the official
    ids of a sequence of videos too."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.issued: set[int] = set()

    def draw(self) -> int:
        if len(self.issued) > OFFICIAL_ID_RANGE:
            raise RuntimeError(
                "official track ids exhausted: all 100001 values were issued by this predictor "
                "(the official code would loop forever); use inference.track_ids='sequential'")
        value = self.rng.randint(0, OFFICIAL_ID_RANGE)
        while value in self.issued:
            value = self.rng.randint(0, OFFICIAL_ID_RANGE)
        return value

    def issue(self, value: int) -> None:
        self.issued.add(value)


class SequentialIds:
    """Ids 0, 1, 2, ... in creation order, per video (our default: official ids carry no meaning
    and the official used-id list leaks across videos)."""

    def __init__(self) -> None:
        self.next_id = 0

    def draw(self) -> None:  # a new id is only assigned when a record is created
        return None

    def issue(self, value: int) -> None:
        self.next_id = max(self.next_id, value + 1)


@dataclass
class TrackRecord:
    """One track sequence (official ``VideoInstanceSequence``)."""

    track_id: int
    start: int
    last_query: Tensor
    anchor: Tensor | None = None
    length: int = 0
    invalid: int = 0
    dead: bool = False
    logit_sum: Tensor | None = None  # float64 (K+1,)
    prev_anchors: deque = field(default_factory=deque)
    embeds: GrowingRows | None = None
    logits: GrowingRows | None = None  # keep_history only
    appearance: list[bool] | None = None  # keep_history only

    def mean_logits(self) -> Tensor:
        assert self.logit_sum is not None
        return (self.logit_sum / self.length).to(torch.float32)

    def end(self) -> int:
        """One past the last stored frame."""
        return self.start + self.length


def ema_anchor_update(record: TrackRecord, anchor: Tensor) -> None:
    """Similarity-guided EMA (SPEC §3.6.5): beta = max(0, mean cos(previous anchors, p)) over at
    most ``anchor_history - 1`` previous anchors (``record.prev_anchors``); a <- (1 - beta) a + beta p."""
    if record.anchor is None:
        record.anchor = anchor
    else:
        previous = torch.stack(list(record.prev_anchors))
        cos = torch.nn.functional.normalize(previous, dim=-1) @ torch.nn.functional.normalize(
            anchor, dim=-1)
        beta = cos.sum() / previous.shape[0]
        if beta > 0:
            record.anchor = (1 - beta) * record.anchor + beta * anchor
    record.prev_anchors.append(anchor)  # a deque of maxlen max(history - 1, 1)


@dataclass
class FrameDecision:
    """Bookkeeping result of one frame.

    ``row_ids``: track id stored for each row (-1: invalid emerging row or track killed now);
    ``entries``: (row, track_id, valid) for every track with an entry in this frame, in row order.
    """

    row_ids: list[int]
    entries: list[tuple[int, int, bool]]
    started: int
    killed: int


class TrackHub:
    """All track records of one video in creation order, and the active list."""

    def __init__(self, ids: OfficialIds | SequentialIds, kick_out: int, anchor_history: int,
                 noise_frame_num: int, keep_embeds: bool, keep_history: bool) -> None:
        self.ids = ids
        self.kick_out = kick_out
        self.anchor_history = anchor_history
        self.noise_frame_num = noise_frame_num
        self.keep_embeds = keep_embeds
        self.keep_history = keep_history
        self.records: dict[int, TrackRecord] = {}
        self.active: list[int] = []
        self.num_started = 0
        self.num_killed = 0
        self.num_released = 0

    # ---------------------------------------------------------------------------------------

    def track_queries(self) -> tuple[list[int], Tensor | None, Tensor | None]:
        """Active ids with their queries (last stored query) and EMA anchors (None if no ids)."""
        if not self.active:
            return [], None, None
        queries = torch.stack([self.records[i].last_query for i in self.active])
        anchors = torch.stack([self.records[i].anchor for i in self.active])
        return list(self.active), queries, anchors

    def _append(self, record: TrackRecord, query: Tensor, logits: Tensor, valid: bool) -> None:
        record.last_query = query
        record.length += 1
        as64 = logits.detach().to(torch.float64)
        record.logit_sum = as64.clone() if record.logit_sum is None else record.logit_sum + as64
        if record.embeds is not None:
            record.embeds.append(query)
        if record.logits is not None:
            record.logits.append(logits.to(torch.float32))
        if record.appearance is not None:
            record.appearance.append(valid)

    def update(self, frame_index: int, queries: Tensor, logits: Tensor, anchors: Tensor,
               valid: Tensor, num_tracks: int) -> FrameDecision:
        """Official bookkeeping over rows ``0..R-1`` (SPEC §3.6.6)."""
        if num_tracks != len(self.active):
            raise ValueError(f"{num_tracks} track rows for {len(self.active)} active tracks")
        valid_list = valid.tolist()
        queries = queries.detach()
        anchors = anchors.detach()
        row_ids: list[int] = []
        entries: list[tuple[int, int, bool]] = []
        new_active: list[int] = []
        started = killed = 0
        for k, is_valid in enumerate(valid_list):
            if k < num_tracks:
                track_id: int | None = self.active[k]
            else:
                track_id = self.ids.draw()
            if is_valid:
                if track_id is None:
                    track_id = self.ids.next_id  # type: ignore[union-attr]
                record = self.records.get(track_id)
                if record is None:
                    record = self._new_record(track_id, frame_index, queries[k])
                    started += 1
                self._append(record, queries[k], logits[k], True)
                record.invalid = 0
                ema_anchor_update(record, anchors[k])
                new_active.append(track_id)
                row_ids.append(track_id)
                entries.append((k, track_id, True))
            elif k < num_tracks:
                record = self.records[track_id]
                record.invalid += 1
                if record.invalid >= self.kick_out:
                    record.dead = True
                    record.prev_anchors.clear()  # a dead track is never updated again
                    killed += 1
                    row_ids.append(-1)
                    self._maybe_release(record)
                    continue
                self._append(record, queries[k], logits[k], False)
                new_active.append(track_id)
                row_ids.append(track_id)
                entries.append((k, track_id, False))
            else:
                row_ids.append(-1)
        self.active = new_active
        self.num_started += started
        self.num_killed += killed
        return FrameDecision(row_ids=row_ids, entries=entries, started=started, killed=killed)

    def _new_record(self, track_id: int, frame_index: int, query: Tensor) -> TrackRecord:
        self.ids.issue(track_id)
        record = TrackRecord(track_id=track_id, start=frame_index, last_query=query,
                             prev_anchors=deque(maxlen=max(self.anchor_history - 1, 1)))
        if self.keep_embeds:
            record.embeds = GrowingRows()
        if self.keep_history:
            record.logits = GrowingRows()
            record.appearance = []
        self.records[track_id] = record
        return record

    def _maybe_release(self, record: TrackRecord) -> None:
        """A dead record shorter than the noise filter can never be output: release it."""
        if not self.keep_history and record.length < self.noise_frame_num:
            del self.records[record.track_id]
            self.num_released += 1

    def release(self, track_ids: list[int]) -> None:
        """Drop records that can no longer contribute to the result (their ids stay issued)."""
        for track_id in track_ids:
            if self.records.pop(track_id, None) is not None:
                self.num_released += 1

    # ---------------------------------------------------------------------------------------

    def kept_records(self, video_start: int, num_frames: int) -> list[TrackRecord]:
        """Official noise filter: drop records with fewer than ``noise_frame_num`` stored frames
        unless they reach the last frame; creation order."""
        end = video_start + num_frames
        return [r for r in self.records.values()
                if r.length >= self.noise_frame_num or r.end() >= end]

    def nbytes(self) -> int:
        """Approximate bytes of tensor data held by the records."""
        total = 0
        for r in self.records.values():
            per = r.last_query.numel() * r.last_query.element_size()
            total += per * (2 + len(r.prev_anchors))
            total += 0 if r.logit_sum is None else r.logit_sum.numel() * 8
            total += 0 if r.embeds is None else r.embeds.nbytes()
            total += 0 if r.logits is None else r.logits.nbytes()
        return total

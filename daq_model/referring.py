"""Referring-tracker mode: the ablation baseline "plain referring tracker (DVIS-style anchors)".

The DAQ tracker's parameters run as a DVIS/DVIS++-style referring tracker (daq_model/README.md,
"Referring-tracker mode"): Q persistent slots, one per segmenter query. Frame 0: slot i is
segmenter query i. Later frames: this frame's segmenter queries are Hungarian-matched to the
slots' references (each slot's matched segmenter embedding of the previous frame, 1 - cosine),
and slot i runs the main branch with its previous output as content and the anchor of its matched
query as query position (:meth:`~daq_model.tracker.DAQTracker.forward_referring`). No emerging
anchor queries, no slot branch, no creation or deletion of anchors.

Tracks: a slot becomes a track (one id for the rest of the video) on its first frame with score
above the threshold; frames where its score is below it count as absent (no entry, no logits in
its score). :class:`ReferringVideoTracker` has the interface of
:class:`~daq_model.tracking.VideoTracker`, so the streaming session, the reference path and the
refiner's training use either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from daq_model.config import DAQConfig
from daq_model.feature_cache import FrameEmbeddingStore
from daq_model.track_state import FrameDecision, GrowingRows, OfficialIds, SequentialIds
from daq_model.tracker import DAQTracker, foreground_score
from daq_model.track_step import TrackStep

logger = logging.getLogger(__name__)


def link_slots(references: Tensor, current: Tensor) -> Tensor:
    """``matched`` (Q,) int64: ``matched[i]`` = the current segmenter query assigned to slot i.

    Hungarian assignment on ``1 - cos`` between the slots' references (Q, C) and this frame's
    segmenter embeddings (Q, C), L2-normalised with +1e-6 (NaN costs -> 0), as the DVIS referring
    tracker matches; float32 outside autocast (scipy needs it)."""
    if references.shape != current.shape:
        raise ValueError(f"{references.shape[0]} slots for {current.shape[0]} segmenter queries: "
                         "the referring tracker needs one slot per query")
    with torch.autocast(current.device.type, enabled=False):
        ref = references.detach().float()
        cur = current.detach().float()
        ref = ref / (ref.norm(dim=1, keepdim=True) + 1e-6)
        cur = cur / (cur.norm(dim=1, keepdim=True) + 1e-6)
        cost = torch.nan_to_num(1 - ref @ cur.T, nan=0.0)
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    matched = torch.empty(ref.shape[0], dtype=torch.int64)
    matched[torch.as_tensor(rows, dtype=torch.int64)] = torch.as_tensor(np.asarray(cols),
                                                                         dtype=torch.int64)
    return matched.to(current.device)


@dataclass
class SlotRecord:
    """The track of one slot. ``start``: first present frame; ``length``: frames since then
    (present or absent); ``present``: frames above the threshold, the only ones in ``logit_sum``;
    ``anchor``: the anchor the slot used in its last present frame. Slots never die."""

    track_id: int
    slot: int
    start: int
    anchor: Tensor
    length: int = 0
    present: int = 0
    last_present: int = -1
    invalid: int = 0  # consecutive absent frames up to now
    dead: bool = False
    logit_sum: Tensor | None = None  # float64 (K+1,), present frames only
    logits: GrowingRows | None = None  # keep_history: every frame since start
    appearance: list[bool] | None = None  # keep_history: present flag per frame since start

    def mean_logits(self) -> Tensor:
        assert self.logit_sum is not None
        return (self.logit_sum / self.present).to(torch.float32)

    def end(self) -> int:
        return self.start + self.length


class SlotHub:
    """The slots of one video: their carried state and their tracks (creation order)."""

    def __init__(self, ids: OfficialIds | SequentialIds, noise_frame_num: int, keep_embeds: bool,
                 keep_history: bool) -> None:
        self.ids = ids
        self.noise_frame_num = noise_frame_num
        self.keep_embeds = keep_embeds
        self.keep_history = keep_history
        self.records: dict[int, SlotRecord] = {}
        self.slot_ids: list[int | None] = []
        self.queries: Tensor | None = None  # (Q, C) the slots' last outputs
        self.anchors: Tensor | None = None  # (Q, C) the anchors they used
        self.references: Tensor | None = None  # (Q, C) their matched segmenter embeddings
        self.slot_embeds = FrameEmbeddingStore() if keep_embeds else None  # (T, Q, C) offline
        self.num_started = 0
        self.num_killed = 0
        self.num_released = 0

    @property
    def active(self) -> list[int]:
        """Ids of the slots that have a track, in slot order."""
        return [i for i in self.slot_ids if i is not None]

    def track_queries(self) -> tuple[list[int], Tensor | None, Tensor | None]:
        """Slot track ids (-1: no track yet), the Q slot queries and the anchors they used."""
        return [-1 if i is None else i for i in self.slot_ids], self.queries, self.anchors

    def _new_id(self) -> int:
        value = self.ids.draw()
        if value is None:
            value = self.ids.next_id  # type: ignore[union-attr]
        self.ids.issue(value)
        return value

    def update(self, frame_index: int, queries: Tensor, logits: Tensor, anchors: Tensor,
               references: Tensor, valid: Tensor) -> FrameDecision:
        """Record one frame of all slots (row k = slot k)."""
        queries, anchors = queries.detach(), anchors.detach()
        if not self.slot_ids:
            self.slot_ids = [None] * queries.shape[0]
        row_ids: list[int] = []
        entries: list[tuple[int, int, bool]] = []
        started = 0
        for k, is_valid in enumerate(valid.tolist()):
            track_id = self.slot_ids[k]
            record = None if track_id is None else self.records[track_id]
            if is_valid and record is None:
                track_id = self._new_id()
                record = SlotRecord(track_id=track_id, slot=k, start=frame_index,
                                    anchor=anchors[k])
                if self.keep_history:
                    record.logits, record.appearance = GrowingRows(), []
                self.records[track_id] = record
                self.slot_ids[k] = track_id
                started += 1
            if record is None:
                row_ids.append(-1)
                continue
            record.length += 1
            if record.logits is not None and record.appearance is not None:
                record.logits.append(logits[k].detach().to(torch.float32))
                record.appearance.append(bool(is_valid))
            if is_valid:
                as64 = logits[k].detach().to(torch.float64)
                record.logit_sum = as64.clone() if record.logit_sum is None else record.logit_sum + as64
                record.present += 1
                record.last_present = frame_index
                record.invalid = 0
                record.anchor = anchors[k]
                row_ids.append(record.track_id)
                entries.append((k, record.track_id, True))
            else:
                record.invalid += 1
                row_ids.append(-1)
        self.queries, self.anchors, self.references = queries, anchors, references.detach()
        if self.slot_embeds is not None:
            self.slot_embeds.append(queries)
        self.num_started += started
        return FrameDecision(row_ids=row_ids, entries=entries, started=started, killed=0)

    def kept_records(self, video_start: int, num_frames: int) -> list[SlotRecord]:
        """The online noise filter on present frames: fewer than ``noise_frame_num`` present
        frames -> dropped unless present in the last frame; creation order."""
        last = video_start + num_frames - 1
        return [r for r in self.records.values()
                if r.present >= self.noise_frame_num or r.last_present == last]

    def sequence(self, record: SlotRecord, video_start: int, num_frames: int
                 ) -> tuple[Tensor, Tensor]:
        """The slot's (T, C) output queries over the whole video (the refiner's input) and (T,)
        flags, True outside the record's first..last present frame (debug only)."""
        if self.slot_embeds is None:
            raise RuntimeError("offline assembly needs the referring tracker kept with "
                               "keep_embeds=True")
        seq = self.slot_embeds.view()[:, record.slot]
        flags = torch.ones(num_frames, dtype=torch.bool)
        flags[record.start - video_start: record.last_present - video_start + 1] = False
        return seq, flags

    def nbytes(self) -> int:
        """Approximate bytes of tensor data held (slot state, records, offline slot queries)."""
        total = sum(0 if t is None else t.numel() * t.element_size()
                    for t in (self.queries, self.anchors, self.references))
        for r in self.records.values():
            total += r.anchor.numel() * r.anchor.element_size()
            total += 0 if r.logit_sum is None else r.logit_sum.numel() * 8
            total += 0 if r.logits is None else r.logits.nbytes()
        return total + (0 if self.slot_embeds is None else self.slot_embeds.nbytes())


class ReferringVideoTracker:
    """Tracks one video in referring mode; the interface of :class:`VideoTracker`."""

    def __init__(self, tracker: DAQTracker, cfg: DAQConfig, ids: OfficialIds | SequentialIds,
                 keep_embeds: bool, keep_history: bool = False, video_start: int = 0) -> None:
        self.tracker = tracker
        self.cfg = cfg
        self.hub = SlotHub(ids, cfg.tracker.noise_frame_num, keep_embeds, keep_history)
        self.video_start = video_start
        self.num_frames = 0

    @property
    def next_frame_index(self) -> int:
        return self.video_start + self.num_frames

    def validity(self, logits: Tensor, seg_logits: Tensor) -> Tensor:
        """Frame 0: the segmenter's fg > ``aux_inference_select_threshold`` (as the DAQ first
        frame); later: the tracker's fg > ``inference_select_threshold``."""
        trk = self.cfg.tracker
        if self.num_frames == 0:
            return foreground_score(seg_logits.float()) > trk.aux_inference_select_threshold
        return foreground_score(logits.float()) > trk.inference_select_threshold

    def step(self, seg_logits: Tensor, seg_masks: Tensor, seg_embeds: Tensor,
             mask_features: Tensor, layer_logits: bool = False) -> TrackStep:
        """One frame; arguments as :meth:`VideoTracker.step`."""
        if self.num_frames == 0:
            matched = torch.arange(seg_embeds.shape[0], device=seg_embeds.device)
            out = self.tracker.forward_referring(seg_embeds, mask_features, seg_masks, None, None,
                                                 layer_logits=layer_logits)
        else:
            assert self.hub.references is not None
            matched = link_slots(self.hub.references, seg_embeds)
            out = self.tracker.forward_referring(seg_embeds, mask_features, seg_masks,
                                                 self.hub.queries, matched,
                                                 layer_logits=layer_logits)
        valid = self.validity(out.logits, seg_logits)
        frame_index = self.next_frame_index
        decision = self.hub.update(frame_index, out.queries, out.logits, out.anchors,
                                   seg_embeds[matched], valid)
        self.num_frames += 1
        return TrackStep(frame_index=frame_index, output=out, valid=valid, decision=decision,
                         active_ids=self.hub.active)

    def candidate_sequence(self, record: SlotRecord) -> tuple[Tensor, Tensor]:
        return self.hub.sequence(record, self.video_start, self.num_frames)

    def assemble_online(self) -> tuple[list[int], Tensor]:
        """Kept slot tracks in creation order and their mean logits over present frames."""
        kept = self.hub.kept_records(self.video_start, self.num_frames)
        if not kept:
            return [], torch.zeros((0, self.cfg.num_classes + 1))
        return [r.track_id for r in kept], torch.stack([r.mean_logits() for r in kept])

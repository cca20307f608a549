"""The online DAQ tracking loop for one video: network step + validity rules + bookkeeping.

:class:`VideoTracker` is shared by the streaming session (``daq_model.predictor``) and the
non-streaming reference path (``daq_model.reference``), so both make identical decisions.
Validity (SPEC §3.6.3-§3.6.4): the first frame starts a track for every segmenter query with
fg > ``aux_inference_select_threshold`` (the segmenter's score, not the tracker's); later frames
keep/start rows with tracker fg > ``inference_select_threshold``; with ``ovis_infer`` a carried
track additionally needs slot-branch fg > ``dis_fg_threshold``.
"""

from __future__ import annotations

import logging
import random

import torch
from torch import Tensor

from daq_model.config import DAQConfig
from daq_model.offline import record_sequence
from daq_model.referring import ReferringVideoTracker
from daq_model.track_state import OfficialIds, SequentialIds, TrackHub, TrackRecord
from daq_model.track_step import TrackStep
from daq_model.tracker import DAQTracker, TrackerFrameOutput, foreground_score

__all__ = ["TRACK_ID_MODES", "TrackStep", "VideoTracker", "make_id_source", "make_video_tracker",
           "suppress_duplicate_emergence", "suppress_duplicate_rows"]

logger = logging.getLogger(__name__)

TRACK_ID_MODES = ("official", "sequential")


def make_id_source(mode: str, rng: random.Random | None = None) -> OfficialIds | SequentialIds:
    """``official``: Python-random ids like the official code (``rng`` seeded by the caller);
    ``sequential``: 0, 1, 2, ... per video."""
    if mode == "official":
        return OfficialIds(rng if rng is not None else random.Random())
    if mode == "sequential":
        return SequentialIds()
    raise ValueError(f"inference.track_ids must be one of {TRACK_ID_MODES}, got {mode!r}")


class VideoTracker:
    """Tracks one video frame by frame. ``ids`` may be shared between videos (official mode)."""

    def __init__(self, tracker: DAQTracker, cfg: DAQConfig, seg_query_table: Tensor,
                 ids: OfficialIds | SequentialIds, keep_embeds: bool, keep_history: bool = False,
                 video_start: int = 0) -> None:
        self.tracker = tracker
        self.cfg = cfg
        self.seg_query_table = seg_query_table
        trk = cfg.tracker
        self.hub = TrackHub(ids, kick_out=trk.kick_out_frame_num,
                            anchor_history=trk.anchor_history,
                            noise_frame_num=trk.noise_frame_num,
                            keep_embeds=keep_embeds, keep_history=keep_history)
        self.video_start = video_start
        self.num_frames = 0
        # streaming: dead records that can no longer reach the final top-k are released
        self.prune_dead = not keep_history
        self.dead_keep = cfg.refiner.offline_topk_num if keep_embeds else cfg.test.max_num

    @property
    def next_frame_index(self) -> int:
        return self.video_start + self.num_frames

    def validity(self, out: TrackerFrameOutput, seg_logits: Tensor) -> Tensor:
        trk = self.cfg.tracker
        if self.num_frames == 0:
            scores = foreground_score(seg_logits.float())
            valid = scores > trk.aux_inference_select_threshold
            if trk.track_nms_iou > 0 and trk.mode == "daq":
                valid = suppress_duplicate_rows(out.masks, scores, valid, 0, trk.track_nms_iou)
            return valid
        scores = foreground_score(out.logits.float())
        valid = scores > trk.inference_select_threshold
        if trk.emerging_select_threshold is not None and trk.mode == "daq":
            valid[out.num_tracks:] = scores[out.num_tracks:] > trk.emerging_select_threshold
        if trk.ovis_infer and out.num_tracks > 0:
            assert out.slot_logits is not None
            slot_fg = foreground_score(out.slot_logits[: out.num_tracks].float())
            valid[: out.num_tracks] &= slot_fg > trk.dis_fg_threshold
        if trk.emerging_nms_iou > 0 and trk.mode == "daq":
            valid = suppress_duplicate_emergence(out, valid, trk.emerging_nms_iou)
        if trk.track_nms_iou > 0 and trk.mode == "daq":
            valid = suppress_duplicate_rows(out.masks, scores, valid, out.num_tracks, trk.track_nms_iou)
        return valid

    def step(self, seg_logits: Tensor, seg_masks: Tensor, seg_embeds: Tensor,
             mask_features: Tensor, layer_logits: bool = False) -> TrackStep:
        """One frame: ``seg_logits`` (Q, K+1), ``seg_masks`` (Q, h, w), ``seg_embeds`` (Q, C),
        ``mask_features`` (C, h, w) raw pixel-decoder features of this frame."""
        if self.num_frames == 0:
            queries = anchors = None
        else:
            _, queries, anchors = self.hub.track_queries()
            if queries is None:  # no active track: an empty (0, C) set, still a "later" frame
                queries = seg_embeds.new_zeros((0, seg_embeds.shape[1]))
                anchors = queries
        out = self.tracker.forward_frame(seg_embeds, mask_features, seg_masks,
                                         self.seg_query_table, queries, anchors,
                                         layer_logits=layer_logits)
        valid = self.validity(out, seg_logits)
        frame_index = self.next_frame_index
        decision = self.hub.update(frame_index, out.queries, out.logits, out.anchors, valid,
                                   out.num_tracks)
        self.num_frames += 1
        if self.prune_dead and decision.killed:
            self._prune_dead_records()
        return TrackStep(frame_index=frame_index, output=out, valid=valid, decision=decision,
                         active_ids=list(self.hub.active))

    def _prune_dead_records(self) -> None:
        """Release dead records that cannot be part of the final result.

        A dead record's mean logits are final. Online, the result is the top ``test.max_num``
        (record, class) pairs: a dead record none of whose pairs is among the top ``max_num``
        pairs of the dead records alone can never be selected. Offline, the refiner takes the top
        ``offline_topk_num`` records by fg score: likewise for the dead records outside the top
        ``offline_topk_num`` of the dead. Pruning runs when the dead outnumber ``2 * limit + 32``
        (amortised), so the state holds O(limit) dead records whatever the video length.
        """
        dead = [r for r in self.hub.records.values() if r.dead]
        if len(dead) <= 2 * self.dead_keep + 32:
            return
        logits = torch.stack([r.mean_logits() for r in dead])
        if self.hub.keep_embeds:
            count = min(self.dead_keep, len(dead))
            needed = set(foreground_score(logits).topk(count).indices.tolist())
        else:
            scores = logits.softmax(-1)[:, :-1].flatten()
            count = min(self.dead_keep, scores.numel())
            needed = set((scores.topk(count).indices // (logits.shape[1] - 1)).tolist())
        released = [r.track_id for i, r in enumerate(dead) if i not in needed]
        self.hub.release(released)
        logger.debug("released %d dead records that cannot reach the final top-k",
                     len(released))

    def candidate_sequence(self, record: TrackRecord) -> tuple[Tensor, Tensor]:
        """The record's (T, C) refiner input (stored queries padded with its final anchor) and
        (T,) padding flags."""
        return record_sequence(record, self.video_start, self.num_frames)

    def assemble_online(self) -> tuple[list[int], Tensor]:
        """Official online output (SPEC §3.6.7): kept records in creation order and their mean
        raw logits (n, K+1)."""
        kept = self.hub.kept_records(self.video_start, self.num_frames)
        num_logits = self.cfg.num_classes + 1
        if not kept:
            return [], torch.zeros((0, num_logits))
        return [r.track_id for r in kept], torch.stack([r.mean_logits() for r in kept])


def suppress_duplicate_emergence(out: TrackerFrameOutput, valid: Tensor, iou_threshold: float) -> Tensor:
    """``valid`` with emerging rows (rows >= ``out.num_tracks``) switched off where their mask
    (logit > 0) has IoU > ``iou_threshold`` with a valid track row or with a higher-scoring emerging
    row kept before it (greedy, by foreground score). Track rows are never changed."""
    n = out.num_tracks
    candidates = torch.nonzero(valid[n:]).squeeze(1) + n
    if candidates.numel() == 0:
        return valid
    binary = (out.masks > 0).flatten(1).float()
    kept = [int(k) for k in torch.nonzero(valid[:n]).squeeze(1)]
    scores = foreground_score(out.logits[candidates].float())
    result = valid.clone()
    for k in candidates[torch.argsort(scores, descending=True)].tolist():
        if _overlaps_any(binary, kept, k, iou_threshold):
            result[k] = False
        else:
            kept.append(k)
    return result


def _overlaps_any(binary: Tensor, kept: list[int], k: int, iou_threshold: float) -> bool:
    """Whether row ``k`` of ``binary`` (flattened 0/1 masks) has IoU above ``iou_threshold`` with
    any of the rows ``kept``."""
    if not kept:
        return False
    inter = binary[kept] @ binary[k]
    union = binary[kept].sum(1) + binary[k].sum() - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1.0), torch.zeros_like(inter))
    return bool((iou > iou_threshold).any())


def suppress_duplicate_rows(masks: Tensor, scores: Tensor, valid: Tensor, num_tracks: int,
                            iou_threshold: float) -> Tensor:
    """``valid`` with every row switched off whose mask (logit > 0) has IoU > ``iou_threshold``
    with a valid row kept before it: rows ``< num_tracks`` (carried tracks) come first, then the
    rest, each group by descending ``scores`` (greedy NMS that favours existing tracks)."""
    rows = torch.nonzero(valid).squeeze(1)
    if rows.numel() < 2:
        return valid
    carried = rows < num_tracks
    order = torch.argsort(scores[rows].float() + 2.0 * carried.float(), descending=True)  # fg <= 1
    binary = (masks[rows[order]] > 0).flatten(1).float()
    result = valid.clone()
    kept: list[int] = []
    for i, k in enumerate(rows[order].tolist()):
        if _overlaps_any(binary, kept, i, iou_threshold):
            result[k] = False
        else:
            kept.append(i)
    return result


def make_video_tracker(tracker: DAQTracker, cfg: DAQConfig, seg_query_table: Tensor,
                       ids: OfficialIds | SequentialIds, keep_embeds: bool,
                       keep_history: bool = False, video_start: int = 0):
    """The per-video tracker of ``cfg.tracker.mode``: :class:`VideoTracker` (``daq``) or
    :class:`~daq_model.referring.ReferringVideoTracker` (``referring``, the ablation baseline;
    it does not use the segmenter's query table)."""
    if cfg.tracker.mode == "referring":
        return ReferringVideoTracker(tracker, cfg, ids, keep_embeds=keep_embeds,
                                     keep_history=keep_history, video_start=video_start)
    return VideoTracker(tracker, cfg, seg_query_table, ids, keep_embeds=keep_embeds,
                        keep_history=keep_history, video_start=video_start)

"""Offline candidate assembly (official ``common_inference``, SPEC §3.7.1) and refiner scoring.

Candidates for the refiner, in this order:

1. tracker records that pass the noise filter; if more than ``offline_topk_num``, the
   ``offline_topk_num`` with the highest fg(mean logits), in ``topk(sorted=False)`` order (the
   official order; it decides the candidate indices that the VIS result reports);
2. if fewer than Q (= ``num_new_ins``) remain, MinVIS-style linked segmenter queries fill up to Q:
   frame t's queries are matched to the previous linked set by Hungarian on 1 - cosine of the
   L2-normalised ``pred_embds``; the fill-up takes the top ``Q - n`` linked sequences by fg of their
   mean logits. Their embedding sequences are the permuted per-frame ``pred_embds``; their official
   ids are synthetic ``(10000 + video_start) * 10000 + i * 1000`` (i = 1..), -1 as track ids.

A record's embedding sequence is its stored per-frame query features, padded before its start and
after its end with its final EMA anchor (the official ``padding_embed`` is an identity); the
padding flags are computed for the debug output only, the refiner ignores them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from daq_model.track_state import TrackRecord
from daq_model.tracker import foreground_score

logger = logging.getLogger(__name__)


def minvis_synthetic_id(video_start: int, i: int) -> int:
    """The official id of the i-th (1-based) MinVIS fill-up candidate."""
    return (10000 + video_start) * 10000 + i * 1000


@dataclass
class MinVISLink:
    """Segmenter queries linked through the video: ``perm[t, j]`` = frame t's query of linked
    sequence j; ``mean_logits`` (Q, K+1) = mean over frames of the linked per-frame logits."""

    perm: Tensor  # (T, Q) int64
    mean_logits: Tensor  # (Q, K+1)

    def embeds(self, frame_embeds: Tensor, which: Tensor) -> Tensor:
        """(T, len(which), C) linked embedding sequences of the sequences ``which``."""
        rows = self.perm[:, which]  # (T, n)
        return torch.gather(frame_embeds, 1, rows[..., None].expand(-1, -1, frame_embeds.shape[2]))


class MinVISLinker:
    """Incremental MinVIS linking: feed frames in order, read the link at any time. Keeps the
    previous linked embeddings, a float64 logit sum and one permutation per frame (int32)."""

    def __init__(self) -> None:
        self.perms: list[Tensor] = []
        self.previous: Tensor | None = None
        self.logit_sum: Tensor | None = None

    def add(self, frame_embeds: Tensor, seg_logits: Tensor) -> None:
        """One frame's (Q, C) segmenter embeddings and (Q, K+1) logits (float32, no autocast)."""
        with torch.autocast(frame_embeds.device.type, enabled=False):
            current = frame_embeds.detach().float().cpu()
            logits = seg_logits.detach().double().cpu()
            if self.previous is None:
                order = torch.arange(current.shape[0])
            else:
                cur_n = current / current.norm(dim=1, keepdim=True)
                prev_n = self.previous / self.previous.norm(dim=1, keepdim=True)
                cost = 1 - cur_n @ prev_n.T  # (current, previous linked), as the official code
                _, cols = linear_sum_assignment(cost.T.numpy())
                order = torch.as_tensor(np.asarray(cols), dtype=torch.int64)
        self.perms.append(order.to(torch.int32))
        self.previous = current[order]
        logits = logits[order]
        self.logit_sum = logits if self.logit_sum is None else self.logit_sum + logits

    def link(self) -> MinVISLink:
        if self.logit_sum is None:
            raise ValueError("no frames linked")
        return MinVISLink(perm=torch.stack(self.perms).to(torch.int64),
                          mean_logits=(self.logit_sum / len(self.perms)).to(torch.float32))

    def nbytes(self) -> int:
        per = sum(p.numel() * p.element_size() for p in self.perms)
        if self.previous is not None:
            per += self.previous.numel() * 4 + self.logit_sum.numel() * 8
        return per


def minvis_link(frame_embeds: Tensor, seg_logits: Tensor) -> MinVISLink:
    """Link frame queries by Hungarian matching on 1 - cos to the previous linked set
    (float32, outside autocast). ``frame_embeds`` (T, Q, C), ``seg_logits`` (T, Q, K+1)."""
    linker = MinVISLinker()
    for embeds, logits in zip(frame_embeds, seg_logits):
        linker.add(embeds, logits)
    return linker.link()


@dataclass
class OfflineCandidates:
    """The refiner's input candidates (q of them) and what the reference output reports."""

    instance_embeds: Tensor | None  # (T, q, C); released once handed to the refiner
    online_logits: Tensor  # (q, K+1) tracker mean logits / MinVIS mean logits
    official_ids: list[int]  # tracker ids, then MinVIS synthetic ids
    track_ids: list[int]  # tracker ids, -1 for MinVIS candidates
    padding: Tensor  # (q, T) bool, True outside a record's stored span
    minvis: MinVISLink | None = None
    minvis_index: Tensor | None = None  # the chosen linked sequences
    num_records: int = 0
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.official_ids)


def record_sequence(record: TrackRecord, video_start: int, num_frames: int) -> tuple[Tensor, Tensor]:
    """(T, C) embedding sequence padded with the final anchor, and (T,) padding flags."""
    if record.embeds is None or record.anchor is None:
        raise RuntimeError("offline assembly needs records kept with keep_embeds=True")
    stored = record.embeds.view()
    front = record.start - video_start
    tail = num_frames - stored.shape[0] - front
    pad = record.anchor.to(stored.dtype)
    seq = torch.cat([pad.expand(front, -1), stored, pad.expand(tail, -1)])
    flags = torch.ones(num_frames, dtype=torch.bool)
    flags[front: front + stored.shape[0]] = False
    return seq, flags


def assemble_candidates(kept: list[TrackRecord], frame_embeds: Tensor,
                        seg_logits: "Tensor | MinVISLinker", topk_num: int, num_new_ins: int,
                        video_start: int = 0,
                        sequence: "Callable[[Any], tuple[Tensor, Tensor]] | None" = None,
                        ) -> OfflineCandidates:
    """Build the refiner candidates from the noise-filtered records ``kept`` (creation order),
    the per-frame segmenter embeddings (T, Q, C) and either the per-frame segmenter logits
    (T, Q, K+1) or a :class:`MinVISLinker` that has seen every frame (streaming).
    ``sequence(record) -> ((T, C), (T,) flags)``: a record's embedding sequence (the tracker's
    ``candidate_sequence``; default :func:`record_sequence`, for DAQ records)."""
    num_frames, _, dim = frame_embeds.shape
    num_logits = (seg_logits.shape[-1] if isinstance(seg_logits, Tensor)
                  else seg_logits.logit_sum.shape[-1])
    if kept:
        logits = torch.stack([r.mean_logits() for r in kept])
        if topk_num > len(kept):  # official: strictly more records than top-k triggers selection
            order = torch.arange(len(kept))
        else:
            _, order = foreground_score(logits).topk(topk_num, sorted=False)
        chosen = [kept[i] for i in order.tolist()]
        embeds = frame_embeds.new_empty((num_frames, len(chosen), dim))
        padding = torch.empty((len(chosen), num_frames), dtype=torch.bool)
        for j, record in enumerate(chosen):
            embeds[:, j], padding[j] = (record_sequence(record, video_start, num_frames)
                                        if sequence is None else sequence(record))
        online_logits = logits[order]
        ids = [r.track_id for r in chosen]
    else:
        embeds = frame_embeds.new_zeros((num_frames, 0, dim))
        padding = torch.zeros((0, num_frames), dtype=torch.bool)
        online_logits = torch.zeros((0, num_logits))
        ids = []
    result = OfflineCandidates(instance_embeds=embeds, online_logits=online_logits,
                               official_ids=list(ids), track_ids=list(ids), padding=padding,
                               num_records=len(kept))
    num_left = num_new_ins - len(ids)
    if num_left > 0:
        link = (minvis_link(frame_embeds, seg_logits) if isinstance(seg_logits, Tensor)
                else seg_logits.link())
        _, which = foreground_score(link.mean_logits).topk(num_left, sorted=False)
        result.instance_embeds = torch.cat([embeds, link.embeds(frame_embeds, which)], dim=1)
        result.online_logits = torch.cat([online_logits, link.mean_logits[which]])
        result.padding = torch.cat([padding, torch.zeros((num_left, num_frames), dtype=torch.bool)])
        result.official_ids += [minvis_synthetic_id(video_start, i) for i in range(1, num_left + 1)]
        result.track_ids += [-1] * num_left
        result.minvis, result.minvis_index = link, which
    return result

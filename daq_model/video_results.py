"""Building the final :class:`~daq_model.outputs.VideoResult` of a video (online and offline).

Online: the noise-filtered tracker records, scored by softmax of their mean raw logits, top
``test.max_num`` (track, class) pairs; masks are the tracks' per-frame masks already handed out in
``FrameTracks`` (``mask_source="tracker"``, no ``frame_masks``).

Offline: candidate assembly (:mod:`daq_model.offline`), the refiner over the whole video, top
``test.max_num`` pairs of the refiner's logits; masks are decoded lazily frame by frame from the
refined queries and each frame's raw mask features (cached, or recomputed from ``replay``).
Official quirk kept by default: exactly one candidate gives an empty result
(``empty_on_single_candidate``); it cannot happen with the MinVIS fill-up unless Q = 1.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Protocol

import numpy as np
import torch
from torch import Tensor

from daq_model.config import DAQConfig
from daq_model.dvis_daq import DVISDAQ
from daq_model.feature_cache import FeatureCache, ReplayFn, iter_mask_features
from daq_model.offline import MinVISLinker, OfflineCandidates, assemble_candidates
from daq_model.outputs import FrameMasks, Instance, VideoResult
from daq_model.postprocess import MaskGeometry, TopPairs, masks_to_output, select_top_pairs
from daq_model.referring import ReferringVideoTracker
from daq_model.tracking import VideoTracker

logger = logging.getLogger(__name__)


class RefinerHost(Protocol):
    """What the offline result needs of the predictor that ran the video: its model (for the
    refiner), config, device, autocast and raw mask features of frames (replay passes).
    :class:`daq_model.predictor.VideoPredictor` is one; typed as a protocol so this module does
    not import :mod:`daq_model.predictor`, which imports this one."""

    model: DVISDAQ
    cfg: DAQConfig
    device: torch.device

    def autocast(self) -> contextlib.AbstractContextManager: ...

    def mask_features(self, frames: np.ndarray) -> Tensor: ...


def instances_from_pairs(top: TopPairs, track_ids: list[int]) -> tuple[list[Instance], list[int]]:
    """Instances by descending score (ties: candidate, then label) and, for each, its candidate."""
    order = sorted(range(len(top.scores)), key=lambda i: (-float(top.scores[i]),
                                                          int(top.candidates[i]),
                                                          int(top.labels[i])))
    instances, candidates = [], []
    for n, i in enumerate(order):
        cand = int(top.candidates[i])
        instances.append(Instance(instance_id=n, track_id=int(track_ids[cand]),
                                  label=int(top.labels[i]), score=float(top.scores[i])))
        candidates.append(cand)
    return instances, candidates


def online_result(tracker: "VideoTracker | ReferringVideoTracker", cfg: DAQConfig,
                  stats: dict[str, float]) -> VideoResult:
    ids, logits = tracker.assemble_online()
    top = select_top_pairs(logits, cfg.test.max_num)
    instances, _ = instances_from_pairs(top, ids)
    stats = dict(stats, candidates=float(len(ids)))
    return VideoResult(instances=instances, num_frames=tracker.num_frames, mask_source="tracker",
                       frame_masks=None, stats=stats)


def refine(predictor: RefinerHost, cands: OfflineCandidates, frame_embeds: Tensor,
           ) -> tuple[Tensor, Tensor]:
    """Refiner forward: (T, q, C) refined queries and (q, K+1) float32 class logits (CPU)."""
    refiner = predictor.model.refiner
    if refiner is None:
        raise RuntimeError("this model has no refiner (online config)")
    device = predictor.device
    instance_embeds, cands.instance_embeds = cands.instance_embeds, None  # release early
    refined = refiner(instance_embeds.to(device), frame_embeds.to(device), consume_input=True)
    del instance_embeds
    return refined, refiner.class_logits(refined).float().cpu()


def _iter_offline_masks(predictor: RefinerHost, refined: Tensor, candidates: list[int],
                        cache: FeatureCache, replay: ReplayFn | None,
                        geometry: MaskGeometry) -> Iterator[FrameMasks]:
    refiner = predictor.model.refiner
    unique = sorted(set(candidates))
    slot = {c: i for i, c in enumerate(unique)}
    pick = torch.as_tensor([slot[c] for c in candidates], dtype=torch.long)
    sel = torch.as_tensor(unique, dtype=torch.long, device=refined.device)
    num_frames = refined.shape[0]
    features = iter_mask_features(cache, num_frames, replay, predictor.mask_features,
                                  max(1, predictor.cfg.inference.frame_batch_size))
    for t, frame_features in enumerate(features):
        with torch.inference_mode(), predictor.autocast():
            logits = refiner.frame_masks(refined[t:t + 1, sel],
                                         frame_features[None].to(refined.device))[:, 0]
            binary = masks_to_output(logits, geometry)
        yield FrameMasks(frame_index=t, masks=binary[pick].cpu().numpy())


def offline_result(predictor: RefinerHost,
                   tracker: "VideoTracker | ReferringVideoTracker", frame_embeds: Tensor,
                   seg_logits: "Tensor | MinVISLinker", cache: FeatureCache, replay: ReplayFn | None,
                   geometry: MaskGeometry, stats: dict[str, float],
                   empty_on_single_candidate: bool = True) -> VideoResult:
    cfg = predictor.cfg
    kept = tracker.hub.kept_records(tracker.video_start, tracker.num_frames)
    cands = assemble_candidates(kept, frame_embeds, seg_logits, cfg.refiner.offline_topk_num,
                                cfg.tracker.num_new_ins, tracker.video_start,
                                sequence=tracker.candidate_sequence)
    stats = dict(stats, candidates=float(cands.count), tracked_candidates=float(
        sum(1 for i in cands.track_ids if i >= 0)))
    if cands.count == 0 or (cands.count == 1 and empty_on_single_candidate):
        return VideoResult(instances=[], num_frames=tracker.num_frames, mask_source="refiner",
                           frame_masks=iter(()), stats=stats)
    refined, logits = refine(predictor, cands, frame_embeds)
    instances, candidates = instances_from_pairs(select_top_pairs(logits, cfg.test.max_num),
                                                 cands.track_ids)
    if not instances:
        masks: Iterator[FrameMasks] = (
            FrameMasks(t, np.zeros((0, *geometry.output), dtype=bool))
            for t in range(tracker.num_frames))
    else:
        masks = _iter_offline_masks(predictor, refined, candidates, cache, replay, geometry)
    return VideoResult(instances=instances, num_frames=tracker.num_frames, mask_source="refiner",
                       frame_masks=masks, stats=stats)

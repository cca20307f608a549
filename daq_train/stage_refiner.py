"""Stage 3: the offline temporal refiner on frozen segmenter + tracker outputs (SPEC §4.3).

One step = one clip (``num_frames`` contiguous frames, reversed in time with ``reverse_prob``):

1. segmenter (eval, no_grad) on every frame;
2. the online tracker exactly as at inference (``daq_model.tracking.make_video_tracker``: the DAQ
   tracker or, with ``tracker.mode = referring``, the referring baseline; no_grad)
   and the offline candidate assembly (:func:`daq_model.offline.assemble_candidates`: noise filter,
   top-k records, MinVIS fill-up to Q candidates);
3. the refiner on the candidates' embedding sequences; every layer decoded (class by temporal
   activation pooling, masks per frame) -- layer outputs are recorded with forward hooks on the
   refiner's FFN layers, so the refiner's computation is not duplicated here;
4. the video set loss (frames stacked into one tall image, points x T), matched on the *online*
   candidates' predictions (tracker mean logits and masks, MinVIS-linked segmenter predictions)
   for the first ``self_matching_from`` of the iterations, then on each layer's own predictions.

The official training path uses the tracker's ``forward_offline_mode``, whose OVIS keep rule
averages main and slot logits (pitfall 31); we train on exactly what inference produces.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

from daq_model.dvis_daq import DVISDAQ
from daq_model.offline import OfflineCandidates, assemble_candidates
from daq_model.refiner import TemporalRefiner
from daq_model.track_state import SequentialIds
from daq_model.tracking import make_video_tracker
from daq_train.config import TrainConfig
from daq_train.criterion import VideoSetCriterion, VideoTarget
from daq_train.engine import Stateful
from daq_train.model_setup import set_stage_modes
from daq_train.sampler import ClipSampler, ClipSettings
from daq_train.stage_segmenter import loss_settings
from daq_train.stage_tracker import SegmenterFrames, run_frozen_segmenter

logger = logging.getLogger(__name__)

ABSENT_LOGIT = -1e4  # mask logit of frames where a track has no entry (official full_masks fill)


@torch.no_grad()
def online_candidates(model: DVISDAQ, seg: SegmenterFrames) -> tuple[OfflineCandidates, Tensor]:
    """Track the clip with the frozen tracker and assemble the refiner's candidates.

    Returns the candidates and their online mask predictions ``(q, T, h, w)``: a record's tracker
    masks in the frames it has an entry (``-1e4`` elsewhere), a MinVIS candidate's linked
    segmenter masks.
    """
    cfg = model.cfg
    table = model.sem_seg_head.predictor.query_feat.weight
    tracker = make_video_tracker(model.tracker, cfg, table, SequentialIds(), keep_embeds=True)
    num_frames, _, h, w = seg.masks.shape
    per_track: dict[int, dict[int, Tensor]] = {}
    for t in range(num_frames):
        step = tracker.step(seg.logits[t], seg.masks[t], seg.embeds[t], seg.mask_features[t])
        for row, track_id, _valid in step.decision.entries:
            per_track.setdefault(track_id, {})[t] = step.output.masks[row]
    kept = tracker.hub.kept_records(0, num_frames)
    cands = assemble_candidates(kept, seg.embeds, seg.logits, cfg.refiner.offline_topk_num,
                                cfg.tracker.num_new_ins, sequence=tracker.candidate_sequence)
    masks = seg.masks.new_full((cands.count, num_frames, h, w), ABSENT_LOGIT)
    for i, track_id in enumerate(cands.track_ids):
        if track_id < 0:
            continue
        for t, mask in per_track.get(track_id, {}).items():
            masks[i, t] = mask
    if cands.minvis is not None and cands.minvis_index is not None:
        first = cands.count - int(cands.minvis_index.numel())
        rows = cands.minvis.perm[:, cands.minvis_index]  # (T, n)
        frames = torch.arange(num_frames)[:, None].expand_as(rows)
        masks[first:] = seg.masks[frames, rows].transpose(0, 1)
    return cands, masks


@contextmanager
def _record_layers(refiner: TemporalRefiner) -> Iterator[list[Tensor]]:
    outputs: list[Tensor] = []

    def hook(_m: nn.Module, _inputs: tuple, output: Tensor) -> None:
        outputs.append(output.transpose(0, 1))  # (q, T, C) -> (T, q, C)

    handles = [layer.register_forward_hook(hook) for layer in refiner.transformer_ffn_layers]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


def refiner_predictions(refiner: TemporalRefiner, instance_embeds: Tensor, frame_embeds: Tensor,
                        mask_features: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Every refiner layer's ``(logits (q, K+1), masks (q, T, h, w))``; last = final."""
    with _record_layers(refiner) as layers:
        final = refiner(instance_embeds, frame_embeds)
    if len(layers) != refiner.num_layers or not torch.equal(layers[-1], final):
        raise RuntimeError("refiner layer outputs could not be recorded: TemporalRefiner.forward "
                           "changed structure")
    return [(refiner.class_logits(x), refiner.frame_masks(x, mask_features)) for x in layers]


class RefinerLoss(Stateful):
    """``iteration -> weighted losses`` of stage 3 (no state beyond the sampler's)."""

    def __init__(self, model: DVISDAQ, sampler: ClipSampler, train_cfg: TrainConfig) -> None:
        if model.refiner is None:
            raise ValueError(f"model {model.cfg.name!r} is online: it has no refiner")
        self.model = model
        self.sampler = sampler
        self.cfg = train_cfg.refiner
        self.weights, self.costs, self.points = loss_settings(model, train_cfg)
        self.criterion = VideoSetCriterion(model.cfg.num_classes, self.weights, self.costs, self.points)
        self.switch_iter = int(self.cfg.self_matching_from * self.cfg.iters)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def __call__(self, iteration: int) -> dict[str, Tensor]:
        set_stage_modes(self.model, "refiner")
        device = self.model.device
        settings = ClipSettings(self.cfg.num_frames, self.cfg.frame_range, self.cfg.reverse_prob,
                                self.model.cfg.segmenter.size_divisibility)
        clip = self.sampler.sample_clip(iteration, settings)
        seg = run_frozen_segmenter(self.model, clip.images.to(device))
        cands, online_masks = online_candidates(self.model, seg)
        assert self.model.refiner is not None
        predictions = refiner_predictions(self.model.refiner, cands.instance_embeds.detach(),
                                          seg.embeds, seg.mask_features)
        targets = clip.targets.to(device)
        target = VideoTarget(targets.labels, targets.masks)
        indices = None
        if iteration < self.switch_iter:
            indices = self.criterion.match(cands.online_logits.to(device), online_masks, target)
        losses = self.criterion(predictions, target, indices)
        return {k: v * self.weights.for_key(k) for k, v in losses.items()}


def refiner_loss_fn(model: DVISDAQ, sampler: ClipSampler, train_cfg: TrainConfig
                    ) -> tuple[RefinerLoss, dict[str, Stateful]]:
    return RefinerLoss(model, sampler, train_cfg), {}

"""Stage 2: the DAQ tracker on a frozen segmenter, with emergence/disappearance simulation (SPEC §4.2).

One step = one clip:

1. the frozen segmenter (eval, no_grad) gives per frame logits, masks, query embeddings and mask
   features; the frame matcher pairs its queries with the frame's valid GT (``valid`` queries and
   their auxiliary targets are kept for the disappearance simulation);
2. frame 0: the tracker runs on the segmenter queries (rows = queries, matching = the frame
   matcher's); later frames: carried track queries + emerging anchor queries, matched with the
   new-instance matcher (carried pairs kept, new GT matched to emerging rows only);
3. propagation to the next frame, with gradient (BPTT through the clip) and EMA anchors
   (``daq_model.track_state.ema_anchor_update``, differentiable): in the short-clip phase the
   matched rows minus the lower-scoring half (emergence simulation: dropped objects must re-emerge
   through the emerging queries); in the full-clip phase every row with fg above
   ``training_select_threshold``, less each matched track with probability
   ``full_clip_emergence_drop`` (emergence simulation in full clips, 0 = official); with
   ``keep_disappeared_tracks`` also every track whose object is absent in this frame, whatever its
   score, without an anchor update, as inference keeps an invalid track for up to 7 frames (a
   returning object is then supervised on its own track, and emerging queries learn "no object"
   for it);
4. full-clip phase, frames >= 1, more than ``min_tracks_for_disappearance`` carried tracks: one
   carried object is hidden from the slot branch (its segmenter queries masked out of the slot
   cross-attention) and the slot branch must call it "no object" (disappearance simulation);
5. losses: the DAQ clip loss over all frames for the main branch (input + every layer), and over
   frames >= 1 for the slot branch (every layer, targets = the carried pairs), weighted 2/5/5;
   in frames >= 1 a positive on an emerging row has its class weight multiplied by
   ``emerging_positive_weight``, and a "no object" emerging row whose mask duplicates a positive
   of the frame (IoU >= ``emerging_duplicate_iou``) by ``emerging_duplicate_weight`` (1 = official).

``tracker.daq = false`` trains the referring-tracker baseline instead (steps 2-5 replaced by
:func:`daq_train.stage_referring.referring_clip`; the model config must have
``tracker.mode = referring``, which :func:`daq_train.run.make_model_config` sets).

Deliberate differences from the official code (all training-only):

* the phase switch is a function of the (checkpointed) iteration, not a per-process counter
  (pitfall 25), so a resumed run continues in the right phase;
* the short sub-clip starts uniformly anywhere in the sampled clip (the official start draw only
  ever picks frames (0, 1) or (1, 2) of a 5-frame clip, pitfall 26);
* a simulated disappearance is only supervised if at least one segmenter query was actually
  hidden; the official aliasing that also makes it a main-branch negative (pitfall 27) is off by
  default (``simulated_disappearance_main_negative``).
"""

from __future__ import annotations

import logging
import random
from collections import deque
from dataclasses import dataclass

import torch
from torch import Tensor

from daq_model.dvis_daq import DVISDAQ
from daq_model.track_state import TrackRecord, ema_anchor_update
from daq_train.config import TrainConfig
from daq_train.criterion import (FrameOutput, FrameTarget, clip_losses, duplicate_emerging_rows,
                                 supervised_pairs)
from daq_train.data import ClipTargets, select_frames
from daq_train.engine import Stateful
from daq_train.matcher import FrameMatch, foreground_score, match_frame, match_new_instances
from daq_train.model_setup import set_stage_modes
from daq_train.prefetch import SegmenterPrefetcher
from daq_train.sampler import ClipSampler, ClipSettings
from daq_train.stage_referring import referring_clip
from daq_train.stage_segmenter import loss_settings
from daq_train.tracker_step import tracker_frame_for_training

logger = logging.getLogger(__name__)


@dataclass
class SegmenterFrames:
    """Frozen segmenter outputs of a clip (no gradient)."""

    logits: Tensor  # (T, Q, K+1)
    masks: Tensor  # (T, Q, h, w)
    embeds: Tensor  # (T, Q, C)
    mask_features: Tensor  # (T, C, h, w)


@torch.no_grad()
def run_frozen_segmenter(model: DVISDAQ, images: Tensor) -> SegmenterFrames:
    out = model.forward_features(images, keep_aux_masks=False)
    return SegmenterFrames(out.pred_logits.float(), out.pred_masks.float(), out.pred_embds.float(),
                           out.mask_features.float())


@dataclass
class Tracks:
    """Carried tracks between frames: query contents (with gradient), EMA anchor records, and the
    (track row, GT) pairs of the rows that have a GT."""

    queries: Tensor | None
    records: list[TrackRecord]
    carried: tuple[Tensor, Tensor]

    def anchors(self) -> Tensor | None:
        if self.queries is None:
            return None
        if not self.records:
            return self.queries.new_zeros(self.queries.shape)
        return torch.stack([r.anchor for r in self.records])  # type: ignore[misc]


class TrackerLoss(Stateful):
    """``iteration -> weighted losses`` of stage 2; its RNG (sub-clips, disappearance picks) is
    part of the training state."""

    def __init__(self, model: DVISDAQ, sampler: ClipSampler, train_cfg: TrainConfig,
                 prefetch: bool = True) -> None:
        self.model = model
        self.cfg = train_cfg.tracker
        self.referring = not self.cfg.daq
        if self.referring != (model.cfg.tracker.mode == "referring"):
            raise ValueError(
                f"train config tracker.daq={self.cfg.daq} but the model config's tracker.mode is "
                f"{model.cfg.tracker.mode!r} (tracker.daq=false trains tracker.mode=referring)")
        if self.referring:
            logger.info("tracker stage in referring mode (ablation baseline): emergence / "
                        "disappearance simulation do not apply")
        self.weights, self.costs, self.points = loss_settings(model, train_cfg)
        self.num_classes = model.cfg.num_classes
        self.rng = random.Random(train_cfg.seed * 7919 + 2)
        self.stats: dict[str, float] = {}
        # on CPU, full clips (and their frozen segmenter pass) are prepared one step ahead on a
        # second thread; shorter clips are cut with self.rng, so they are drawn when needed (on
        # CUDA the kernels already run asynchronously, and autocast is per thread)
        prefetching = prefetch and model.device.type == "cpu"
        self.clips = SegmenterPrefetcher(
            sampler, ClipSettings(self.cfg.num_frames, self.cfg.frame_range),
            lambda clip: run_frozen_segmenter(model, clip.images.to(model.device)),
            prefetch_from=self.cfg.full_clip_from if prefetching else None)
        if prefetching:
            logger.info("tracker stage: from iteration %d the next clip and its frozen segmenter pass are "
                        "prepared on a second thread (on C cores, --threads C-1 is fastest)",
                        self.cfg.full_clip_from)

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))

    # ------------------------------------------------------------------------------------------

    def full_clip(self, iteration: int) -> bool:
        return iteration >= self.cfg.full_clip_from

    def _short_clip(self, iteration: int) -> tuple[ClipTargets, Tensor, SegmenterFrames]:
        """A clip of the short-clip phase: frames cut with self.rng, segmented when needed."""
        clip = self.clips.draw(iteration)
        targets, images = clip.targets, clip.images
        if clip.num_frames > self.cfg.short_clip_frames:
            n = self.cfg.short_clip_frames
            start = self.rng.randint(0, clip.num_frames - n)
            frames = list(range(start, start + n))
            targets, images = select_frames(targets, frames), images[start:start + n]
        return targets, images, run_frozen_segmenter(self.model, images.to(self.model.device))

    def __call__(self, iteration: int) -> dict[str, Tensor]:
        set_stage_modes(self.model, "tracker")
        device = self.model.device
        full = self.full_clip(iteration)
        if full:
            clip, seg = self.clips.get(iteration)
            targets, images = clip.targets, clip.images
        else:
            targets, images, seg = self._short_clip(iteration)
        targets = targets.to(device)
        frame_targets = [FrameTarget(*self._frame(targets, t)) for t in range(images.shape[0])]
        thr = self.model.cfg.tracker.aux_inference_select_threshold
        matches = [match_frame(seg.logits[t], seg.masks[t], ft.labels, ft.masks, ft.valid, self.costs, thr)
                   for t, ft in enumerate(frame_targets)]
        if self.referring:
            main_out = referring_clip(self.model, seg.embeds, seg.masks, seg.mask_features,
                                      frame_targets, matches, self.costs)
            slot_out: list[FrameOutput] = []
            self.stats = {}
        else:
            main_out, slot_out = self.track_clip(seg, frame_targets, matches, full)
        losses = clip_losses(main_out, frame_targets, self.num_classes, self.weights, self.points,
                             self.cfg.emerging_positive_weight, self.cfg.emerging_duplicate_weight)
        result = {k: v * self.weights.for_key(k) for k, v in losses.items()}
        if slot_out:
            slot = clip_losses(slot_out, frame_targets[1:], self.num_classes, self.weights, self.points)
            result.update({"slot_" + k: v * self.weights.for_key(k) for k, v in slot.items()})
        return result

    @staticmethod
    def _frame(targets, t: int) -> tuple[Tensor, Tensor, Tensor]:
        return targets.labels, targets.masks[:, t], targets.valid[:, t]

    def track_clip(self, seg: SegmenterFrames, frame_targets: list[FrameTarget],
                   matches: list[FrameMatch], full: bool) -> tuple[list[FrameOutput], list[FrameOutput]]:
        tracker = self.model.tracker
        table = self.model.sem_seg_head.predictor.query_feat.weight.detach()
        device = seg.logits.device
        empty = (torch.zeros(0, dtype=torch.int64, device=device),) * 2
        tracks = Tracks(None, [], empty)
        main_out: list[FrameOutput] = []
        slot_out: list[FrameOutput] = []
        hidden_count, duplicate_count = 0, 0
        for t, target in enumerate(frame_targets):
            valid_now = target.valid.bool()
            disappeared = [int(g) for g in tracks.carried[1].tolist() if not bool(valid_now[g])]
            slot_mask, simulated = None, None
            if t > 0 and full and self.cfg.disappearance_simulation:
                slot_mask, simulated = self._simulate_disappearance(tracks, matches[t], tracker.num_slots)
                hidden_count += simulated is not None
            step = tracker_frame_for_training(
                tracker, seg.embeds[t], seg.mask_features[t], seg.masks[t], table,
                tracks.queries, tracks.anchors(), slot_memory_mask=slot_mask)
            out = step.output
            if t == 0:
                indices = matches[0].indices
            else:
                indices = match_new_instances(out.logits, out.masks, target.labels, target.masks,
                                              target.valid, tracks.carried, tracker.num_new_ins, self.costs)
            main_neg = list(disappeared)
            if simulated is not None and disappeared and self.cfg.simulated_disappearance_main_negative:
                main_neg.append(simulated)
            duplicates = None
            if t > 0 and self.cfg.emerging_duplicate_weight != 1.0:
                duplicates = self._duplicates(step.main_masks[-1], out.num_tracks, indices, target,
                                              main_neg)
                duplicate_count += int(duplicates.numel())
            main_out.append(FrameOutput(step.main_logits, step.main_masks, indices, main_neg,
                                        first_emerging_row=out.num_tracks if t > 0 else None,
                                        duplicate_rows=duplicates))
            if t > 0:
                slot_neg = disappeared + ([simulated] if simulated is not None else [])
                slot_out.append(FrameOutput(step.slot_logits, step.slot_masks, tracks.carried, slot_neg))
            tracks = self._propagate(tracks, out, indices, full, t, valid_now)
        self.stats = {"simulated_disappearances": float(hidden_count),
                      "duplicate_emerging_rows": float(duplicate_count)}
        return main_out, slot_out

    def _duplicates(self, masks: Tensor, num_tracks: int, indices: tuple[Tensor, Tensor],
                    target: FrameTarget, negatives: list[int]) -> Tensor:
        """Emerging rows of this frame that duplicate one of its positives (the valid, non-negative
        pairs ``clip_losses`` supervises)."""
        rows, cols = supervised_pairs(indices, target.valid, negatives)
        return duplicate_emerging_rows(masks, num_tracks, rows, target.masks[cols],
                                       self.cfg.emerging_duplicate_iou)

    def _simulate_disappearance(self, tracks: Tracks, match: FrameMatch, num_slots: int
                                ) -> tuple[Tensor | None, int | None]:
        rows, gts = tracks.carried
        if rows.numel() <= self.cfg.min_tracks_for_disappearance:
            return None, None
        g = int(gts[self.rng.randrange(rows.numel())])
        hidden = match.aux_targets == g
        if not bool(hidden.any()) or bool(hidden.all()):
            return None, None  # nothing to hide, or nothing left to attend to
        num_rows = (0 if tracks.queries is None else tracks.queries.shape[0]) + num_slots
        return hidden[None, :].expand(num_rows, -1).contiguous(), g

    def _propagate(self, tracks: Tracks, out, indices: tuple[Tensor, Tensor], full: bool, t: int,
                   gt_valid: Tensor | None = None) -> Tracks:
        rows, gts = indices
        num_rows = out.logits.shape[0]
        target_of_row = torch.full((num_rows,), -1, dtype=torch.int64, device=rows.device)
        target_of_row[rows] = gts
        scores = foreground_score(out.logits.detach())
        above = scores > self.model.cfg.tracker.training_select_threshold
        if full:
            active = above.clone()
            drop = self.cfg.full_clip_emergence_drop
            if self.cfg.emergence_simulation and drop > 0:
                for row in rows[active[rows]].tolist():
                    if self.rng.random() < drop:
                        active[row] = False
            if self.cfg.keep_disappeared_tracks and gt_valid is not None and rows.numel():
                active[rows[~gt_valid.to(torch.bool).to(gts.device)[gts]]] = True
        else:
            active = torch.zeros(num_rows, dtype=torch.bool, device=rows.device)
            active[rows] = True
            if self.cfg.emergence_simulation and rows.numel() > 1:
                order = torch.argsort(scores[rows])
                active[rows[order[: rows.numel() // 2]]] = False
        keep = torch.nonzero(active).squeeze(1)
        num_tracks = out.num_tracks
        history = max(self.model.cfg.tracker.anchor_history - 1, 1)
        records = []
        for k in keep.tolist():
            if k < num_tracks:
                record = tracks.records[k]
            else:
                record = TrackRecord(track_id=k, start=t, last_query=out.queries[k],
                                     prev_anchors=deque(maxlen=history))
            if bool(above[k]) or not full:
                ema_anchor_update(record, out.anchors[k])  # inference: no update while invalid
            records.append(record)
        kept_targets = target_of_row[keep]
        has_gt = torch.nonzero(kept_targets >= 0).squeeze(1)
        return Tracks(out.queries[keep], records, (has_gt, kept_targets[has_gt]))


def tracker_loss_fn(model: DVISDAQ, sampler: ClipSampler, train_cfg: TrainConfig
                    ) -> tuple[TrackerLoss, dict[str, Stateful]]:
    loss = TrackerLoss(model, sampler, train_cfg)
    # the prefetcher stands in for the sampler in the resumable state (its state excludes the
    # clip drawn ahead)
    return loss, {"tracker_loss": loss, "sampler": loss.clips}

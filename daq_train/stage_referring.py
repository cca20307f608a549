"""Stage 2 in referring-tracker mode: the ablation baseline "plain referring tracker (DVIS-style
anchors)" (``tracker.daq = false``; the model config's ``tracker.mode = referring``).

The tracker runs exactly as at inference (:class:`daq_model.referring.ReferringVideoTracker`), with
gradient: Q persistent slots; frame 0 = the DAQ first frame (slot i is segmenter query i); later
frames link this frame's segmenter queries to the slots by Hungarian matching on the cosine of the
segmenter embeddings (:func:`daq_model.referring.link_slots`) and run the main branch on the slots'
previous outputs (back-propagation through time across the clip) with the matched queries'
anchors as query positions.

Per-frame matching, the analogue of the DAQ matchers:

* frame 0: the frame matcher's (segmenter query, GT) pairs -- slots are the segmenter queries;
* later frames: every slot keeps the GT it held in the previous frame (also while that GT is
  absent: then it is a "no object" row, and a positive again when the GT reappears); GT valid now
  and held by no slot are Hungarian-matched (class + mask cost on the tracker's own predictions)
  into the slots that hold no GT.

Losses: the DAQ clip loss of the main branch (input queries + every layer, weights 2/5/5). No
emergence/disappearance simulation (there are no emerging queries, the slot branch does not run);
all slots propagate. The clip-length schedule (2-frame sub-clips until ``full_clip_from``) is the
same as for the DAQ tracker, so both see the same data.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from daq_model.dvis_daq import DVISDAQ
from daq_model.referring import link_slots
from daq_train.criterion import FrameOutput, FrameTarget
from daq_train.matcher import FrameMatch, MatchCosts, match_into_free_rows
from daq_train.tracker_step import referring_frame_for_training

logger = logging.getLogger(__name__)


def free_slots(num_slots: int, carried_rows: Tensor) -> Tensor:
    """The slots (ascending) that hold no GT."""
    free = torch.ones(num_slots, dtype=torch.bool)
    free[carried_rows.cpu()] = False
    return torch.nonzero(free).squeeze(1)


def referring_clip(model: DVISDAQ, embeds: Tensor, masks: Tensor, mask_features: Tensor,
                   frame_targets: list[FrameTarget], matches: list[FrameMatch],
                   costs: MatchCosts) -> list[FrameOutput]:
    """Main-branch outputs of every frame of a clip with their (slot, GT) matchings.

    ``embeds`` (T, Q, C), ``masks`` (T, Q, h, w), ``mask_features`` (T, C, h, w): the frozen
    segmenter's outputs; ``matches``: its per-frame matchings (only frame 0's is used)."""
    tracker = model.tracker
    slot_queries: Tensor | None = None
    references: Tensor | None = None
    carried: tuple[Tensor, Tensor] | None = None
    outputs: list[FrameOutput] = []
    for t, target in enumerate(frame_targets):
        matched = None if references is None else link_slots(references, embeds[t])
        step = referring_frame_for_training(tracker, embeds[t], mask_features[t], masks[t],
                                            slot_queries, matched)
        out = step.output
        if carried is None:
            indices = matches[0].indices
        else:
            indices = match_into_free_rows(
                out.logits, out.masks, target.labels, target.masks, target.valid, carried,
                free_slots(out.logits.shape[0], carried[0]), costs)
        outputs.append(FrameOutput(step.main_logits, step.main_masks, indices))
        carried = indices
        slot_queries = out.queries  # with gradient: BPTT through the clip
        references = embeds[t] if matched is None else embeds[t][matched]
    return outputs

"""The tracker's per-frame forward for training: every layer's predictions, both branches.

Inference (:meth:`daq_model.tracker.DAQTracker.forward_frame`) decodes only the last layer. For
deep supervision training needs the class and mask predictions of the main branch's input queries
and of every layer, and of every slot-branch layer, plus a memory mask for the disappearance
simulation. Rather than copying the tracker's computation, :func:`tracker_frame_for_training`
calls ``forward_frame`` itself with hooks on its layers:

* forward hooks on ``transformer_ffn_layers[j]`` / ``slot_ffn_layers[j]`` record each layer's
  output (the query features after layer ``j``);
* a forward pre-hook on ``slot_cross_attention_layers[j]`` adds the memory mask (hidden segmenter
  queries) to the slot cross-attention, as the official training does.

Every recorded output is decoded with the tracker's shared heads on the projected mask features.
:func:`referring_frame_for_training` does the same for the referring-tracker mode (main branch
only, :meth:`~daq_model.tracker.DAQTracker.forward_referring`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor, nn

from daq_model.tracker import DAQTracker, TrackerFrameOutput


@dataclass
class TrainingFrameOutput:
    """``output``: what inference sees; ``main_logits``/``main_masks``: per prediction of the main
    branch (input queries, then layers 0..L-1; last = final); ``slot_logits``/``slot_masks``: per
    slot-branch layer (empty on the first frame)."""

    output: TrackerFrameOutput
    main_logits: list[Tensor]
    main_masks: list[Tensor]
    slot_logits: list[Tensor]
    slot_masks: list[Tensor]


@contextmanager
def _recording(tracker: DAQTracker, slot_memory_mask: Tensor | None
               ) -> Iterator[tuple[list[Tensor], list[Tensor]]]:
    main: list[Tensor] = []
    slot: list[Tensor] = []
    handles = []

    def keep(store: list[Tensor]):
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            store.append(output[:, 0])  # (rows, 1, C) sequence-first, batch 1
        return hook

    def add_mask(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        kwargs = dict(kwargs)
        kwargs["attn_mask"] = slot_memory_mask
        return args, kwargs

    try:
        for layer in tracker.transformer_ffn_layers:
            handles.append(layer.register_forward_hook(keep(main)))
        for layer in tracker.slot_ffn_layers:
            handles.append(layer.register_forward_hook(keep(slot)))
        if slot_memory_mask is not None:
            for layer in tracker.slot_cross_attention_layers:
                handles.append(layer.register_forward_pre_hook(add_mask, with_kwargs=True))
        yield main, slot
    finally:
        for h in handles:
            h.remove()


def tracker_frame_for_training(tracker: DAQTracker, frame_embeds: Tensor, mask_features: Tensor,
                               seg_masks: Tensor, seg_query_table: Tensor,
                               track_queries: Tensor | None, track_anchors: Tensor | None,
                               slot_memory_mask: Tensor | None = None) -> TrainingFrameOutput:
    """One differentiable tracker frame with every layer decoded.

    Arguments as :meth:`DAQTracker.forward_frame`; ``slot_memory_mask`` ``(num_tracks +
    num_slots, Q)`` bool, True where a segmenter query is hidden from the slot cross-attention.
    """
    with _recording(tracker, slot_memory_mask) as (main, slot):
        out = tracker.forward_frame(frame_embeds, mask_features, seg_masks, seg_query_table,
                                    track_queries, track_anchors)
    if track_queries is None:
        inputs = frame_embeds
    else:
        new = tracker.new_ins_embeds.weight.expand(tracker.num_new_ins, -1)
        inputs = torch.cat([track_queries, new])
    return _decode_layers(tracker, out, inputs, main, slot, mask_features)


def referring_frame_for_training(tracker: DAQTracker, frame_embeds: Tensor, mask_features: Tensor,
                                 seg_masks: Tensor, slot_queries: Tensor | None,
                                 matched: Tensor | None) -> TrainingFrameOutput:
    """One differentiable referring-mode frame (:meth:`DAQTracker.forward_referring`) with every
    main-branch layer decoded; the slot branch does not run (empty slot lists)."""
    with _recording(tracker, None) as (main, slot):
        out = tracker.forward_referring(frame_embeds, mask_features, seg_masks, slot_queries,
                                        matched)
    inputs = frame_embeds if slot_queries is None else slot_queries
    return _decode_layers(tracker, out, inputs, main, slot, mask_features)


def _decode_layers(tracker: DAQTracker, out: TrackerFrameOutput, inputs: Tensor,
                   main: list[Tensor], slot: list[Tensor], mask_features: Tensor
                   ) -> TrainingFrameOutput:
    """Decode the input queries and every recorded layer with the tracker's shared heads."""
    layers = tracker.num_layers
    if len(main) != layers or len(slot) not in (0, layers):
        raise RuntimeError(f"recorded {len(main)} main and {len(slot)} slot layer outputs for a "
                           f"{layers}-layer tracker: DAQTracker's frame forward changed structure")
    projected = tracker.project_mask_features(mask_features)
    main_logits, main_masks = [], []
    for queries in [inputs] + main[:-1]:
        logits, masks = tracker.heads(queries, projected)
        main_logits.append(logits)
        main_masks.append(masks)
    main_logits.append(out.logits)
    main_masks.append(out.masks)
    slot_logits, slot_masks = [], []
    for queries in slot:
        logits, masks = tracker.heads(queries, projected)
        slot_logits.append(logits)
        slot_masks.append(masks)
    return TrainingFrameOutput(out, main_logits, main_masks, slot_logits, slot_masks)

"""The non-streaming reference path: one whole video through the model, every intermediate array
under the names of the official oracle files (``dvis_daq/reference/README.md`` §3).

It runs the same building blocks as the streaming session (:class:`VideoTracker`, candidate
assembly, refiner, post-processing) but keeps everything (all frames' segmenter outputs, mask
features and per-track masks), so it is for reference cases and debugging, not for long videos.
Track ids are drawn like the official code (``random.Random(py_seed)``) unless the config says
``sequential``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from daq_model.config import DAQConfig
from daq_model.dvis_daq import DVISDAQ
from daq_model.offline import assemble_candidates
from daq_model.postprocess import MaskGeometry, masks_to_output, select_top_pairs
from daq_model.referring import ReferringVideoTracker, SlotRecord
from daq_model.tracking import TrackStep, VideoTracker, make_id_source, make_video_tracker

AnyTracker = VideoTracker | ReferringVideoTracker

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
SEGMENTER_WINDOW = 5  # the official inference runs the segmenter on windows of 5 frames


def _np(t: Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy() if t.is_floating_point() else t.detach().cpu().numpy()


@dataclass
class SegmenterRun:
    logits: Tensor  # (T, Q, K+1)
    masks: Tensor  # (T, Q, h, w)
    embeds: Tensor  # (T, Q, C)
    mask_features: Tensor  # (T, C, h, w)
    aux_logits: Tensor  # (L, T, Q, K+1)
    geometry_padded: tuple[int, int]
    image_size: tuple[int, int]


def run_segmenter(model: DVISDAQ, frames: np.ndarray, out: Arrays, debug: bool) -> SegmenterRun:
    parts: dict[str, list[Tensor]] = {k: [] for k in ("logits", "masks", "embeds", "feat", "aux")}
    padded = image = (0, 0)
    for start in range(0, frames.shape[0], SEGMENTER_WINDOW):
        pre = model.preprocess(frames[start:start + SEGMENTER_WINDOW])
        padded, image = pre.padded_size, pre.image_size
        if debug and start == 0:
            feats = model.backbone(pre.images[:1])
            for name in ("res2", "res3", "res4", "res5"):
                out[f"backbone_{name}_f0"] = _np(feats[name][0])
            mask_features, multi_scale = model.sem_seg_head.pixel_decoder(feats)
            out["pixdec_mask_features_f0"] = _np(mask_features[0])
            for i, level in enumerate(multi_scale):
                out[f"pixdec_multiscale{i}_f0"] = _np(level[0])
        seg = model.forward_features(pre.images, pre.image_size)
        parts["logits"].append(seg.pred_logits.float())
        parts["masks"].append(seg.pred_masks.float())
        parts["embeds"].append(seg.pred_embds.float())
        parts["feat"].append(seg.mask_features.float())
        parts["aux"].append(torch.stack([a.float() for a in seg.aux_logits]))
    return SegmenterRun(
        logits=torch.cat(parts["logits"]), masks=torch.cat(parts["masks"]),
        embeds=torch.cat(parts["embeds"]), mask_features=torch.cat(parts["feat"]),
        aux_logits=torch.cat(parts["aux"], dim=1), geometry_padded=padded, image_size=image)


def _record_step(out: Arrays, step: TrackStep, num_frames: int, offline: bool,
                 queries: Tensor | None, anchors: Tensor | None, dim: int) -> None:
    t = step.frame_index
    p = f"trk_f{t:02d}_"
    o = step.output
    out[p + "logits"] = _np(o.logits)
    out[p + "all_logits"] = _np(o.layer_logits)
    out[p + "query_feats"] = _np(o.queries)
    if t == num_frames - 1 or (not offline and t <= 1):
        out[p + "masks"] = _np(o.masks)
    out[p + "mask_pos_count"] = _np((o.masks > 0).sum(dim=(1, 2)).to(torch.int64))
    out[p + "track_pos"] = _np(o.anchors)
    if t >= 1:
        out[p + "frame_query_pos"] = _np(o.frame_anchors)
        if o.slot_logits is not None:  # none in referring mode
            out[p + "slot_logits"] = _np(o.slot_logits)
    out[p + "n_prev_tracks"] = np.asarray(o.num_tracks, dtype=np.int64)
    out[p + "query_seq_id"] = np.asarray(step.decision.row_ids, dtype=np.int64)
    out[p + "query_valid"] = _np(step.valid).astype(bool)
    out[p + "active_ids"] = np.asarray(step.active_ids, dtype=np.int64)
    empty = np.zeros((0, dim), dtype=np.float32)
    out[p + "track_queries_after"] = empty if queries is None else _np(queries)
    out[p + "track_pos_after"] = empty if anchors is None else _np(anchors)


def _entry_logits(record) -> tuple[np.ndarray, Tensor]:
    """Frames where the record has an entry and its logits there: every stored frame of a DAQ
    record; only the present frames of a referring slot track."""
    frames = np.arange(record.start, record.end())
    logits = record.logits.view()
    if isinstance(record, SlotRecord):
        present = np.asarray(record.appearance, dtype=bool)
        return frames[present], logits[torch.from_numpy(present)]
    return frames, logits


def _hub_arrays(out: Arrays, tracker: AnyTracker, num_frames: int, dim: int) -> None:
    records = list(tracker.hub.records.values())
    appearance = np.full((len(records), num_frames), -1, dtype=np.int8)
    for i, r in enumerate(records):
        appearance[i, r.start: r.start + r.length] = np.asarray(r.appearance, dtype=np.int8)
    out["hub_ids"] = np.asarray([r.track_id for r in records], dtype=np.int64)
    out["hub_start"] = np.asarray([r.start for r in records], dtype=np.int64)
    out["hub_len"] = np.asarray([r.length for r in records], dtype=np.int64)
    out["hub_dead"] = np.asarray([r.dead for r in records], dtype=bool)
    out["hub_invalid_frames"] = np.asarray([r.invalid for r in records], dtype=np.int64)
    out["hub_appearance"] = appearance
    out["hub_sg_pos"] = (np.stack([_np(r.anchor) for r in records]) if records
                         else np.zeros((0, dim), dtype=np.float32))
    out["hub_mean_logits"] = (np.stack([_np(_entry_logits(r)[1].mean(0)) for r in records])
                              if records else np.zeros((0, tracker.cfg.num_classes + 1), np.float32))


def _vis_arrays(out: Arrays, logits: Tensor, candidate_masks, max_num: int,
                geometry: MaskGeometry) -> None:
    """``candidate_masks(c) -> (T, h, w)`` mask logits of candidate c."""
    top = select_top_pairs(logits, max_num)
    out["vis_scores"] = _np(top.scores).astype(np.float32)
    out["vis_labels"] = _np(top.labels).astype(np.int64)
    out["vis_ids"] = _np(top.candidates).astype(np.int64)
    masks = [masks_to_output(candidate_masks(int(c)), geometry) for c in top.candidates]
    h, w = geometry.output
    out["vis_masks"] = (torch.stack(masks).numpy() if masks
                        else np.zeros((0, 0, h, w), dtype=bool))
    # official quirk: the empty result reports the resized (not the output) size
    out["vis_image_size"] = np.asarray(geometry.output if masks else geometry.image, np.int64)


def run_reference(model: DVISDAQ, frames: np.ndarray, output_hw: tuple[int, int],
                  py_seed: int = 0, debug_features: bool | None = None) -> Arrays:
    """Run ``model`` on RGB uint8 ``frames`` (T, H, W, 3) and return every reference array."""
    cfg: DAQConfig = model.cfg
    out: Arrays = {}
    num_frames = int(frames.shape[0])
    debug = (not cfg.offline) if debug_features is None else debug_features
    dim = cfg.segmenter.hidden_dim
    with torch.inference_mode():
        seg = run_segmenter(model, frames, out, debug)
        out["seg_pred_logits"] = _np(seg.logits)
        if not cfg.offline:
            out["seg_pred_masks"] = _np(seg.masks)
        out["seg_pred_embds"] = _np(seg.embeds)
        out["seg_aux_logits"] = _np(seg.aux_logits)
        geometry = MaskGeometry(padded=seg.geometry_padded, image=seg.image_size,
                                output=tuple(int(v) for v in output_hw))
        ids = make_id_source(cfg.inference.track_ids, random.Random(int(py_seed)))
        tracker = make_video_tracker(model.tracker, cfg,
                                     model.sem_seg_head.predictor.query_feat.weight, ids,
                                     keep_embeds=cfg.offline, keep_history=True)
        track_masks: dict[int, dict[int, Tensor]] = {}
        active_counts = []
        for t in range(num_frames):
            step = tracker.step(seg.logits[t], seg.masks[t], seg.embeds[t], seg.mask_features[t],
                                layer_logits=True)
            _, queries, anchors = tracker.hub.track_queries()
            _record_step(out, step, num_frames, cfg.offline, queries, anchors, dim)
            active_counts.append(len(step.active_ids))
            if not cfg.offline:
                for row, track_id, _ in step.decision.entries:
                    track_masks.setdefault(track_id, {})[t] = step.output.masks[row].float()
        out["trk_num_active"] = np.asarray(active_counts, dtype=np.int64)
        _hub_arrays(out, tracker, num_frames, dim)
        if cfg.offline:
            _offline_arrays(out, model, tracker, seg, geometry)
        else:
            _online_arrays(out, tracker, track_masks, seg, geometry)
    return out


def _online_arrays(out: Arrays, tracker: AnyTracker, track_masks: dict[int, dict[int, Tensor]],
                   seg: SegmenterRun, geometry: MaskGeometry) -> None:
    cfg = tracker.cfg
    num_frames = tracker.num_frames
    kept = tracker.hub.kept_records(0, num_frames)
    num_logits = cfg.num_classes + 1
    full = np.full((len(kept), num_frames, num_logits), -1e4, dtype=np.float32)
    full[..., -1] = 1.0
    padding = np.ones((len(kept), num_frames), dtype=bool)
    entries = [_entry_logits(r) for r in kept]
    for i, (frames, record_logits) in enumerate(entries):
        full[i, frames] = _np(record_logits)
        padding[i, frames] = False
    logits = (torch.stack([record_logits.mean(0) for _, record_logits in entries]) if kept
              else torch.zeros((0, num_logits)))
    out["agg_pred_logits"] = _np(logits)
    out["agg_pred_ids"] = np.asarray([r.track_id for r in kept], dtype=np.int64)
    out["agg_padding_masks"] = padding
    out["agg_full_logits"] = full
    h, w = seg.masks.shape[-2:]

    def candidate_masks(c: int) -> Tensor:
        full_masks = torch.full((num_frames, h, w), -1e4)
        for t, mask in track_masks[kept[c].track_id].items():
            full_masks[t] = mask
        return full_masks

    _vis_arrays(out, logits, candidate_masks, cfg.test.max_num, geometry)


def _offline_arrays(out: Arrays, model: DVISDAQ, tracker: AnyTracker, seg: SegmenterRun,
                    geometry: MaskGeometry) -> None:
    cfg = tracker.cfg
    kept = tracker.hub.kept_records(0, tracker.num_frames)
    cands = assemble_candidates(kept, seg.embeds, seg.logits, cfg.refiner.offline_topk_num,
                                cfg.tracker.num_new_ins, sequence=tracker.candidate_sequence)
    out["common_seq_id_list"] = np.asarray(cands.official_ids, dtype=np.int64)
    out["common_online_logits"] = _np(cands.online_logits)[None]
    out["refiner_in_instance_embeds"] = _np(cands.instance_embeds.permute(2, 0, 1))[None]
    out["refiner_in_padding_mask"] = cands.padding.numpy()[None]
    if cands.minvis is not None:
        link = cands.minvis
        every = torch.arange(link.perm.shape[1])
        out["minvis_pred_logits"] = _np(link.mean_logits)[None]
        out["minvis_pred_embds"] = _np(link.embeds(seg.embeds, every).transpose(0, 1))[None]
        linked_masks = torch.stack([seg.masks[t, link.perm[t]] for t in range(len(link.perm))])
        out["minvis_pred_masks"] = _np(linked_masks.transpose(0, 1))[None]
        out["refiner_in_minvis_index"] = _np(cands.minvis_index).astype(np.int64)
    if cands.count == 0 or cands.count == 1:  # official quirk: one candidate -> empty result
        out["agg_pred_logits"] = np.zeros((0, cfg.num_classes + 1), dtype=np.float32)
        out["agg_pred_ids"] = np.zeros((0,), dtype=np.int64)
        _vis_arrays(out, torch.zeros((0, cfg.num_classes + 1)), None, cfg.test.max_num, geometry)
        return
    refiner = model.refiner
    refined = refiner(cands.instance_embeds, seg.embeds)
    logits = refiner.class_logits(refined).float()
    window = max(1, cfg.refiner.mask_window_size)
    masks = torch.cat([refiner.frame_masks(refined[s:s + window], seg.mask_features[s:s + window])
                       for s in range(0, refined.shape[0], window)], dim=1).float()
    out["refiner_pred_logits"] = _np(logits)[None, None].repeat(refined.shape[0], axis=1)
    out["refiner_pred_masks"] = _np(masks)[None]
    out["refiner_pred_embds"] = _np(refined.permute(2, 0, 1))[None]
    out["agg_pred_logits"] = _np(logits)
    out["agg_pred_ids"] = np.asarray(cands.official_ids, dtype=np.int64)
    _vis_arrays(out, logits, lambda c: masks[c], cfg.test.max_num, geometry)

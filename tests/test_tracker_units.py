"""Unit tests of the tracker's state rules, slot attention, offline assembly and post-processing
(small synthetic inputs; the end-to-end numerics are in test_reference_*.py)."""

from __future__ import annotations

import random
from collections import deque

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from daq_model.config import small_config
from daq_model.offline import assemble_candidates, minvis_link, minvis_synthetic_id
from daq_model.postprocess import MaskGeometry, masks_to_output, select_top_pairs
from daq_model.refiner import TemporalRefiner
from daq_model.slot_attention import SlotAttention
from daq_model.track_state import (OfficialIds, SequentialIds, TrackHub, TrackRecord,
                                   ema_anchor_update)
from daq_model.tracker import DAQTracker

C = 8


def _hub(ids=None, keep_embeds=False, keep_history=True, noise=5) -> TrackHub:
    return TrackHub(ids or SequentialIds(), kick_out=8, anchor_history=10, noise_frame_num=noise,
                    keep_embeds=keep_embeds, keep_history=keep_history)


def _frame(hub: TrackHub, t: int, valid: list[bool], seed: int = 0):
    g = torch.Generator().manual_seed(seed * 1000 + t)
    rows = len(valid)
    return hub.update(t, torch.randn(rows, C, generator=g), torch.randn(rows, 4, generator=g),
                      torch.randn(rows, C, generator=g), torch.tensor(valid), len(hub.active))


def test_ema_anchor_uses_at_most_nine_previous_anchors():
    anchors = [torch.randn(C, generator=torch.Generator().manual_seed(i)) for i in range(12)]
    record = TrackRecord(track_id=0, start=0, last_query=torch.zeros(C),
                         prev_anchors=deque(maxlen=9))
    expected = None
    for i, p in enumerate(anchors):
        ema_anchor_update(record, p)
        if i == 0:
            expected = p
        else:
            prev = torch.stack(anchors[max(0, i - 9): i])
            beta = float((F.normalize(prev, dim=-1) @ F.normalize(p, dim=0)).mean())
            if beta > 0:
                expected = (1 - beta) * expected + beta * p
        assert torch.allclose(record.anchor, expected, atol=1e-6)
    assert len(record.prev_anchors) == 9


def test_official_ids_follow_python_random_and_skip_issued_ids():
    ids = OfficialIds(random.Random(42))
    mirror = random.Random(42)
    first = ids.draw()
    assert first == mirror.randint(0, 100_000)
    ids.issue(first)
    # a collision is re-drawn: force one by issuing the next value the generator will produce
    upcoming = random.Random()
    upcoming.setstate(ids.rng.getstate())
    ids.issue(upcoming.randint(0, 100_000))
    second = ids.draw()
    assert second not in (first,) and second == upcoming.randint(0, 100_000)


def test_bookkeeping_order_kick_out_and_noise_filter():
    hub = _hub(noise=5)
    decision = _frame(hub, 0, [True, False, True])
    assert decision.row_ids == [0, -1, 1] and hub.active == [0, 1]
    # track 0 valid, track 1 invalid (carried), emerging row 2 starts track 2
    decision = _frame(hub, 1, [True, False, True, False])
    assert decision.row_ids == [0, 1, 2, -1]
    assert hub.active == [0, 1, 2] and [e[2] for e in decision.entries] == [True, False, True]
    anchor_before = hub.records[1].anchor.clone()
    # track 1 stays invalid: killed on its 8th consecutive invalid frame (frame 8)
    for t in range(2, 8):
        decision = _frame(hub, t, [True, False, True, False])
        assert 1 in hub.active and torch.equal(hub.records[1].anchor, anchor_before)
    decision = _frame(hub, 8, [True, False, True, False])
    assert decision.row_ids[1] == -1 and hub.active == [0, 2] and hub.records[1].dead
    assert hub.records[1].length == 8  # 1 valid + 7 carried frames
    # a track started at the last frame is kept (reaches the end), a dead short one is not
    _frame(hub, 9, [True, True, True])
    kept = [r.track_id for r in hub.kept_records(0, 10)]
    assert kept == [0, 1, 2, 3]
    assert [r.track_id for r in hub.kept_records(0, 11)] == [0, 1, 2]


def test_short_dead_records_are_released_without_history():
    hub = _hub(keep_history=False, noise=5)
    _frame(hub, 0, [True, True])
    for t in range(1, 9):
        _frame(hub, t, [True, False] + [False] * 2)
    assert hub.num_killed == 1 and hub.num_released == 0  # 8 frames >= noise: still needed
    hub2 = _hub(keep_history=False, noise=10)
    _frame(hub2, 0, [True, True])
    for t in range(1, 9):
        _frame(hub2, t, [True, False] + [False] * 2)
    assert hub2.num_released == 1 and list(hub2.records) == [0]


def test_slot_attention_normalises_over_slots_then_inputs():
    torch.manual_seed(0)
    attn = SlotAttention(C).eval()
    values, keys, slots = torch.randn(1, 6, C), torch.randn(1, 6, C), torch.randn(1, 6, C)
    k = attn.project_k(attn.norm_inputs(keys))
    q = attn.project_q(slots)
    w = (k @ q.transpose(1, 2) / C ** 0.5).softmax(-1) + 1e-6
    w = w / w.sum(dim=1, keepdim=True)
    assert torch.allclose(w.sum(dim=1), torch.ones(1, 6))
    assert torch.allclose(attn(values, keys, slots), w.transpose(1, 2) @ values, atol=1e-6)


def test_initial_slot_assignment_arg_min_then_hungarian():
    table = torch.eye(4)
    rows = torch.tensor([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 1, 0], [0, 0, 0.9, 0.1],
                         [0, 0.2, 0, 1], [1, 0, 0, 0.1]])
    chosen = DAQTracker.initial_slot_assignment(rows, table)
    # 6 rows, 4 columns: Hungarian gives 4 distinct columns, the other 2 rows keep their arg-min
    assert len(set(chosen.tolist())) == 4
    assert chosen.shape == (6,)


def test_select_top_pairs_returns_fewer_than_max_num_when_n_times_k_is_small():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0]])  # 2 candidates, K = 2
    top = select_top_pairs(logits, max_num=10)
    assert len(top.scores) == 4
    pairs = {(int(c), int(l)) for c, l in zip(top.candidates, top.labels)}
    assert pairs == {(0, 0), (0, 1), (1, 0), (1, 1)}
    probs = logits.softmax(-1)[:, :-1]
    for s, c, l in zip(top.scores, top.candidates, top.labels):
        assert float(s) == pytest.approx(float(probs[c, l]))
    assert len(select_top_pairs(torch.zeros((0, 3)), 10).scores) == 0


def test_mask_chain_is_per_frame_and_absent_frames_are_empty():
    geometry = MaskGeometry(padded=(64, 96), image=(60, 90), output=(45, 70))
    logits = torch.randn(3, 4, 16, 24)
    logits[1, 2] = -1e4
    whole = masks_to_output(logits, geometry)
    assert whole.shape == (3, 4, 45, 70) and not whole[1, 2].any()
    for t in range(4):
        assert torch.equal(masks_to_output(logits[:, t], geometry), whole[:, t])
    # the explicit chain: padded size, crop, output size
    up = F.interpolate(logits, size=(64, 96), mode="bilinear", align_corners=False)[..., :60, :90]
    ref = F.interpolate(up, size=(45, 70), mode="bilinear", align_corners=False) > 0
    assert torch.equal(whole, ref)


def test_minvis_link_recovers_permutations():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(5, C, generator=g)
    logits = torch.randn(5, 3, generator=g)
    perms = [torch.arange(5), torch.tensor([2, 0, 1, 4, 3]), torch.tensor([4, 3, 2, 1, 0])]
    embeds = torch.stack([base[p] for p in perms])
    seg_logits = torch.stack([logits[p] for p in perms])
    link = minvis_link(embeds, seg_logits)
    for t, p in enumerate(perms):
        # linked sequence j is base query j in every frame
        assert torch.equal(p[link.perm[t]], torch.arange(5))
    assert torch.allclose(link.mean_logits, logits, atol=1e-6)


def _record(track_id, start, length, value):
    hub = _hub(keep_embeds=True)
    rec = hub._new_record(track_id, start, torch.zeros(C))
    for _ in range(length):
        hub._append(rec, torch.full((C,), value), torch.tensor([value, 0.0, 0.0]), True)
    rec.anchor = torch.full((C,), -1.0)
    return rec


def test_candidates_top_k_padding_and_minvis_fill_up():
    frames, q = 6, 4
    records = [_record(i, start=i, length=2, value=float(i)) for i in range(3)]
    embeds = torch.randn(frames, q, C)
    logits = torch.randn(frames, q, 3)
    cands = assemble_candidates(records, embeds, logits, topk_num=2, num_new_ins=q)
    # top-2 of 3 records by fg score (record 2 has the largest class-0 logit), then 2 MinVIS
    assert sorted(cands.track_ids[:2]) == [1, 2] and cands.track_ids[2:] == [-1, -1]
    assert cands.official_ids[2:] == [minvis_synthetic_id(0, 1), minvis_synthetic_id(0, 2)]
    assert cands.instance_embeds.shape == (frames, 4, C)
    rec = records[cands.track_ids.index(2)]
    col = cands.track_ids.index(2)
    seq = cands.instance_embeds[:, col]
    assert torch.all(seq[:2] == -1) and torch.all(seq[2:4] == 2) and torch.all(seq[4:] == -1)
    assert cands.padding[col].tolist() == [True, True, False, False, True, True]
    assert rec.length == 2
    # exactly top-k records: all kept (in topk order, as the official code), more: creation order
    all_kept = assemble_candidates(records, embeds, logits, topk_num=3, num_new_ins=3)
    assert sorted(all_kept.track_ids) == [0, 1, 2] and all_kept.minvis is None
    fewer = assemble_candidates(records, embeds, logits, topk_num=4, num_new_ins=3)
    assert fewer.track_ids == [0, 1, 2]


def test_refiner_with_local_conv_is_permutation_equivariant_over_candidates():
    cfg = small_config(num_classes=3).with_overrides({"refiner.use_local_attn": True})
    torch.manual_seed(0)
    refiner = TemporalRefiner(cfg).eval()
    assert any(k.startswith("conv_short_aggregate_layers.0.2.") for k in refiner.state_dict())
    dim = cfg.segmenter.hidden_dim
    inst, frames = torch.randn(5, 7, dim), torch.randn(5, cfg.segmenter.num_queries, dim)
    perm = torch.randperm(7)
    with torch.no_grad():
        out = refiner(inst, frames)
        out_perm = refiner(inst[:, perm], frames)
        logits = refiner.class_logits(out)
        masks = refiner.frame_masks(out[:2], torch.randn(2, cfg.pixel_decoder.mask_dim, 6, 8))
    assert torch.allclose(out[:, perm], out_perm, atol=1e-5)
    assert logits.shape == (7, cfg.num_classes + 1) and masks.shape == (7, 2, 6, 8)


@pytest.mark.parametrize("quirk", [True, False])
def test_single_offline_candidate_quirk(quirk):
    """Official: exactly one refiner candidate gives an empty result (only possible with Q = 1)."""
    from daq_model.dvis_daq import create_model
    from daq_model.outputs import VideoInfo
    from daq_model.predictor import VideoPredictor

    cfg = small_config(num_classes=3).with_overrides({
        "segmenter.num_queries": 1, "tracker.num_new_ins": 1, "input.min_size_test": 64})
    torch.manual_seed(0)
    predictor = VideoPredictor(create_model(cfg), empty_on_single_candidate=quirk)
    session = predictor.start_video(VideoInfo(height=64, width=64))
    frames = np.random.default_rng(0).integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    list(session.push(frames))
    list(session.flush())
    result = session.finish()
    assert result.stats["candidates"] == 1
    masks = list(result.iter_frame_masks())
    if quirk:
        assert result.instances == [] and masks == []
    else:
        assert len(result.instances) == cfg.num_classes  # one candidate, every class
        assert [m.masks.shape for m in masks] == [(3, 64, 64)]


def test_refiner_chunking_does_not_change_the_result():
    cfg = small_config(num_classes=3).with_overrides({"refiner.use_local_attn": True})
    torch.manual_seed(1)
    refiner = TemporalRefiner(cfg).eval()
    dim = cfg.segmenter.hidden_dim
    inst, frames = torch.randn(11, 6, dim), torch.randn(11, cfg.segmenter.num_queries, dim)
    with torch.no_grad():
        whole = refiner(inst, frames, max_tokens=10 ** 6)
        chunked = refiner(inst, frames, max_tokens=13)  # 1-candidate and 2-frame chunks
    assert torch.allclose(whole, chunked, atol=1e-5)


def test_emerging_nms_keeps_tracks_and_suppresses_overlapping_new_candidates():
    from daq_model.tracker import TrackerFrameOutput
    from daq_model.tracking import suppress_duplicate_emergence

    masks = torch.full((5, 4, 4), -1.0)
    masks[0, :2, :2] = 1.0  # track row
    masks[1, 2:, 2:] = 1.0  # track row (invalid this frame)
    masks[2, :2, :2] = 1.0  # emerging, same mask as track 0 -> suppressed
    masks[3, 2:, 2:] = 1.0  # emerging, over the invalid track only -> kept (higher score)
    masks[4, 2:, 2:] = 1.0  # emerging duplicate of row 3, lower score -> suppressed
    scores = torch.tensor([0.9, 0.05, 0.8, 0.7, 0.6])
    logits = torch.stack([scores, 1 - scores], dim=1).log()
    out = TrackerFrameOutput(queries=torch.zeros(5, 2), logits=logits, masks=masks,
                             anchors=torch.zeros(5, 2), num_tracks=2)
    valid = torch.tensor([True, False, True, True, True])
    kept = suppress_duplicate_emergence(out, valid, 0.5)
    assert kept.tolist() == [True, False, False, True, False]
    assert suppress_duplicate_emergence(out, valid, 1.0).tolist() == valid.tolist()  # IoU 1 is not > 1
    with pytest.raises(ValueError, match="emerging_nms_iou"):
        small_config(3).with_overrides({"tracker.emerging_nms_iou": 1.5})


def test_emerging_select_threshold_applies_to_new_rows_only():
    from daq_model.tracker import TrackerFrameOutput
    from daq_model.tracking import VideoTracker

    scores = torch.tensor([0.05, 0.5, 0.05, 0.2])  # rows 0-1 tracks, 2-3 emerging
    out = TrackerFrameOutput(queries=torch.zeros(4, 2), logits=torch.stack([scores, 1 - scores], 1).log(),
                             masks=torch.randn(4, 4, 4), anchors=torch.zeros(4, 2), num_tracks=2)
    base = small_config(1).with_overrides({"tracker.inference_select_threshold": 0.1})
    tracker = VideoTracker.__new__(VideoTracker)  # validity() reads only cfg and num_frames
    tracker.num_frames = 1
    tracker.cfg = base
    assert tracker.validity(out, torch.zeros(4, 2)).tolist() == [False, True, False, True]
    tracker.cfg = base.with_overrides({"tracker.emerging_select_threshold": 0.03})
    assert tracker.validity(out, torch.zeros(4, 2)).tolist() == [False, True, True, True]
    tracker.cfg = base.with_overrides({"tracker.emerging_select_threshold": 0.03, "tracker.mode": "referring"})
    assert tracker.validity(out, torch.zeros(4, 2)).tolist() == [False, True, False, True]


def test_track_nms_favours_carried_tracks_then_score_in_every_frame():
    from daq_model.tracker import TrackerFrameOutput
    from daq_model.tracking import VideoTracker, suppress_duplicate_rows

    masks = torch.full((5, 4, 4), -1.0)
    masks[0, :2, :2] = 1.0  # track, low score
    masks[1, :2, :2] = 1.0  # track, same object, higher score -> kept first, row 0 suppressed
    masks[2, :2, :3] = 1.0  # emerging over both (IoU 4/6 with them) -> suppressed at 0.5, kept at 0.7
    masks[3, 2:, :] = 1.0  # emerging, elsewhere -> kept
    masks[4, 2:, :3] = 1.0  # emerging, IoU 6/8 with row 3 but a higher score: kept, row 3 suppressed
    scores = torch.tensor([0.3, 0.6, 0.99, 0.5, 0.7])
    valid = torch.ones(5, dtype=torch.bool)
    assert suppress_duplicate_rows(masks, scores, valid, 2, 0.5).tolist() == [False, True, False, False, True]
    assert suppress_duplicate_rows(masks, scores, valid, 2, 0.7).tolist() == [False, True, True, False, True]
    # frame 0 (no carried rows): by score only, so the emerging-like row 2 wins
    assert suppress_duplicate_rows(masks, scores, valid, 0, 0.5).tolist() == [False, False, True, False, True]
    # an invalid row neither survives nor suppresses
    partly = torch.tensor([True, False, True, True, True])
    assert suppress_duplicate_rows(masks, scores, partly, 2, 0.5).tolist() == [True, False, False, False, True]

    logits = torch.stack([scores, 1 - scores], 1).log()
    out = TrackerFrameOutput(queries=torch.zeros(5, 2), logits=logits, masks=masks,
                             anchors=torch.zeros(5, 2), num_tracks=2)
    tracker = VideoTracker.__new__(VideoTracker)  # validity() reads only cfg and num_frames
    tracker.cfg = small_config(1).with_overrides({"tracker.inference_select_threshold": 0.1,
                                                  "tracker.track_nms_iou": 0.5})
    tracker.num_frames = 0  # frame 0: the segmenter's scores order the candidates
    seg_scores = torch.tensor([0.9, 0.2, 0.1, 0.5, 0.4])
    seg_logits = torch.stack([seg_scores, 1 - seg_scores], 1).log()
    assert tracker.validity(out, seg_logits).tolist() == [True, False, False, True, False]
    tracker.num_frames = 3
    assert tracker.validity(out, seg_logits).tolist() == [False, True, False, False, True]
    tracker.cfg = tracker.cfg.with_overrides({"tracker.track_nms_iou": 0.0})
    assert tracker.validity(out, seg_logits).tolist() == [True] * 5
    with pytest.raises(ValueError, match="track_nms_iou"):
        small_config(3).with_overrides({"tracker.track_nms_iou": -0.1})

"""Referring-tracker mode (the ablation baseline): config, checkpoint keys, slot matching, the
frame step, slot-track bookkeeping, and streaming / reference runs on the reference case."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from daq_model.checkpoint import save_checkpoint
from daq_model.config import DAQConfig, get_preset, load_config, small_config
from daq_model.dvis_daq import DVISDAQ, create_model
from daq_model.outputs import VideoInfo
from daq_model.predictor import VideoPredictor
from daq_model.reference import run_reference
from daq_model.referring import ReferringVideoTracker, SlotHub, link_slots
from daq_model.track_state import SequentialIds
from daq_model.tracking import VideoTracker, make_video_tracker
from tests.reference_case import ReferenceCase

REFERRING = {"tracker.mode": "referring"}


def test_mode_config_and_hashes() -> None:
    cfg = get_preset("ovis_offline_r50")
    assert cfg.tracker.mode == "daq"
    # hashes written before the field existed stay valid for mode=daq
    assert cfg.config_hash() == "6dc49e0f381e1e47"
    assert get_preset("daq_small").config_hash() == "73de3866718ce1c2"
    ref = cfg.with_overrides(REFERRING)
    assert ref.tracker.mode == "referring" and ref.config_hash() != cfg.config_hash()
    assert DAQConfig.from_dict(ref.to_dict()) == ref
    with pytest.raises(ValueError, match="tracker.mode"):
        cfg.with_overrides({"tracker.mode": "dvis"})


def test_referring_model_loads_the_daq_checkpoint_strictly(tmp_path) -> None:
    daq_cfg = small_config(3, offline=True)
    torch.manual_seed(0)
    daq = DVISDAQ(daq_cfg)
    path = tmp_path / "daq.pt"
    save_checkpoint(daq, path, config=daq_cfg)
    referring = create_model(daq_cfg.with_overrides(REFERRING), path)  # strict
    assert list(referring.state_dict()) == list(daq.state_dict())
    assert all(torch.equal(v, daq.state_dict()[k]) for k, v in referring.state_dict().items())
    ids = SequentialIds()
    table = referring.sem_seg_head.predictor.query_feat.weight
    assert isinstance(make_video_tracker(referring.tracker, referring.cfg, table, ids, True),
                      ReferringVideoTracker)
    assert isinstance(make_video_tracker(daq.tracker, daq_cfg, table, ids, True), VideoTracker)


def test_link_slots_recovers_a_permutation() -> None:
    g = torch.Generator().manual_seed(1)
    previous = torch.randn(16, 32, generator=g)
    perm = torch.randperm(16, generator=g)
    current = previous[perm] + 0.05 * torch.randn(16, 32, generator=g)
    matched = link_slots(previous, current)
    assert torch.equal(perm[matched], torch.arange(16))  # slot i gets the query showing i
    with pytest.raises(ValueError, match="one slot per query"):
        link_slots(previous[:4], current)


@pytest.fixture(scope="module")
def small_model() -> DVISDAQ:
    torch.manual_seed(2)
    cfg = small_config(3, offline=False).with_overrides(
        {**REFERRING, "tracker.inference_select_threshold": 0.0,
         "tracker.aux_inference_select_threshold": 0.0})
    return DVISDAQ(cfg).eval()


def _frame(q: int, c: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(q, 4, generator=g), torch.randn(q, 8, 8, generator=g),
            torch.randn(q, c, generator=g))


@torch.inference_mode()
def test_frame_step_matches_permuted_queries_back_to_their_slots(small_model) -> None:
    cfg = small_model.cfg
    q, c = cfg.segmenter.num_queries, cfg.segmenter.hidden_dim
    features = torch.randn(cfg.pixel_decoder.mask_dim, 8, 8, generator=torch.Generator().manual_seed(3))
    logits0, masks0, embeds0 = _frame(q, c, 4)
    # frame 1 shows the same objects slightly changed; tracker B sees its queries shuffled
    logits1, masks1, embeds1 = logits0 + 0.01, masks0 + 0.01, embeds0 + 0.01
    perm = torch.randperm(q, generator=torch.Generator().manual_seed(5))
    runs = []
    for order in (torch.arange(q), perm):
        tracker = ReferringVideoTracker(small_model.tracker, cfg, SequentialIds(), keep_embeds=False)
        first = tracker.step(logits0, masks0, embeds0, features)
        second = tracker.step(logits1[order], masks1[order], embeds1[order], features)
        runs.append((tracker, first, second))
    (ta, first, a), (tb, _, b) = runs
    # frame 0 is the DAQ first frame: slot i is segmenter query i
    daq0 = small_model.tracker.forward_frame(embeds0, features, masks0, embeds0, None, None)
    assert torch.allclose(first.output.queries, daq0.queries, atol=1e-5)
    assert first.output.num_tracks == 0 and a.output.num_tracks == q
    assert a.output.slot_logits is None and a.output.logits.shape[0] == q  # no emerging rows
    # the shuffled frame gives every slot the same query, hence the same outputs and tracks
    assert torch.allclose(a.output.queries, b.output.queries, atol=1e-5)
    assert torch.allclose(a.output.anchors, b.output.anchors, atol=1e-5)
    assert torch.allclose(a.output.anchors, a.output.frame_anchors, atol=1e-6)  # identity match
    assert torch.allclose(tb.hub.references, embeds1)
    assert a.decision.entries == b.decision.entries
    assert [e[1] for e in a.decision.entries] == list(range(q))  # one track per slot


def test_slot_tracks_absent_frames_and_noise_filter() -> None:
    hub = SlotHub(SequentialIds(), noise_frame_num=3, keep_embeds=True, keep_history=True)
    c, frames = 4, [[True, False], [False, False], [True, True], [True, False]]
    logits = [torch.tensor([[float(t), 0.0, 0.0], [0.0, float(t), 0.0]]) for t in range(4)]
    for t, valid in enumerate(frames):
        decision = hub.update(t, torch.full((2, c), float(t)), logits[t], torch.full((2, c), t + 0.5),
                              torch.zeros(2, c), torch.tensor(valid))
        assert [e[0] for e in decision.entries] == [k for k, v in enumerate(valid) if v]
    slot0, slot1 = hub.records[0], hub.records[1]
    assert (slot0.start, slot0.length, slot0.present, slot0.last_present) == (0, 4, 3, 3)
    assert (slot1.start, slot1.length, slot1.present, slot1.track_id) == (2, 2, 1, 1)
    assert torch.allclose(slot0.mean_logits(), torch.tensor([(0 + 2 + 3) / 3, 0.0, 0.0]))
    assert torch.equal(slot0.anchor, torch.full((c,), 3.5))  # the anchor of its last present frame
    # 3 present frames pass; slot 1 (1 frame) is absent in the last frame: filtered as noise
    assert [r.track_id for r in hub.kept_records(0, 4)] == [0]
    assert [r.track_id for r in hub.kept_records(0, 3)] == [0, 1]  # present in the last frame
    seq, flags = hub.sequence(slot1, 0, 4)
    assert torch.equal(seq[:, 0], torch.arange(4.0)) and flags.tolist() == [True, True, False, True]


# ----------------------------------------------------------------------------------------------
# the reference case's weights in referring mode: streaming == reference path


@pytest.fixture(scope="module")
def case() -> ReferenceCase:
    return ReferenceCase.selected()


def _model(case, mode, work, **overrides):
    cfg = load_config(case.config_path(mode)).with_overrides(
        {**REFERRING, "inference.frame_batch_size": 2, **overrides})
    return create_model(cfg, case.weights_path(mode, work))


def _stream(model, frames, output_hw, cache_mb=1024.0):
    predictor = VideoPredictor(model, feature_cache_mb=cache_mb, id_rng=random.Random(0))
    session = predictor.start_video(VideoInfo(height=frames.shape[1], width=frames.shape[2]),
                                    output_size=output_hw)
    tracks = []
    for start in range(0, len(frames), 3):
        tracks += list(session.push(frames[start:start + 3]))
    tracks += list(session.flush())
    result = session.finish(replay=lambda: iter([frames]))
    return session, tracks, result


def _reference_pairs(ref) -> dict[tuple[int, int], tuple[float, np.ndarray]]:
    ids = ref["agg_pred_ids"]
    return {(int(ids[c]), int(label)): (float(score), ref["vis_masks"][n])
            for n, (c, label, score) in enumerate(zip(ref["vis_ids"], ref["vis_labels"],
                                                      ref["vis_scores"]))}


def test_streaming_online_referring_equals_reference_path(case, tmp_path) -> None:
    inputs = case.inputs()
    frames, output_hw = inputs["frames"], tuple(int(v) for v in inputs["output_hw"])
    model = _model(case, "online", tmp_path)
    ref = run_reference(model, frames, output_hw)
    session, tracks, result = _stream(model, frames, output_hw)
    assert "trk_f01_slot_logits" not in ref and "trk_f01_frame_query_pos" in ref
    assert [ft.frame_index for ft in tracks] == list(range(len(frames)))
    q = model.cfg.segmenter.num_queries
    for ft in tracks:
        t = ft.frame_index
        assert ft.valid.all() and len(ft) == int(ref[f"trk_f{t:02d}_query_valid"].sum()) <= q
        assert ref[f"trk_f{t:02d}_logits"].shape[0] == q  # Q slots, every frame
    expected = _reference_pairs(ref)
    assert len(result.instances) == len(expected) > 0
    assert session.tracker.hub.num_killed == 0 and session.tracker.hub.num_started <= q
    for inst in result.instances:
        score, masks = expected[(inst.track_id, inst.label)]
        assert inst.score == pytest.approx(score, abs=1e-5)
        ours = np.stack([ft.masks[list(ft.track_ids).index(inst.track_id)]
                         if inst.track_id in ft.track_ids else np.zeros(output_hw, bool)
                         for ft in tracks])
        assert (ours != masks).mean() <= 1e-4  # absent frames: empty in both


def test_streaming_offline_referring_equals_reference_path(case, tmp_path) -> None:
    inputs = case.inputs()
    frames, output_hw = inputs["frames"], tuple(int(v) for v in inputs["output_hw"])
    model = _model(case, "offline", tmp_path)
    ref = run_reference(model, frames, output_hw)
    _, _, result = _stream(model, frames, output_hw, cache_mb=0.0)  # all masks from replay
    kept = [int(i) for i in ref["agg_pred_ids"] if i in ref["hub_ids"]]
    assert result.stats["tracked_candidates"] == len(kept) > 0  # the slot tracks are candidates
    expected = _reference_pairs(ref)
    assert len(result.instances) == len(expected) > 0
    frame_masks = list(result.iter_frame_masks())
    assert [fm.frame_index for fm in frame_masks] == list(range(len(frames)))
    stacked = np.stack([fm.masks for fm in frame_masks], axis=1)
    for n, inst in enumerate(result.instances):
        hits = [k for k, (score, _) in expected.items() if k[1] == inst.label
                and abs(score - inst.score) < 1e-5
                and (k[0] == inst.track_id or (inst.track_id < 0 and k[0] not in ref["hub_ids"]))]
        assert len(hits) == 1
        assert (stacked[n] != expected[hits[0]][1]).mean() <= 1e-4

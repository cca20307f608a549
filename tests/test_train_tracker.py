"""Stage 2 (tracker): per-frame training forward, propagation / EDS rules, overfit, resume, export."""

from __future__ import annotations

from collections import deque

import pytest
import torch

from daq_model.dvis_daq import create_model
from daq_model.track_state import TrackRecord
from daq_model.tracker import TrackerFrameOutput
from daq_train.config import get_train_preset
from daq_train.data import DataSource
from daq_train.matcher import FrameMatch
from daq_train.model_setup import build_stage_model, export_model
from daq_train.run import load_datasets, make_model_config, make_sampler, prepare_stage, run_stage
from daq_train.stage_tracker import TrackerLoss, Tracks
from daq_train.tracker_step import tracker_frame_for_training
from tests.test_train_data import write_tiny_dataset
from tests.train_overfit import overfit_tracker_clip

CFG = get_train_preset("tiny_test")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("trk")
    root = write_tiny_dataset(base / "data", num_videos=3, num_frames=6)
    datasets = load_datasets([DataSource.from_root(root)])
    model_cfg = make_model_config(CFG, datasets)
    torch.manual_seed(0)
    seg_model = build_stage_model(model_cfg, "segmenter", None, "cpu", thaw_backbone_norm=True)
    export_model(seg_model, base / "seg.pt")
    return {"root": root, "datasets": datasets, "model_cfg": model_cfg, "seg": base / "seg.pt", "base": base}


def _tracker_model(setup: dict):
    return build_stage_model(setup["model_cfg"], "tracker", setup["seg"], "cpu")


def test_training_forward_decodes_every_layer_and_masks_slots(setup: dict) -> None:
    torch.manual_seed(1)
    model = _tracker_model(setup)
    tracker = model.tracker
    q, c = model.cfg.segmenter.num_queries, model.cfg.segmenter.hidden_dim
    embeds, feats, masks = torch.randn(q, c), torch.randn(c, 8, 8), torch.randn(q, 8, 8)
    table = model.sem_seg_head.predictor.query_feat.weight.detach()
    first = tracker_frame_for_training(tracker, embeds, feats, masks, table, None, None)
    assert len(first.main_logits) == tracker.num_layers + 1 and first.slot_logits == []
    tq, ta = torch.randn(3, c), torch.randn(3, c)
    later = tracker_frame_for_training(tracker, embeds, feats, masks, table, tq, ta)
    ref = tracker.forward_frame(embeds, feats, masks, table, tq, ta)
    assert torch.allclose(later.main_logits[-1], ref.logits) and torch.allclose(later.main_masks[-1], ref.masks)
    assert later.main_logits[0].shape == (3 + q, model.cfg.num_classes + 1)
    assert len(later.slot_logits) == tracker.num_layers
    assert torch.allclose(later.slot_logits[-1], ref.slot_logits, atol=1e-6)
    hide = torch.zeros(3 + tracker.num_slots, q, dtype=torch.bool)
    hide[:, :4] = True
    masked = tracker_frame_for_training(tracker, embeds, feats, masks, table, tq, ta, slot_memory_mask=hide)
    assert torch.allclose(masked.main_logits[-1], ref.logits)  # main branch never masked
    assert not torch.allclose(masked.slot_logits[-1], ref.slot_logits)
    again = tracker_frame_for_training(tracker, embeds, feats, masks, table, tq, ta)
    assert torch.allclose(again.slot_logits[-1], ref.slot_logits, atol=1e-6)  # hooks removed


def _frame_output(scores: list[float], num_tracks: int, c: int = 4) -> TrackerFrameOutput:
    """Rows with fg score ``scores`` (2 classes + no-object)."""
    p = torch.tensor(scores)
    probs = torch.stack([p, torch.zeros_like(p), 1 - p], dim=1).clamp_min(1e-6)
    n = len(scores)
    return TrackerFrameOutput(queries=torch.randn(n, c), logits=probs.log(), masks=torch.zeros(n, 2, 2),
                              anchors=torch.randn(n, c), num_tracks=num_tracks)


def test_propagation_half_drop_and_threshold(setup: dict) -> None:
    loss = TrackerLoss(_tracker_model(setup), make_sampler(setup["datasets"], CFG, setup["model_cfg"], "tracker"), CFG)
    out = _frame_output([0.9, 0.2, 0.6, 0.05, 0.3, 0.01], num_tracks=0)
    indices = (torch.tensor([0, 1, 2, 4]), torch.tensor([3, 0, 1, 2]))  # row -> GT
    empty = Tracks(None, [], (torch.zeros(0, dtype=torch.long),) * 2)
    # short phase: the two lowest-scoring matched rows (1: .2, 4: .3) are dropped
    short = loss._propagate(empty, out, indices, full=False, t=0)
    assert torch.equal(short.queries, out.queries[[0, 2]])
    assert short.carried[0].tolist() == [0, 1] and short.carried[1].tolist() == [3, 1]
    assert all(torch.equal(r.anchor, out.anchors[k]) for r, k in zip(short.records, [0, 2]))
    # full phase: every row above training_select_threshold, matched or not
    thr = loss.model.cfg.tracker.training_select_threshold
    full = loss._propagate(empty, out, indices, full=True, t=0)
    kept = [k for k, s in enumerate([0.9, 0.2, 0.6, 0.05, 0.3, 0.01]) if s > thr]
    assert torch.equal(full.queries, out.queries[kept])
    assert full.carried[1].tolist() == [3, 0, 1, 2]
    # later frame: carried rows keep their records and get an EMA update
    records = [TrackRecord(track_id=i, start=0, last_query=torch.zeros(4), anchor=torch.ones(4),
                           prev_anchors=deque([torch.ones(4)], maxlen=9)) for i in range(2)]
    tracks = Tracks(torch.zeros(2, 4), records, (torch.tensor([0, 1]), torch.tensor([5, 6])))
    out2 = _frame_output([0.8, 0.7, 0.9], num_tracks=2)
    nxt = loss._propagate(tracks, out2, (torch.tensor([0, 1, 2]), torch.tensor([5, 6, 7])), full=True, t=1)
    assert nxt.records[0] is records[0] and len(records[0].prev_anchors) == 2
    assert nxt.carried[1].tolist() == [5, 6, 7]


def test_full_clip_emergence_drop_removes_only_matched_tracks(setup: dict) -> None:
    scores = [0.9, 0.2, 0.6, 0.05, 0.3, 0.5]
    out = _frame_output(scores, num_tracks=0)
    indices = (torch.tensor([0, 1, 2, 4]), torch.tensor([3, 0, 1, 2]))  # rows 3, 5 unmatched
    empty = Tracks(None, [], (torch.zeros(0, dtype=torch.long),) * 2)
    sampler = make_sampler(setup["datasets"], CFG, setup["model_cfg"], "tracker")
    dropping = CFG.with_overrides({"tracker.full_clip_emergence_drop": 0.5})
    loss = TrackerLoss(_tracker_model(setup), sampler, dropping)
    thr = loss.model.cfg.tracker.training_select_threshold
    above = {k for k, s in enumerate(scores) if s > thr}
    kept_matched = []
    for _ in range(200):
        kept = loss._propagate(empty, out, indices, full=True, t=0)
        kept_rows = {k for k in range(len(scores))
                     if any(torch.equal(out.queries[k], q) for q in kept.queries)}
        assert {3, 5} & above <= kept_rows  # unmatched rows above threshold are never dropped
        assert kept_rows <= above
        kept_matched.append(kept.carried[0].numel())
    mean = sum(kept_matched) / len(kept_matched)
    assert 1.4 < mean < 2.6  # 4 matched rows above threshold, each kept with probability 0.5
    off = TrackerLoss(_tracker_model(setup), sampler,
                      dropping.with_overrides({"tracker.emergence_simulation": False}))
    assert off._propagate(empty, out, indices, full=True, t=0).queries.shape[0] == len(above)
    with pytest.raises(ValueError, match="full_clip_emergence_drop"):
        CFG.with_overrides({"tracker.full_clip_emergence_drop": 1.0})


def test_keep_disappeared_tracks_propagates_absent_objects_without_anchor_update(setup: dict) -> None:
    cfg = CFG.with_overrides({"tracker.keep_disappeared_tracks": True})
    loss = TrackerLoss(_tracker_model(setup), make_sampler(setup["datasets"], cfg, setup["model_cfg"], "tracker"), cfg)
    records = [TrackRecord(track_id=i, start=0, last_query=torch.zeros(4), anchor=torch.ones(4),
                           prev_anchors=deque([torch.ones(4)], maxlen=9)) for i in range(3)]
    tracks = Tracks(torch.zeros(3, 4), records, (torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])))
    out = _frame_output([0.001, 0.9, 0.001, 0.001], num_tracks=3)
    indices = (torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))
    gt_valid = torch.tensor([False, True, True])  # GT 0 absent now; GT 2 present but lost (score)
    nxt = loss._propagate(tracks, out, indices, full=True, t=1, gt_valid=gt_valid)
    assert nxt.carried[1].tolist() == [0, 1]  # absent object kept, lost present object dropped
    assert nxt.records[0] is records[0] and torch.equal(records[0].anchor, torch.ones(4))
    assert len(records[0].prev_anchors) == 1 and len(records[1].prev_anchors) == 2
    plain = TrackerLoss(_tracker_model(setup), make_sampler(setup["datasets"], CFG, setup["model_cfg"], "tracker"), CFG)
    assert plain._propagate(tracks, out, indices, full=True, t=1, gt_valid=gt_valid).carried[1].tolist() == [1]


def test_disappearance_simulation_needs_more_than_three_tracks(setup: dict) -> None:
    loss = TrackerLoss(_tracker_model(setup), make_sampler(setup["datasets"], CFG, setup["model_cfg"], "tracker"), CFG)
    aux = torch.tensor([0, 1, 2, 3, -1, 1] + [-1] * 10)
    match = FrameMatch((torch.zeros(0, dtype=torch.long),) * 2, aux >= 0, aux)
    three = Tracks(torch.zeros(3, 4), [], (torch.arange(3), torch.tensor([0, 1, 2])))
    assert loss._simulate_disappearance(three, match, 5) == (None, None)
    four = Tracks(torch.zeros(4, 4), [], (torch.arange(4), torch.tensor([0, 1, 2, 3])))
    seen = set()
    for _ in range(30):
        mask, g = loss._simulate_disappearance(four, match, 5)
        assert mask.shape == (4 + 5, 16) and torch.equal(mask[0], aux == g)
        seen.add(g)
    assert seen == {0, 1, 2, 3}


def test_emerging_rows_are_named_for_the_emerging_positive_weight(setup: dict, monkeypatch) -> None:
    import daq_train.stage_tracker as stage_tracker

    calls = []
    real = stage_tracker.clip_losses

    def spy(outputs, targets, num_classes, weights, points, emerging_positive_weight=1.0, *rest):
        calls.append((outputs, emerging_positive_weight))
        return real(outputs, targets, num_classes, weights, points, emerging_positive_weight, *rest)

    monkeypatch.setattr(stage_tracker, "clip_losses", spy)
    cfg = CFG.with_overrides({"tracker.full_clip_from": 0, "tracker.emerging_positive_weight": 4.0})
    model = _tracker_model(setup)
    loss = TrackerLoss(model, make_sampler(setup["datasets"], cfg, setup["model_cfg"], "tracker"), cfg)
    loss(5)
    (main, factor), (slot, slot_factor) = calls  # main branch, then slot branch
    assert factor == 4.0 and slot_factor == 1.0  # only the main branch has emerging queries
    assert main[0].first_emerging_row is None  # frame 0: segmenter queries, no carried tracks
    for out in main[1:]:
        rows = out.logits[-1].shape[0]
        assert out.first_emerging_row == rows - model.tracker.num_new_ins
    with pytest.raises(ValueError, match="emerging_positive_weight"):
        CFG.with_overrides({"tracker.emerging_positive_weight": 0.0})


def test_duplicate_emerging_rows_reach_the_main_branch_loss(setup: dict, monkeypatch) -> None:
    import daq_train.stage_tracker as stage_tracker

    calls, found = [], []
    real_losses, real_duplicates = stage_tracker.clip_losses, stage_tracker.duplicate_emerging_rows

    def spy(outputs, targets, num_classes, weights, points, positive=1.0, duplicate=1.0):
        calls.append((outputs, positive, duplicate))
        return real_losses(outputs, targets, num_classes, weights, points, positive, duplicate)

    def spy_duplicates(masks, first, rows, targets, iou):
        found.append((first, iou))
        return real_duplicates(masks, first, rows, targets, iou)

    monkeypatch.setattr(stage_tracker, "clip_losses", spy)
    monkeypatch.setattr(stage_tracker, "duplicate_emerging_rows", spy_duplicates)
    cfg = CFG.with_overrides({"tracker.full_clip_from": 0, "tracker.emerging_duplicate_weight": 10.0,
                              "tracker.emerging_duplicate_iou": 0.01})
    model = _tracker_model(setup)
    loss = TrackerLoss(model, make_sampler(setup["datasets"], cfg, setup["model_cfg"], "tracker"), cfg)
    loss(5)
    (main, _, duplicate), (slot, _, slot_duplicate) = calls
    assert duplicate == 10.0 and slot_duplicate == 1.0
    assert main[0].duplicate_rows is None and all(o.duplicate_rows is None for o in slot)
    assert len(found) == len(main) - 1 and all(iou == 0.01 for _, iou in found)
    for out, (first, _) in zip(main[1:], found):
        assert first == out.first_emerging_row
        assert out.duplicate_rows is not None and bool((out.duplicate_rows >= first).all())
        assert not set(out.duplicate_rows.tolist()) & set(out.indices[0].tolist())
    for bad in ({"tracker.emerging_duplicate_weight": 0.0}, {"tracker.emerging_duplicate_iou": 0.0},
                {"tracker.emerging_duplicate_iou": 1.5}):
        with pytest.raises(ValueError, match="emerging_duplicate"):
            CFG.with_overrides(bad)


def test_tracker_overfits_a_fixed_clip(setup: dict) -> None:
    cfg = CFG.with_overrides({"tracker.full_clip_from": 0})
    torch.manual_seed(0)
    model = _tracker_model(setup)
    values = overfit_tracker_clip(model, setup, cfg,
                                  lambda losses: any(k.startswith("slot_loss_ce") for k in losses),
                                  clip_grad_norm=1.0)
    assert values[-1] < 0.8 * values[0], values
    grads = [p for p in model.parameters() if p.grad is not None]
    assert grads and all(n.startswith("tracker.") for n, p in model.named_parameters() if p.grad is not None)


def test_tracker_resume_and_export(setup: dict) -> None:
    cfg = CFG.with_overrides({"checkpoint_period": 100})
    base = setup["base"]
    torch.manual_seed(4)
    full = prepare_stage("tracker", cfg, setup["datasets"], base / "full", "cpu", init=setup["seg"])
    reference = [r.loss for r in full.train(until=4)]  # crosses the 2-frame -> full-clip switch
    torch.manual_seed(4)
    first = prepare_stage("tracker", cfg, setup["datasets"], base / "split", "cpu", init=setup["seg"])
    first.train(until=2)
    torch.manual_seed(99)
    second = prepare_stage("tracker", cfg, setup["datasets"], base / "split", "cpu", init=setup["seg"], resume=True)
    resumed = [r.loss for r in second.train(until=4)]
    assert resumed == pytest.approx(reference[2:], rel=1e-5, abs=1e-6)

    (base / "run" / "segmenter").mkdir(parents=True)
    (base / "run" / "segmenter" / "model.pt").write_bytes(setup["seg"].read_bytes())
    result = run_stage("tracker", CFG.with_overrides({"tracker.iters": 1}), [DataSource.from_root(setup["root"])],
                       base / "run")
    model = create_model(setup["model_cfg"], result.checkpoint)  # strict
    seg = create_model(setup["model_cfg"], setup["seg"])
    seg_state = seg.state_dict()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, seg_state[k])]
    assert changed and all(k.startswith("tracker.") for k in changed)  # only the tracker trained


def test_prefetching_the_next_clip_changes_no_loss_and_no_saved_sampler_state(setup: dict) -> None:
    """On CPU the tracker stage draws the next full clip and runs the frozen segmenter on it in a
    background thread; the losses and the sampler state a resume would restore are unchanged."""
    losses, states = {}, {}
    for prefetch in (False, True):
        torch.manual_seed(7)
        sampler = make_sampler(setup["datasets"], CFG, setup["model_cfg"], "tracker")
        loss = TrackerLoss(_tracker_model(setup), sampler, CFG, prefetch=prefetch)
        values, saved = [], []
        for it in range(5):  # 2-frame phase until iteration 2, then full clips
            values.append({k: float(v.detach()) for k, v in loss(it).items()})
            saved.append(loss.clips.state_dict())
        losses[prefetch], states[prefetch] = values, saved
        if prefetch:
            assert loss.clips._pending is not None and loss.clips._pending.iteration == 5
            loss.clips.close()
            assert loss.clips._pending is None and sampler.state_dict() == saved[-1]
    assert losses[True] == losses[False]
    assert states[True] == states[False]


def test_prefetcher_rewinds_when_asked_out_of_order(setup: dict) -> None:
    from daq_train.prefetch import SegmenterPrefetcher
    from daq_train.sampler import ClipSettings

    def clips_of(order: list[int], prefetch_from: int | None) -> list[tuple]:
        sampler = make_sampler(setup["datasets"], CFG, setup["model_cfg"], "tracker")
        clips = SegmenterPrefetcher(sampler, ClipSettings(3, 1), lambda clip: clip.images.sum(),
                                    prefetch_from=prefetch_from)
        out = [clips.get(i) for i in order]
        clips.close()
        return [(c.video_id, c.frame_indices, float(s)) for c, s in out]

    synchronous = clips_of([0, 1, 2, 3], prefetch_from=None)
    assert clips_of([0, 1, 2, 3], prefetch_from=0) == synchronous
    # asking for 3 when 1 was prepared: the early draw is dropped, 3 gets what 1 would have
    assert clips_of([0, 3], prefetch_from=0)[1][:2] == synchronous[1][:2]

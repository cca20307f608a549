"""Stage 2 / 3 in referring-tracker mode (ablation baseline (a)): matching, overfit, CLI plumbing,
export and the refiner on the referring tracker."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from daq_model.checkpoint import read_checkpoint
from daq_model.dvis_daq import create_model
from daq_train.config import get_train_preset
from daq_train.criterion import FrameTarget
from daq_train.data import DataSource
from daq_train.matcher import FrameMatch, MatchCosts
from daq_train.model_setup import build_stage_model, export_model
from daq_train.run import load_datasets, make_model_config, make_sampler, run_stage
from daq_train.stage_referring import free_slots, referring_clip
from daq_train.stage_tracker import TrackerLoss
from jobs import train as train_job
from tests.test_train_data import write_tiny_dataset
from tests.train_overfit import overfit_tracker_clip

CFG = get_train_preset("tiny_test").with_overrides({"tracker.daq": False})


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("ref_trk")
    root = write_tiny_dataset(base / "data", num_videos=3, num_frames=6)
    datasets = load_datasets([DataSource.from_root(root)])
    model_cfg = make_model_config(CFG, datasets)
    torch.manual_seed(0)
    seg_model = build_stage_model(model_cfg, "segmenter", None, "cpu", thaw_backbone_norm=True)
    export_model(seg_model, base / "seg.pt")
    return {"root": root, "datasets": datasets, "model_cfg": model_cfg, "seg": base / "seg.pt",
            "base": base}


def test_train_config_sets_the_model_mode(setup: dict) -> None:
    assert setup["model_cfg"].tracker.mode == "referring"
    daq_cfg = make_model_config(get_train_preset("tiny_test"), setup["datasets"])
    assert daq_cfg.tracker.mode == "daq"
    with pytest.raises(ValueError, match="tracker.daq"):  # a referring model, a DAQ train config
        make_model_config(get_train_preset("tiny_test").with_overrides(
            {"model": _yaml(setup, daq_cfg.with_overrides({"tracker.mode": "referring"}))}),
            setup["datasets"])
    parser = argparse.ArgumentParser()
    train_job.add_arguments(parser)
    args = parser.parse_args(["--out", str(setup["base"] / "cli"), "--config", "tiny_test",
                              "--referring"])
    assert train_job._train_config(args).tracker.daq is False
    assert "--referring" in parser.format_help()


def _yaml(setup: dict, cfg) -> str:
    path = setup["base"] / "referring_model.yaml"
    path.write_text(cfg.to_yaml())
    return str(path)


def test_slots_keep_their_gt_and_new_gt_go_to_free_slots(setup: dict) -> None:
    """Frame 0: the frame matcher's pairs; frame 1: carried pairs unchanged (also for a GT that
    disappeared), the new GT into a slot that held none."""
    torch.manual_seed(1)
    model = build_stage_model(setup["model_cfg"], "tracker", setup["seg"], "cpu")
    q, c = model.cfg.segmenter.num_queries, model.cfg.segmenter.hidden_dim
    embeds = torch.randn(1, q, c).expand(3, -1, -1).clone()
    masks, features = torch.randn(3, q, 8, 8), torch.randn(3, c, 8, 8)
    gt_masks = torch.zeros(3, 3, 32, 32)
    gt_masks[0, :2, :16] = 1  # GT 0 in frames 0-1, GT 1 in frames 0 and 2, GT 2 from frame 1
    gt_masks[1, ::2, 16:] = 1
    gt_masks[2, 1:, 16:, 16:] = 1
    valid = gt_masks.flatten(2).any(-1)
    targets = [FrameTarget(torch.tensor([0, 1, 2]), gt_masks[:, t], valid[:, t]) for t in range(3)]
    first = (torch.tensor([5, 9]), torch.tensor([0, 1]))
    matches = [FrameMatch(first, torch.ones(q, dtype=torch.bool), torch.zeros(q, dtype=torch.long))]
    outs = referring_clip(model, embeds, masks, features, targets, matches * 3,
                          MatchCosts(num_points=64))
    assert [o.indices[0][:2].tolist() for o in outs] == [[5, 9]] * 3
    assert [o.indices[1][:2].tolist() for o in outs] == [[0, 1]] * 3
    new_rows = [o.indices[0][2:].tolist() for o in outs]
    assert new_rows[0] == [] and len(new_rows[1]) == 1 and new_rows[1][0] not in (5, 9)
    assert new_rows[2] == new_rows[1]  # then carried
    assert all(len(o.logits) == model.tracker.num_layers + 1 for o in outs)  # deep supervision
    assert free_slots(4, torch.tensor([1, 3])).tolist() == [0, 2]


def test_referring_tracker_overfits_a_fixed_clip(setup: dict) -> None:
    cfg = CFG.with_overrides({"tracker.full_clip_from": 0})
    torch.manual_seed(0)
    model = build_stage_model(setup["model_cfg"], "tracker", setup["seg"], "cpu")
    values = overfit_tracker_clip(
        model, setup, cfg,
        lambda losses: "loss_ce_0" in losses and not any(k.startswith("slot_") for k in losses))
    assert values[-1] < 0.8 * values[0], values
    trained = {n.split(".")[1] for n, p in model.named_parameters() if p.grad is not None}
    assert "transformer_cross_attention_layers" in trained and "pos_embed" in trained
    assert not trained & {"slot_cross_attention_layers", "slot_ffn_layers", "bg_slots",
                          "new_ins_embeds"}  # the DAQ-only parts get no gradient
    daq_model = build_stage_model(make_model_config(get_train_preset("tiny_test"), setup["datasets"]),
                                  "tracker", setup["seg"], "cpu")
    with pytest.raises(ValueError, match="tracker.mode"):
        TrackerLoss(daq_model, make_sampler(setup["datasets"], cfg, setup["model_cfg"], "tracker"), cfg)


def test_stages_export_referring_models_and_the_refiner_trains_on_them(setup: dict) -> None:
    run = setup["base"] / "run"
    sources = [DataSource.from_root(setup["root"])]
    cfg = CFG.with_overrides({"tracker.iters": 2, "refiner.iters": 2})
    tracker = run_stage("tracker", cfg, sources, run, init=setup["seg"])
    saved = read_checkpoint(str(tracker.checkpoint)).daq_config()
    assert saved is not None and saved.tracker.mode == "referring"
    create_model(saved, tracker.checkpoint)  # strict
    refiner = run_stage("refiner", cfg, sources, run)
    assert refiner.iteration == 2 and refiner.last_loss is not None
    with pytest.raises(ValueError, match="tracker.mode"):  # DAQ refiner on a referring tracker
        run_stage("refiner", get_train_preset("tiny_test"), sources, setup["base"] / "other",
                  init=Path(tracker.checkpoint))

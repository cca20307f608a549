"""Stage 3 (refiner): online candidates and their masks, per-layer predictions, overfit, resume,
export, and the whole three-stage chain through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from daq_model.dvis_daq import create_model
from daq_train.config import get_train_preset
from daq_train.data import DataSource
from daq_train.model_setup import build_stage_model, export_model
from daq_train.run import load_datasets, make_model_config, make_sampler, prepare_stage
from daq_train.sampler import ClipSettings
from daq_train.stage_refiner import ABSENT_LOGIT, RefinerLoss, online_candidates, refiner_predictions
from daq_train.stage_tracker import run_frozen_segmenter
from tests.test_train_data import write_tiny_dataset

CFG = get_train_preset("tiny_test")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("ref")
    root = write_tiny_dataset(base / "data", num_videos=3, num_frames=6)
    datasets = load_datasets([DataSource.from_root(root)])
    model_cfg = make_model_config(CFG, datasets)
    torch.manual_seed(0)
    model = build_stage_model(model_cfg, "segmenter", None, "cpu", thaw_backbone_norm=True)
    export_model(model, base / "online.pt")
    return {"root": root, "datasets": datasets, "model_cfg": model_cfg, "init": base / "online.pt", "base": base}


def _clip(setup: dict, model):
    sampler = make_sampler(setup["datasets"], CFG, setup["model_cfg"], "refiner")
    clip = sampler.sample_clip(0, ClipSettings(num_frames=4, frame_range=2))
    return clip, run_frozen_segmenter(model, clip.images)


def test_online_candidates_and_masks(setup: dict) -> None:
    model = build_stage_model(setup["model_cfg"], "refiner", setup["init"], "cpu")
    _, seg = _clip(setup, model)
    cands, masks = online_candidates(model, seg)
    q = model.cfg.tracker.num_new_ins
    expected = max(q, min(cands.num_records, model.cfg.refiner.offline_topk_num))
    assert cands.count == expected and masks.shape == (expected, 4) + tuple(seg.masks.shape[-2:])
    assert cands.instance_embeds.shape == (4, expected, model.cfg.segmenter.hidden_dim)
    if cands.minvis is not None:
        first = cands.count - cands.minvis_index.numel()
        j = int(cands.minvis_index[0])
        for t in range(4):
            assert torch.equal(masks[first, t], seg.masks[t, cands.minvis.perm[t, j]])
    tracked = [i for i, tid in enumerate(cands.track_ids) if tid >= 0]
    for i in tracked:  # tracked candidates: -1e4 exactly where the record has no entry
        absent = (masks[i] == ABSENT_LOGIT).flatten(1).all(1)
        assert not bool(absent.all())


def test_refiner_predictions_every_layer(setup: dict) -> None:
    model = build_stage_model(setup["model_cfg"], "refiner", setup["init"], "cpu")
    _, seg = _clip(setup, model)
    cands, _ = online_candidates(model, seg)
    preds = refiner_predictions(model.refiner, cands.instance_embeds, seg.embeds, seg.mask_features)
    assert len(preds) == model.refiner.num_layers
    final = model.refiner(cands.instance_embeds, seg.embeds)
    assert torch.allclose(preds[-1][0], model.refiner.class_logits(final))
    assert torch.allclose(preds[-1][1], model.refiner.frame_masks(final, seg.mask_features))


def test_refiner_overfits_a_fixed_clip(setup: dict) -> None:
    torch.manual_seed(0)
    model = build_stage_model(setup["model_cfg"], "refiner", setup["init"], "cpu")
    sampler = make_sampler(setup["datasets"], CFG, setup["model_cfg"], "refiner")
    loss_fn = RefinerLoss(model, sampler, CFG.with_overrides({"refiner.iters": 100}))
    state = sampler.state_dict()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    values = []
    for it in (0, 0, 0, 0, 0, 0, 0, 0, 60, 60):  # online matching first, then self matching
        sampler.load_state_dict(state)
        torch.manual_seed(2)
        total = sum(loss_fn(it).values())
        opt.zero_grad()
        total.backward()
        opt.step()
        values.append(total.item())
    assert values[7] < 0.8 * values[0], values
    assert values[-1] < values[0]
    assert all(n.startswith("refiner.") for n, p in model.named_parameters() if p.grad is not None)


def test_refiner_resume_and_strict_export(setup: dict) -> None:
    cfg = CFG.with_overrides({"checkpoint_period": 100})
    base = setup["base"]
    torch.manual_seed(4)
    reference = [r.loss for r in prepare_stage("refiner", cfg, setup["datasets"], base / "full", "cpu",
                                               init=setup["init"]).train(until=4)]
    torch.manual_seed(4)
    prepare_stage("refiner", cfg, setup["datasets"], base / "split", "cpu", init=setup["init"]).train(until=2)
    torch.manual_seed(7)
    second = prepare_stage("refiner", cfg, setup["datasets"], base / "split", "cpu", init=setup["init"], resume=True)
    assert [r.loss for r in second.train(until=4)] == pytest.approx(reference[2:], rel=1e-5, abs=1e-6)
    export_model(second.model, base / "final.pt")
    model = create_model(setup["model_cfg"], base / "final.pt")
    assert model.refiner is not None


@pytest.mark.slow
def test_cli_trains_all_stages_into_a_loadable_model(setup: dict, tmp_path: Path) -> None:
    from jobs.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--data", str(setup["root"]), "--stage", "all", "--out", str(out),
               "--config", "tiny_test", "--iters", "2"])
    assert rc == 0
    for stage in ("segmenter", "tracker", "refiner"):
        assert (out / stage / "model.pt").exists() and (out / stage / "metrics.jsonl").exists()
    model = create_model(setup["model_cfg"], out / "refiner" / "model.pt")
    assert model.refiner is not None
    rc = main(["train", "--data", str(setup["root"]), "--stage", "refiner", "--out", str(out),
               "--config", "tiny_test", "--iters", "3", "--resume"])
    assert rc == 0
    assert torch.load(out / "refiner" / "last.pt", weights_only=True)["iteration"] == 3

"""Stage 1 (segmenter): overfitting a fixed batch, exact resume, strict loading of the export,
plus the optimiser / schedule / batch-norm helpers it relies on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from daq_model.dvis_daq import create_model
from daq_model.resnet import FrozenBatchNorm2d
from daq_train.config import TrainConfig, get_train_preset, load_train_config
from daq_train.data import DataSource
from daq_train.model_setup import build_stage_model
from daq_train.norm import freeze_batchnorm, thaw_frozen_batchnorm
from daq_train.optim import OptimConfig, lr_factor, param_groups
from daq_train.run import exported_path, load_datasets, make_model_config, make_sampler, prepare_stage, run_stage
from daq_train.stage_segmenter import segmenter_loss_fn
from tests.test_train_data import write_tiny_dataset


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"), num_videos=3, num_frames=6)


def test_lr_schedule_and_param_groups() -> None:
    cfg = OptimConfig(base_lr=1.0, warmup_iters=10, warmup_factor=0.1, schedule="step", steps=(20, 30))
    assert lr_factor(0, 40, cfg) == pytest.approx(0.1)
    assert lr_factor(5, 40, cfg) == pytest.approx(0.55)
    assert lr_factor(10, 40, cfg) == 1.0 and lr_factor(20, 40, cfg) == pytest.approx(0.1)
    assert lr_factor(35, 40, cfg) == pytest.approx(0.01)
    poly = OptimConfig(base_lr=1.0, warmup_iters=0, schedule="poly", poly_power=1.0)
    assert lr_factor(30, 40, poly) == pytest.approx(0.25)
    model = nn.ModuleDict({"backbone": nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)),
                           "head": nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Embedding(3, 4))})
    groups = {(g["lr"], g["weight_decay"]): sorted(g["names"]) for g in
              param_groups(model, OptimConfig(base_lr=1.0, weight_decay=0.05, backbone_multiplier=0.1))}
    assert groups[(0.1, 0.05)] == ["backbone.0.bias", "backbone.0.weight"]
    assert groups[(0.1, 0.0)] == ["backbone.1.bias", "backbone.1.weight"]
    assert groups[(1.0, 0.05)] == ["head.0.bias", "head.0.weight"]
    assert sorted(groups[(1.0, 0.0)]) == ["head.1.bias", "head.1.weight", "head.2.weight"]


def test_batchnorm_thaw_and_freeze_round_trip() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), FrozenBatchNorm2d(4))
    assert thaw_frozen_batchnorm(net) == 1 and isinstance(net[1], nn.BatchNorm2d)
    net.train()
    for _ in range(3):
        net(torch.randn(2, 3, 8, 8) * 3 + 1)
    with torch.no_grad():
        net[1].weight.mul_(1.7)
    net.eval()
    x = torch.randn(2, 3, 8, 8)
    expected = net(x)
    assert freeze_batchnorm(net) == 1 and isinstance(net[1], FrozenBatchNorm2d)
    assert torch.allclose(net(x), expected, atol=1e-5)


def test_train_config_presets_and_yaml(tmp_path: Path) -> None:
    cfg = get_train_preset("small_cpu")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    path = tmp_path / "c.yaml"
    path.write_text("train_config:\n  base: small_cpu\n  segmenter:\n    iters: 7\n    optim:\n      steps: [3, 5]\n")
    loaded = load_train_config(path)
    assert loaded.segmenter.iters == 7 and loaded.segmenter.optim.steps == (3, 5)
    assert loaded.tracker == cfg.tracker
    with pytest.raises(KeyError):
        cfg.with_overrides({"segmenter.nope": 1})


def test_segmenter_overfits_a_fixed_batch(tiny_root: Path) -> None:
    torch.manual_seed(0)
    cfg = get_train_preset("tiny_test")
    datasets = load_datasets([DataSource.from_root(tiny_root)])
    model_cfg = make_model_config(cfg, datasets)
    model = build_stage_model(model_cfg, "segmenter", None, "cpu", thaw_backbone_norm=True)
    sampler = make_sampler(datasets, cfg, model_cfg, "segmenter")
    state = sampler.state_dict()

    def fixed_batch(_: int):  # the same frames every step
        sampler.load_state_dict(state)
        return compute(0)

    compute = segmenter_loss_fn(model, sampler, cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    losses = []
    for _ in range(12):
        torch.manual_seed(1)  # same sampled points too
        loss = sum(fixed_batch(0).values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_resume_reproduces_uninterrupted_run(tiny_root: Path, tmp_path: Path) -> None:
    cfg = get_train_preset("tiny_test").with_overrides({"checkpoint_period": 100})
    datasets = load_datasets([DataSource.from_root(tiny_root)])
    torch.manual_seed(5)
    full = prepare_stage("segmenter", cfg, datasets, tmp_path / "full", "cpu")
    reference = [r.loss for r in full.train(until=4)]

    torch.manual_seed(5)
    first = prepare_stage("segmenter", cfg, datasets, tmp_path / "split", "cpu")
    first.train(until=2)  # writes last.pt at the end of the call
    torch.manual_seed(123)  # resuming must restore the RNG, whatever the current state
    second = prepare_stage("segmenter", cfg, datasets, tmp_path / "split", "cpu", resume=True)
    assert second.iteration == 2
    resumed = [r.loss for r in second.train(until=4)]
    assert resumed == pytest.approx(reference[2:], rel=1e-5, abs=1e-6)


def test_exported_checkpoint_loads_strictly_for_inference(tiny_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = get_train_preset("tiny_test").with_overrides({"segmenter.iters": 2})
    result = run_stage("segmenter", cfg, [DataSource.from_root(tiny_root)], tmp_path / "run")
    assert result.checkpoint == exported_path(tmp_path / "run", "segmenter") and result.iteration == 2
    state = torch.load(tmp_path / "run" / "segmenter" / "last.pt", weights_only=True)
    assert state["iteration"] == 2
    datasets = load_datasets([DataSource.from_root(tiny_root)])
    model_cfg = make_model_config(cfg, datasets)
    model = create_model(model_cfg, result.checkpoint)  # strict
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    # the exported model predicts what the trained one does in eval mode
    trained = prepare_stage("segmenter", cfg, datasets, tmp_path / "run", "cpu", resume=True).model
    trained.eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = trained.forward_features(images), model.forward_features(images)
    assert torch.allclose(a.pred_masks, b.pred_masks, atol=1e-4)
    assert torch.allclose(a.pred_logits, b.pred_logits, atol=1e-4)


def _pair_targets(shift: int) -> "ClipTargets":
    """One clip of two 8x8 frames: object 0 on the left, object 1 on the right, both visible in
    both frames (object 1 moved down by ``shift`` rows in the second)."""
    from daq_train.data import ClipTargets

    masks = torch.zeros(2, 2, 8, 8)
    masks[0, :, :, :3] = 1
    masks[1, 0, :4, 5:] = 1
    masks[1, 1, shift:shift + 4, 5:] = 1
    valid = torch.ones(2, 2, dtype=torch.bool)
    return ClipTargets(masks, torch.tensor([0, 1]), torch.tensor([[1, 1], [2, 2]]), valid,
                       torch.zeros_like(valid), torch.zeros_like(valid))


def test_contrastive_loss_rewards_an_object_keeping_its_embedding() -> None:
    from daq_train.stage_segmenter import contrastive_loss

    targets = _pair_targets(shift=2)
    # the final prediction's matching in both frames: query 0 <-> object 0, query 1 <-> object 1
    matches = [(torch.tensor([0, 1]), torch.tensor([0, 1]))] * 2
    a, b, c = torch.eye(3)
    kept = torch.stack([torch.stack([a, b, c]), torch.stack([a, b, c])]).requires_grad_()
    swapped = torch.stack([torch.stack([a, b, c]), torch.stack([b, a, c])])  # identities exchanged
    low = contrastive_loss(kept, [targets], matches, temperature=0.1)
    high = contrastive_loss(swapped, [targets], matches, temperature=0.1)
    assert low.item() < 1e-3 and high.item() > 5.0
    low.backward()
    assert kept.grad is not None
    # an object visible in only one frame of the pair gives no term: nothing to compare
    alone = _pair_targets(shift=2)
    alone.valid[1, 1] = False
    alone.masks[1, 1] = 0
    alone_matches = [matches[0], (torch.tensor([0]), torch.tensor([0]))]
    one = contrastive_loss(swapped, [alone], alone_matches, temperature=0.1)
    both = contrastive_loss(swapped, [targets], matches, temperature=0.1)
    assert one.item() == pytest.approx(both.item())  # object 0 alone; by symmetry the same mean


def test_segmenter_stage_with_pairs_trains_and_logs_the_contrastive_loss(tiny_root: Path, tmp_path: Path) -> None:
    from daq_train.sampler import ClipSettings

    cfg = get_train_preset("tiny_test").with_overrides({
        "segmenter.contrastive_weight": 2.0, "segmenter.contrastive_frame_range": 2,
        "segmenter.batch_size": 4})
    datasets = load_datasets([DataSource.from_root(tiny_root)])
    model_cfg = make_model_config(cfg, datasets)
    sampler = make_sampler(datasets, cfg, model_cfg, "segmenter")
    images, targets = sampler.sample_clips(0, 2, ClipSettings(num_frames=2, frame_range=2))
    assert images.shape[0] == 4 and len(targets) == 2
    assert all(t.masks.shape[1:] == (2, *images.shape[-2:]) for t in targets)
    trainer = prepare_stage("segmenter", cfg, datasets, tmp_path / "run", "cpu")
    steps = trainer.train()
    assert len(steps) == cfg.segmenter.iters
    assert all("loss_contrast" in s.losses and s.losses["loss_contrast"] >= 0 for s in steps)
    with pytest.raises(ValueError, match="batch_size >= 2"):
        segmenter_loss_fn(trainer.model, sampler, cfg.with_overrides({"segmenter.batch_size": 1}))

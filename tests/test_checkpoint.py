"""Checkpoint loading: layouts, strictness, refusal of bad or malicious files, our own format."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import torch

from daq_model.checkpoint import (
    CheckpointError,
    file_sha256,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from daq_model.config import small_config
from daq_model.dvis_daq import DVISDAQ, create_model


@pytest.fixture(scope="module")
def offline_cfg():
    return small_config(num_classes=3, offline=True)


@pytest.fixture(scope="module")
def online_cfg():
    return small_config(num_classes=3, offline=False)


@pytest.fixture(scope="module")
def offline_state(offline_cfg):
    torch.manual_seed(3)
    return DVISDAQ(offline_cfg).state_dict()


def _assert_loaded(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    for key, value in own.items():
        assert torch.equal(value, state[key]), key


def test_plain_state_dict(tmp_path, offline_cfg, offline_state):
    path = tmp_path / "plain.pt"
    torch.save(offline_state, path)
    model = DVISDAQ(offline_cfg)
    report = load_checkpoint(model, path)
    assert report.layout == "state_dict" and report.num_tensors == len(offline_state)
    _assert_loaded(model, offline_state)


def test_detectron2_layout_and_module_prefix(tmp_path, offline_cfg, offline_state):
    path = tmp_path / "model_final.pth"
    wrapped = {f"module.{k}": v for k, v in offline_state.items()}
    optimizer = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
                 "param_groups": [{"lr": 1e-4, "params": [0]}]}
    torch.save({"model": wrapped, "iteration": 159999, "optimizer": optimizer,
                "scheduler": {"last_epoch": 159999}}, path)
    model = DVISDAQ(offline_cfg)
    report = load_checkpoint(model, f"file://{path}")
    assert report.layout == "detectron2" and report.metadata == {"iteration": 159999}
    _assert_loaded(model, offline_state)


def test_online_model_drops_refiner_keys(tmp_path, online_cfg, offline_state):
    path = tmp_path / "offline_weights.pt"
    torch.save(offline_state, path)
    model = DVISDAQ(online_cfg)
    report = load_checkpoint(model, path)
    assert report.dropped_keys and all(k.startswith("refiner.") for k in report.dropped_keys)
    _assert_loaded(model, offline_state)


def test_offline_model_needs_refiner_keys_unless_allowed(tmp_path, offline_cfg, offline_state):
    path = tmp_path / "online_weights.pt"
    torch.save({k: v for k, v in offline_state.items() if not k.startswith("refiner.")}, path)
    with pytest.raises(CheckpointError, match=r"missing keys: refiner\.") as err:
        load_checkpoint(DVISDAQ(offline_cfg), path)
    assert str(path) in str(err.value)
    model = DVISDAQ(offline_cfg)
    load_checkpoint(model, path, allow_missing_prefixes=("refiner.",))
    assert torch.equal(model.state_dict()["tracker.class_embed.bias"],
                       offline_state["tracker.class_embed.bias"])


def test_missing_criterion_buffer_is_filled_from_config(tmp_path, offline_cfg, offline_state):
    path = tmp_path / "no_criterion.pt"
    torch.save({k: v for k, v in offline_state.items() if not k.startswith("daq_criterion.")}, path)
    report = load_checkpoint(DVISDAQ(offline_cfg), path)
    assert report.filled_keys == ["daq_criterion.empty_weight"]


def test_wrong_shape_missing_and_unexpected_keys(tmp_path, offline_cfg, offline_state):
    state = dict(offline_state)
    state["sem_seg_head.predictor.class_embed.weight"] = torch.zeros(9, 64)
    del state["backbone.res3.0.conv2.weight"]
    state["tracker.extra_head.weight"] = torch.zeros(2)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(DVISDAQ(offline_cfg), path)
    message = str(err.value)
    assert str(path) in message
    assert "missing keys: backbone.res3.0.conv2.weight" in message
    assert "unexpected keys: tracker.extra_head.weight" in message
    assert "sem_seg_head.predictor.class_embed.weight: file (9, 64) vs model (4, 64)" in message


def test_truncated_text_empty_and_absent_files(tmp_path, offline_cfg, offline_state):
    good = tmp_path / "good.pt"
    torch.save(offline_state, good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path in (truncated, text, empty, tmp_path / "absent.pt", tmp_path):
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(DVISDAQ(offline_cfg), path)
        assert str(path) in str(err.value)


class _CreatesFile:
    """A pickle payload that opens (creates) a file when unpickled."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pickles_are_refused_not_run(tmp_path, offline_cfg):
    # sanity: the payload really creates its file when a plain unpickler runs it
    canary = tmp_path / "canary"
    pickle.loads(pickle.dumps(_CreatesFile(canary)))
    assert canary.exists()

    target = tmp_path / "pwned"
    zipped = tmp_path / "evil_zip.pt"
    torch.save({"backbone.stem.conv1.weight": _CreatesFile(target)}, zipped)
    legacy = tmp_path / "evil_legacy.pkl"
    legacy.write_bytes(pickle.dumps({"model": _CreatesFile(target)}, protocol=2))
    for path in (zipped, legacy):
        with pytest.raises(CheckpointError, match="refusing") as err:
            load_checkpoint(DVISDAQ(offline_cfg), path)
        assert str(path) in str(err.value)
        assert not target.exists()


def test_non_tensor_entries_are_rejected(tmp_path, offline_cfg):
    path = tmp_path / "numbers.pt"
    torch.save({"backbone.stem.conv1.weight": 3.0}, path)
    with pytest.raises(CheckpointError, match="not named tensors"):
        load_checkpoint(DVISDAQ(offline_cfg), path)


def test_save_round_trip_with_config_via_fsspec(offline_cfg):
    torch.manual_seed(5)
    model = DVISDAQ(offline_cfg)
    url = "memory://checkpoints/daq_small.pt"
    digest = save_checkpoint(model, url, config=offline_cfg, metadata={"stage": "offline"})
    assert file_sha256(url) == digest
    contents = read_checkpoint(url)
    assert contents.layout == "daq-label" and contents.metadata["stage"] == "offline"
    assert contents.daq_config() == offline_cfg
    restored = create_model(contents.daq_config(), checkpoint=url)
    _assert_loaded(restored, model.state_dict())
    assert not restored.training


def test_saved_file_loads_with_weights_only_and_sha256(tmp_path, offline_cfg):
    model = DVISDAQ(offline_cfg)
    path = tmp_path / "sub" / "ckpt.pt"
    digest = save_checkpoint(model, path, config=offline_cfg)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"format", "model", "config", "metadata"}
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)
    assert not list(path.parent.glob(".*.tmp"))


def test_metadata_must_stay_weights_only_loadable(tmp_path, offline_cfg):
    with pytest.raises(TypeError, match="metadata.source"):
        save_checkpoint(DVISDAQ(offline_cfg), tmp_path / "x.pt", metadata={"source": tmp_path})
    assert not (tmp_path / "x.pt").exists()


def test_filter_renames_legacy_static_query(tmp_path, offline_cfg, offline_state):
    state = dict(offline_state)
    state["sem_seg_head.predictor.static_query.weight"] = state.pop(
        "sem_seg_head.predictor.query_feat.weight")
    path = tmp_path / "legacy.pt"
    torch.save(state, path)
    model = DVISDAQ(offline_cfg)
    load_checkpoint(model, path)
    _assert_loaded(model, offline_state)

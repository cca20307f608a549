"""The assembled model's state_dict equals the official manifests entry for entry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from daq_model.config import get_preset
from daq_model.dvis_daq import DVISDAQ

MANIFESTS = Path(__file__).resolve().parent / "data" / "manifests"


def _read_manifest(path: Path) -> list[tuple[str, str, str, str, int]]:
    rows = []
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, shape, dtype, kind, numel = line.split("\t")
        rows.append((key, shape, dtype, kind, int(numel)))
    return rows


def _describe(model: torch.nn.Module) -> list[tuple[str, str, str, str, int]]:
    params = {name for name, _ in model.named_parameters()}
    return [(key, str(tuple(t.shape)), str(t.dtype).removeprefix("torch."),
             "param" if key in params else "buffer", t.numel())
            for key, t in model.state_dict().items()]


@pytest.mark.parametrize("preset, manifest", [
    ("ytvis19_online_r50", "manifest_ytvis19_DAQ_Online_R50.tsv"),
    ("ovis_offline_r50", "manifest_ovis_DAQ_Offline_R50.tsv"),
])
def test_state_dict_equals_official_manifest(preset, manifest):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = DVISDAQ(get_preset(preset))
    ours = _describe(model)
    expected = _read_manifest(MANIFESTS / manifest)
    ours_keys = {row[0] for row in ours}
    expected_keys = {row[0] for row in expected}
    assert not expected_keys - ours_keys, f"missing: {sorted(expected_keys - ours_keys)[:20]}"
    assert not ours_keys - expected_keys, f"unexpected: {sorted(ours_keys - expected_keys)[:20]}"
    differing = [(a, b) for a, b in zip(ours, expected) if a != b]
    assert not differing, f"entries differ (ours, official): {differing[:10]}"
    assert ours == expected  # same order as well
    # non-persistent normalisation buffers exist but are not in the state_dict
    buffers = dict(model.named_buffers())
    assert "pixel_mean" in buffers and "pixel_std" in buffers
    assert "pixel_mean" not in ours_keys


def test_online_model_has_no_refiner_and_criterion_weights():
    cfg = get_preset("daq_small")
    online = DVISDAQ(cfg.with_overrides({"meta_architecture": "DVIS_DAQ_online"}))
    assert online.refiner is None
    weight = online.daq_criterion.empty_weight
    assert weight.shape == (cfg.num_classes + 1,)
    assert torch.all(weight[:-1] == 1) and float(weight[-1]) == pytest.approx(cfg.loss.no_object_weight)

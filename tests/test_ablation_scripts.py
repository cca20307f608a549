"""research/ablation_seed.sh end to end at two iterations per stage: the shipped segmenter under a
new seed, tracker and refiner trained, both modes predicted and scored, and the seed table of
research/ablation_table.py reads the run back (the README's seed table comes from such runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_results_docs import _ablation_table_module

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def assert_run_evaluated(run: Path) -> None:
    """scripts/evaluate_run.sh wrote an AP for both modes on all and on the appear/disappear objects."""
    for mode in ("online", "offline"):
        for objects in ("all", "appear-disappear"):
            metrics = json.loads((run / "eval" / f"{mode}_{objects}.json").read_text())
            assert 0.0 <= metrics["AP"] <= 1.0, (mode, objects)


@pytest.mark.slow
def test_ablation_seed_script_trains_and_scores_a_seeded_run(tmp_path: Path) -> None:
    daq_label = str(BIN / "daq-label")
    for name, seed in (("train", 1), ("held", 2)):
        subprocess.run([daq_label, "synth", str(tmp_path / name), "--preset", "tiny", "--seed", str(seed),
                        "--videos", "2"], check=True, capture_output=True)
    env = dict(os.environ, D=daq_label, PY=sys.executable, TRAIN=str(tmp_path / "train"),
               HELDOUT=str(tmp_path / "held"), TRAIN_FLAGS="--iters 2")
    done = subprocess.run(["bash", str(ROOT / "research" / "ablation_seed.sh"), "b", "7", str(tmp_path / "out")],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    run = tmp_path / "out" / "b_seed7"
    train_cfg = yaml.safe_load((run / "train_config.yaml").read_text())["train_config"]
    assert train_cfg["seed"] == 7 and train_cfg["tracker"]["iters"] == 2
    # variant b: dynamic anchor queries, emergence and disappearance simulation off
    assert train_cfg["tracker"]["daq"] is True
    assert not train_cfg["tracker"]["emergence_simulation"] and not train_cfg["tracker"]["disappearance_simulation"]
    assert yaml.safe_load((run / "model_config.yaml").read_text())["daq_config"]["tracker"]["mode"] == "daq"
    assert_run_evaluated(run)
    lines = _ablation_table_module().seed_table(tmp_path / "out")
    assert len(lines) == 3 and lines[2].startswith("| (b) + DAQ | 7 |")


def test_ablation_seed_script_rejects_an_unknown_variant(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(ROOT / "research" / "ablation_seed.sh"), "x", "7", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "unknown variant x" in done.stderr
    assert not any(tmp_path.iterdir())


def _run_segmenter_from_shipped(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "research" / "segmenter_from_shipped.py"), *args],
                          cwd=ROOT, capture_output=True, text=True)


def test_segmenter_from_shipped_builds_a_deeper_tracker_around_the_shipped_segmenter(tmp_path: Path) -> None:
    import torch

    from daq_model.checkpoint import read_checkpoint
    from daq_model.config import load_config
    from pipeline.model_source import shipped_model

    done = _run_segmenter_from_shipped(str(tmp_path), "--model-set", "tracker.decoder_layers=3")
    assert done.returncode == 0, done.stderr[-3000:]
    model_cfg = load_config(tmp_path / "model.yaml")
    assert model_cfg.tracker.decoder_layers == 3
    exported = read_checkpoint(str(tmp_path / "segmenter" / "model.pt"))
    assert exported.daq_config().tracker.decoder_layers == 3
    shipped = read_checkpoint(str(shipped_model()[0])).state_dict
    weights = exported.state_dict
    segmenter_keys = [k for k in shipped if k.startswith(("backbone.", "sem_seg_head."))]
    assert segmenter_keys and all(torch.equal(weights[k], shipped[k]) for k in segmenter_keys)
    # the third tracker layer exists only in the deeper model (seeded init, not taken from anywhere)
    assert "tracker.transformer_ffn_layers.2.linear1.weight" in weights
    assert "tracker.transformer_ffn_layers.2.linear1.weight" not in shipped


def test_segmenter_from_shipped_refuses_to_change_the_segmenter(tmp_path: Path) -> None:
    done = _run_segmenter_from_shipped(str(tmp_path), "--model-set", "segmenter.hidden_dim=32")
    assert done.returncode == 2 and "outside the segmenter" in done.stderr
    assert not (tmp_path / "segmenter").exists()

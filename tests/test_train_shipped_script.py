"""scripts/train_shipped.sh (the README's one retraining command) end to end at two iterations per
stage, without shipping: segmenter, tracker, refiner, held-out evaluation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_ablation_scripts import assert_run_evaluated

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tiny_sets(tmp_path: Path) -> dict[str, str]:
    daq_label = str(BIN / "daq-label")
    roots = {}
    for env_name, seed in (("TRAIN", 1), ("TRACK_TRAIN", 3), ("HELDOUT", 2)):
        root = tmp_path / env_name.lower()
        subprocess.run([daq_label, "synth", str(root), "--preset", "tiny", "--seed", str(seed), "--videos", "2"],
                       check=True, capture_output=True)
        roots[env_name] = str(root)
    return dict(os.environ, D=daq_label, PY=sys.executable, SHIP="0", THREADS="1", TRAIN_FLAGS="--iters 2",
                **roots)


def _pretrained_files() -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in (ROOT / "daq_model" / "pretrained").iterdir()}


@pytest.mark.slow
def test_train_shipped_script_trains_three_stages_and_evaluates_without_shipping(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shipped_before = _pretrained_files()
    done = subprocess.run(["bash", str(ROOT / "scripts" / "train_shipped.sh"), str(run)], cwd=ROOT,
                          env=_tiny_sets(tmp_path), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    for stage in ("segmenter", "tracker", "refiner"):
        assert (run / stage / "model.pt").is_file(), stage
    cfg = yaml.safe_load((run / "train_config.yaml").read_text())["train_config"]
    assert cfg["name"] == "small_cpu" and cfg["tracker"]["daq"] is True
    assert_run_evaluated(run)
    walls = dict(line.split("=") for line in (run / "wall_seconds.txt").read_text().split())
    assert list(walls) == ["segmenter", "tracker", "refiner", "total"]
    assert int(walls["total"]) >= sum(int(walls[s]) for s in ("segmenter", "tracker", "refiner")) - 1
    assert _pretrained_files() == shipped_before  # SHIP=0 leaves the shipped model alone

"""The README's measured ablation table is what the committed metric files say, and its row (c)
is the shipped model's card (so neither can drift from the other without a test failing)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from pipeline.model_source import PRETRAINED_DIR

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "ablation_v4"


def _ablation_table_module():
    spec = importlib.util.spec_from_file_location("ablation_table", ROOT / "scripts" / "ablation_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_ablation_table_is_the_committed_metrics() -> None:
    lines = _ablation_table_module().table(RESULTS)
    assert len(lines) == 2 + 6, "three variants x two modes"
    readme = (ROOT / "README.md").read_text().splitlines()
    for line in lines:
        assert line in readme, f"README lacks the table line: {line}"


def test_ablation_row_c_is_the_shipped_model() -> None:
    cards = sorted(PRETRAINED_DIR.glob("*.json"))
    assert len(cards) == 1, cards
    card = json.loads(cards[0].read_text())
    for mode in ("online", "offline"):
        for objects, key in (("all", f"heldout_{mode}"), ("appear-disappear", f"heldout_{mode}_appear_disappear")):
            measured = json.loads((RESULTS / "c" / "eval" / f"{mode}_{objects}.json").read_text())
            assert round(100 * measured["AP"], 2) == card["metrics"][key]["AP"], (mode, objects)

"""Access to a DVIS-DAQ reference case (official outputs), the slim copy in the repo or a full one.

``DAQ_REFERENCE_CASE=/path/to/caseN`` selects another case directory with the layout of the
shared reference cases (``input.npz``, ``{online,offline}/{config.yaml,weights.pt,outputs.npz}``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

BUNDLED_CASE = Path(__file__).resolve().parent / "data" / "reference_case1"
MODES = ("online", "offline")


@dataclass(frozen=True)
class ReferenceCase:
    root: Path

    @classmethod
    def selected(cls) -> "ReferenceCase":
        return cls(Path(os.environ.get("DAQ_REFERENCE_CASE", BUNDLED_CASE)))

    def config_path(self, mode: str) -> Path:
        return self.root / mode / "config.yaml"

    def inputs(self) -> dict[str, np.ndarray]:
        with np.load(self.root / "input.npz") as data:
            return {k: data[k] for k in data.files}

    def outputs(self, mode: str) -> dict[str, np.ndarray]:
        with np.load(self.root / mode / "outputs.npz") as data:
            return {k: data[k] for k in data.files}

    def slimmed(self, mode: str) -> dict[str, str]:
        """Arrays that the slim copy stores sliced: name -> slice text such as ``[:2]``."""
        meta = self.root / mode / "outputs.json"
        if not meta.exists():
            return {}
        described = json.loads(meta.read_text()).get("slimmed", {})
        return {name: text.split("  ")[0].strip() for name, text in described.items()}

    def weights_path(self, mode: str, workdir: Path) -> Path:
        """Path of the mode's weights file, rebuilding the slim copy's offline file in workdir."""
        direct = self.root / mode / "weights.pt"
        if direct.exists():
            return direct
        delta = self.root / mode / "weights_delta.pt"
        state = torch.load(self.root / "online" / "weights.pt", weights_only=True)
        state.update(torch.load(delta, weights_only=True))
        out = Path(workdir) / f"{mode}_weights.pt"
        torch.save(state, out)
        return out


def apply_slice(array: np.ndarray, text: str) -> np.ndarray:
    """Apply a slice written like ``[:2]`` or ``[:, :4]`` (what the slim copy recorded)."""
    inner = text.strip()[1:-1]
    index = []
    for part in inner.split(","):
        bounds = [int(b) if b.strip() else None for b in part.split(":")]
        index.append(slice(*bounds) if len(bounds) > 1 else bounds[0])
    return array[tuple(index)]

"""``daq-label reference-run``: run DVIS-DAQ on a reference case and write every array.

::

    daq-label reference-run --config CASE/online/config.yaml --weights CASE/online/weights.pt \\
        --frames CASE/input.npz --out OUT.npz

The model is built from the official yaml, the weights are loaded strictly, the frames of
``input.npz`` (``frames``, ``output_hw``, ``py_seed``) run through the non-streaming reference
path (:mod:`daq_model.reference`) and every array is written with ``np.savez_compressed`` under the
names of the official ``outputs.npz``. ``py_seed`` seeds the official track-id draws.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="official DVIS-DAQ yaml (or a preset / daq_config yaml)")
    parser.add_argument("--weights", required=True, help="checkpoint (official or ours)")
    parser.add_argument("--frames", required=True,
                        help="input.npz with frames (T,H,W,3) uint8 RGB, output_hw, py_seed")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--track-ids", choices=("official", "sequential"), default="official",
                        help="track id scheme (official: Python-random draws seeded by py_seed)")
    parser.add_argument("--py-seed", type=int, default=None,
                        help="override the py_seed stored in the frames file")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu, float32)")


def _read_frames(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read frames file: {exc}") from exc
    if "frames" not in arrays:
        raise ValueError(f"{path}: no 'frames' array (found: {', '.join(sorted(arrays))})")
    frames = arrays["frames"]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: 'frames' must be (T, H, W, 3) uint8 RGB, got "
                         f"{frames.dtype} {frames.shape}")
    return arrays


def run(args: argparse.Namespace) -> int:
    from daq_model.checkpoint import CheckpointError
    from daq_model.config import load_config
    from daq_model.dvis_daq import create_model
    from daq_model.reference import run_reference

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        inputs = _read_frames(Path(args.frames))
    except ValueError as exc:
        logger.error("reference-run: %s", exc)
        return 2
    frames = inputs["frames"]
    output_hw = tuple(int(v) for v in inputs.get("output_hw", frames.shape[1:3]))
    py_seed = args.py_seed if args.py_seed is not None else int(inputs.get("py_seed", 0))
    try:
        cfg = load_config(args.config).with_overrides({"inference.track_ids": args.track_ids,
                                                       "inference.precision": "fp32"})
        model = create_model(cfg, args.weights, device=args.device)
    except (CheckpointError, FileNotFoundError, ValueError, KeyError) as exc:
        logger.error("reference-run: %s", exc)
        return 2
    started = time.perf_counter()
    arrays = run_reference(model, frames, output_hw, py_seed=py_seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    logger.info("%s: %d frames, %d arrays, %d tracks, %d VIS entries in %.1f s -> %s",
                cfg.meta_architecture, frames.shape[0], len(arrays), len(arrays["hub_ids"]),
                len(arrays["vis_scores"]), time.perf_counter() - started, out)
    return 0

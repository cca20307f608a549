"""Rebuild a run's ``segmenter/model.pt`` from a shipped checkpoint, for tracker-stage experiments.

A full ``daq-label train --stage all`` seeds torch with the train config's seed, builds the model
(so the tracker and refiner start from that seeded random init) and trains the segmenter, which is
deterministic on CPU. This script rebuilds that stage-1 export without the ~40 minutes of segmenter
training: the same seeded model construction, with the backbone and segmenter head weights taken
from the shipped checkpoint. ``daq-label train --stage tracker --out RUN`` then continues from it
exactly as the full run would (up to the random point sampling of the losses).

    .venv/bin/python research/segmenter_from_shipped.py runs/exp_x \\
        [--checkpoint CKPT (default: the shipped model)] [--config small_cpu] \\
        [--model-set tracker.decoder_layers=6 ...]

``--model-set`` changes the model built around the taken segmenter (tracker or refiner settings);
train the tracker stage with the same architecture, ``daq-label train --model RUN/model.yaml``
(this script writes that yaml beside the export).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.model_source import shipped_model  # noqa: E402
from daq_model.checkpoint import read_checkpoint  # noqa: E402
from daq_model.config_tree import parse_dotted_overrides  # noqa: E402
from daq_model.dvis_daq import DVISDAQ  # noqa: E402
from daq_train.config import load_train_config  # noqa: E402
from daq_train.model_setup import export_model  # noqa: E402
from daq_train.run import exported_path  # noqa: E402

SEGMENTER_PREFIXES = ("backbone.", "sem_seg_head.")
_SHIPPED = shipped_model()
DEFAULT_CHECKPOINT = _SHIPPED[0] if _SHIPPED else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="run directory to write segmenter/model.pt into")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                        help="trained checkpoint whose segmenter to take (default: the shipped model)")
    parser.add_argument("--config", default="small_cpu", help="train config (preset or yaml) for the seed")
    parser.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a model config entry (e.g. tracker.decoder_layers=6); repeatable")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    contents = read_checkpoint(str(args.checkpoint))
    model_cfg = contents.daq_config()
    if model_cfg is None:
        print(f"{args.checkpoint}: carries no model config", file=sys.stderr)
        return 2
    try:
        overrides = parse_dotted_overrides(args.model_set, "--model-set")
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    inside = [key for key in overrides if key.startswith(("backbone.", "pixel_decoder.", "segmenter."))]
    if inside:
        print(f"--model-set {inside[0]}: expected a setting outside the segmenter", file=sys.stderr)
        return 2
    if overrides:
        model_cfg = model_cfg.with_overrides(overrides)
    train_cfg = load_train_config(args.config)
    torch.manual_seed(train_cfg.seed)  # as jobs/train.py does before stage 1 builds the model
    model = DVISDAQ(model_cfg)
    state = model.state_dict()
    taken = 0
    for key, value in contents.state_dict.items():
        if key.startswith(SEGMENTER_PREFIXES):
            if key not in state or state[key].shape != value.shape:
                print(f"{args.checkpoint}: key {key} does not fit the model", file=sys.stderr)
                return 2
            state[key] = value
            taken += 1
    model.load_state_dict(state, strict=True)
    destination = exported_path(args.run_dir, "segmenter")
    export_model(model, destination, metadata={"stage": "segmenter", "source": str(args.checkpoint),
                                               "note": "segmenter taken from a trained checkpoint"})
    if overrides:
        model_yaml = Path(args.run_dir) / "model.yaml"
        model_yaml.write_text(model_cfg.to_yaml())
        logging.info("model config with %s -> %s", overrides, model_yaml)
    logging.info("%d segmenter tensors from %s -> %s", taken, args.checkpoint, destination)
    return 0


if __name__ == "__main__":
    sys.exit(main())

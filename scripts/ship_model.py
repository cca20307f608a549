"""Ship a trained run as the default model of ``daq-label label``.

Copies ``RUN_DIR/<stage>/model.pt`` (our checkpoint format, its DAQConfig inside) to
``daq_model/pretrained/NAME.pt`` and writes the machine-readable model card ``NAME.json`` next to
it (``name`` is what :mod:`pipeline.model_source` reads; the rest documents the model: classes,
training data, command, measured time per stage from ``metrics.jsonl``, evaluation metrics from
``daq-label predict --evaluate --metrics`` / ``daq-label evaluate --out`` files). Any other
``*.pt`` in the folder is removed (exactly one shipped checkpoint is the default).

    .venv/bin/python scripts/ship_model.py runs/shipped --name daq_small_synth \\
        --command "daq-label train ..." --wall "segmenter=2750" \\
        --metrics heldout_offline=runs/shipped/eval/heldout_offline.json ...
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daq_model.checkpoint import file_sha256, read_checkpoint  # noqa: E402

PRETRAINED = Path(__file__).resolve().parent.parent / "daq_model" / "pretrained"
KEEP = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")


def stage_times(run_dir: Path) -> dict[str, dict]:
    """Per stage: iterations run and training seconds (sum over the logged windows of the mean
    step time x the window's iterations; setup and checkpoint writes not included)."""
    out = {}
    for stage in ("segmenter", "tracker", "refiner"):
        path = run_dir / stage / "metrics.jsonl"
        if not path.exists():
            continue
        seconds, last, window = 0.0, 0, 1
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec["iteration"] > last:
                window = rec["iteration"] - last
            # else: a resumed run logging again from its checkpoint: count its window anyway
            seconds += rec["s_per_iter"] * window
            last = rec["iteration"]
        out[stage] = {"iterations": last, "step_seconds": round(seconds, 1),
                      "seconds_per_iteration": round(seconds / max(last, 1), 4)}
    return out


def summarise(metrics: dict) -> dict:
    # percentages; null where undefined (-1: no ground truth in that area range)
    out = {k: (round(metrics[k] * 100, 2) if metrics[k] >= 0 else None) for k in KEEP if k in metrics}
    tr = metrics.get("tracking")
    if tr:
        out["tracking"] = {
            "id_switches": tr["id_switches"],
            "id_switches_at_reappearance": tr["id_switches_at_reappearance"],
            "matched_frame_fraction": round(tr["matched_frame_fraction"] or 0.0, 4),
            "new_objects": tr["pickup_new_objects"]["objects"],
            "new_objects_never_picked_up": tr["pickup_new_objects"]["never_picked_up"],
            "new_objects_mean_pickup_latency_frames": tr["pickup_new_objects"]["mean_latency_frames"],
            "reappearances": tr["reappearance"]["events"],
            "reappearances_recovered": tr["reappearance"]["recovered"],
            "reappearances_same_identity": tr["reappearance"]["same_identity"],
        }
    inputs = metrics.get("inputs", {})
    for key in ("mode", "frames", "seconds"):
        if key in inputs:
            out[key] = inputs[key]
    if metrics.get("objects", {}).get("subset", "all") != "all":
        out["objects"] = metrics["objects"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--stage", default=None, help="default: refiner if trained, else tracker")
    parser.add_argument("--command", required=True, help="the exact training command")
    parser.add_argument("--data", action="append", default=[], help="NAME=exact synth command")
    parser.add_argument("--wall", action="append", default=[], metavar="STAGE=SECONDS",
                        help="measured wall time of a stage (or total=...)")
    parser.add_argument("--metrics", action="append", default=[], metavar="LABEL=metrics.json")
    parser.add_argument("--official-metrics", action="append", default=[], metavar="LABEL=metrics.json",
                        help="metrics under the official post-processing (no fragment merging), "
                             "where they differ from the model's own settings")
    parser.add_argument("--note", action="append", default=[])
    args = parser.parse_args()

    stage = args.stage or ("refiner" if (args.run_dir / "refiner" / "model.pt").exists() else "tracker")
    source = args.run_dir / stage / "model.pt"
    contents = read_checkpoint(str(source))
    cfg = contents.daq_config()
    if cfg is None:
        raise SystemExit(f"{source} stores no config")
    PRETRAINED.mkdir(parents=True, exist_ok=True)
    for old in PRETRAINED.glob("*.pt"):
        if old.stem != args.name:
            old.unlink()
            old.with_suffix(".json").unlink(missing_ok=True)
            old.with_suffix(".yaml").unlink(missing_ok=True)
    # a config beside the card overrides the checkpoint's own: the new checkpoint brings its own
    (PRETRAINED / f"{args.name}.yaml").unlink(missing_ok=True)
    target = PRETRAINED / f"{args.name}.pt"
    shutil.copyfile(source, target)
    train_cfg = yaml.safe_load((args.run_dir / "train_config.yaml").read_text())["train_config"]
    card = {
        "name": args.name,
        "checkpoint": target.name,
        "checkpoint_sha256": file_sha256(str(target)),
        "checkpoint_mb": round(target.stat().st_size / 1e6, 2),
        "architecture": {"config": cfg.name, "meta_architecture": cfg.meta_architecture,
                         "tracker_mode": getattr(cfg.tracker, "mode", "daq"),
                         "config_hash": cfg.config_hash(),
                         "input": {"min_size_test": cfg.input.min_size_test,
                                   "max_size_test": cfg.input.max_size_test},
                         "queries": cfg.segmenter.num_queries, "hidden_dim": cfg.segmenter.hidden_dim},
        "classes": list(cfg.class_names),
        "training": {"command": args.command, "train_config": train_cfg.get("name"),
                     "data": dict(d.split("=", 1) for d in args.data),
                     "stages": stage_times(args.run_dir),
                     "wall_seconds": {k: float(v) for k, v in (w.split("=", 1) for w in args.wall)},
                     "source": str(source), "metadata": contents.metadata},
        "metrics": {label: summarise(json.loads(Path(p).read_text()))
                    for label, p in (m.split("=", 1) for m in args.metrics)},
        **({"metrics_official_postprocessing": {label: summarise(json.loads(Path(p).read_text()))
                                                for label, p in (m.split("=", 1) for m in args.official_metrics)}}
           if args.official_metrics else {}),
        "notes": args.note,
        "limits": ("Trained only on procedural synthetic videos of six textured shape categories "
                   "(disc, square, triangle, star, ring, cross), each with its own colour family, "
                   "over crops of six sample clips. On "
                   "real footage it labels shape-like regions with these synthetic class names; "
                   "its labels carry no real-world categories. See MODEL_CARD.md."),
    }
    (PRETRAINED / f"{args.name}.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps({"shipped": str(target), "mb": card["checkpoint_mb"],
                      "sha256": card["checkpoint_sha256"][:12]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

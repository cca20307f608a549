"""``daq-label train``: train DVIS-DAQ (segmenter, tracker, refiner) on YouTube-VIS-format data.

Examples::

    daq-label train --data data/synth_train --stage all --out runs/small --config small_cpu
    daq-label train --data data/synth_train --stage tracker --out runs/small --resume
    daq-label train --data data/synth_train --stage tracker --out runs/ablation_a --referring \
        --init runs/small/segmenter/model.pt       # ablation (a); then --stage refiner --out same
    daq-label train --annotations ytvis/train.json --images ytvis/train/JPEGImages \\
        --stage segmenter --out runs/ytvis --config official --model ytvis19_online_r50
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from daq_model.config_tree import parse_dotted_overrides
from daq_train.config import STAGES, TRAIN_PRESETS, TrainConfig, load_train_config

logger = logging.getLogger("jobs.train")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "Stages: 'segmenter' trains backbone + pixel decoder + decoder from scratch; 'tracker' "
        "trains the DAQ tracker on the frozen segmenter (starts from OUT/segmenter/model.pt); "
        "'refiner' trains the offline refiner on the frozen tracker (from OUT/tracker/model.pt); "
        "'all' runs them in order (the refiner only for offline models). Each stage writes "
        "OUT/<stage>/model.pt (loads with create_model / --checkpoint of the other commands), "
        "OUT/<stage>/last.pt (resume state) and OUT/<stage>/metrics.jsonl.\n"
        "\nIssue #5 ablation, same budget: (a) --referring (plain referring tracker, DVIS-style "
        "anchors), (b) --no-eds (DAQ without emergence/disappearance simulation), (c) neither "
        "(DAQ + EDS). The mode is stored in OUT/train_config.yaml and in the exported model's "
        "config, so a later --stage refiner in OUT trains on the same tracker mode.\n"
        f"Train presets: {', '.join(TRAIN_PRESETS)}.")
    data = parser.add_argument_group("data (YouTube-VIS format; give several from easiest to hardest "
                                     "for --curriculum: the order is their level)")
    data.add_argument("--data", action="append", default=[], metavar="ROOT",
                      help="dataset root with ROOT/annotations.json and ROOT/JPEGImages/ (repeatable)")
    data.add_argument("--annotations", action="append", default=[], metavar="JSON",
                      help="an annotation file (YouTube-VIS 2019/2021, OVIS); pair with --images")
    data.add_argument("--images", action="append", default=[], metavar="DIR",
                      help="folder the annotation file's file_names are relative to")
    data.add_argument("--curriculum", default=None, metavar="PHASES",
                      help="easy-to-hard data schedule 'ITER:W0,W1,... ITER:...' (weights per level)")
    run = parser.add_argument_group("run")
    run.add_argument("--stage", choices=(*STAGES, "all"), default="all", help="stage(s) to train")
    run.add_argument("--out", required=True, type=Path, metavar="RUN_DIR", help="run directory")
    run.add_argument("--config", default=None, metavar="PRESET|YAML",
                     help="train config (default: the run directory's, else small_cpu)")
    run.add_argument("--model", default=None, metavar="PRESET|YAML",
                     help="model architecture (daq_model preset or yaml; default: the train config's)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a train config entry, e.g. segmenter.optim.base_lr=2e-4")
    run.add_argument("--iters", type=int, default=None, help="iterations of each stage run (overrides the config)")
    run.add_argument("--resume", action="store_true", help="continue from OUT/<stage>/last.pt")
    run.add_argument("--init", type=Path, default=None,
                     help="start the (single) stage from this checkpoint instead of the previous stage's")
    run.add_argument("--no-eds", action="store_true",
                     help="ablation: no emergence / disappearance simulation in the tracker stage")
    run.add_argument("--referring", action="store_true",
                     help="ablation baseline (a): the plain referring tracker with DVIS-style "
                          "anchors instead of DAQ (same as --set tracker.daq=false; the exported "
                          "model has tracker.mode=referring)")
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    run.add_argument("--threads", type=int, default=None,
                     help="torch CPU (intra-op) threads; the tracker stage runs its frozen segmenter "
                          "on one more thread of its own")


def _sources(args: argparse.Namespace):
    from daq_train.data import DataSource

    if len(args.annotations) != len(args.images):
        raise ValueError("give one --images folder per --annotations file")
    sources = [DataSource.from_root(root) for root in args.data]
    sources += [DataSource(Path(a), Path(i), Path(a).stem) for a, i in zip(args.annotations, args.images)]
    if not sources:
        raise ValueError("no training data: give --data ROOT or --annotations/--images")
    return [DataSource(s.annotation_file, s.image_dir, s.name, level) for level, s in enumerate(sources)]


def _train_config(args: argparse.Namespace) -> TrainConfig:
    from daq_train.run import read_train_config

    if args.config is not None:
        cfg = load_train_config(args.config)
    else:
        cfg = read_train_config(args.out) or load_train_config("small_cpu")
    overrides: dict[str, object] = parse_dotted_overrides(args.set)
    if args.model is not None:
        overrides["model"] = args.model
    if args.curriculum is not None:
        overrides["curriculum"] = args.curriculum
    if args.referring:
        overrides["tracker.daq"] = False
    if args.no_eds:
        overrides["tracker.emergence_simulation"] = False
        overrides["tracker.disappearance_simulation"] = False
    if args.iters is not None:
        if args.iters <= 0:
            raise ValueError("--iters must be positive")
        for stage in STAGES:
            overrides[f"{stage}.iters"] = args.iters
    return cfg.with_overrides(overrides) if overrides else cfg


def run(args: argparse.Namespace) -> int:
    logging.getLogger("daq_train").setLevel(min(logging.getLogger().level or logging.INFO, logging.INFO))
    from daq_train.run import load_datasets, make_model_config, run_stage, stages_to_run

    try:
        cfg = _train_config(args)
        sources = _sources(args)
        datasets = load_datasets(sources)
        model_cfg = make_model_config(cfg, datasets)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"daq-label train: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(cfg.seed)
    stages = stages_to_run(args.stage, model_cfg.offline)
    if args.init is not None and len(stages) != 1:
        print("daq-label train: --init needs a single --stage", file=sys.stderr)
        return 2
    results = []
    for stage in stages:
        try:
            results.append(run_stage(stage, cfg, sources, args.out, device, init=args.init, resume=args.resume))
        except (FileNotFoundError, ValueError, NotImplementedError) as exc:
            print(f"daq-label train: stage {stage}: {exc}", file=sys.stderr)
            return 1
    print(f"{'stage':<10} {'iter':>12} {'last loss':>10} {'s/iter':>8}  checkpoint")
    for r in results:
        loss = f"{r.last_loss:.4f}" if r.last_loss is not None else "-"
        speed = f"{r.seconds_per_iter:.3f}" if r.seconds_per_iter is not None else "-"
        print(f"{r.stage:<10} {f'{r.iteration}/{r.max_iter}':>12} {loss:>10} {speed:>8}  {r.checkpoint}")
    return 0

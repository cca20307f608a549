"""Tracker-stage training speed on CPU: prefetching the next clip on a second thread, side by side.

The tracker stage spends about half of every step in the frozen segmenter's forward pass. On CPU
``TrackerLoss`` draws the next full clip and runs that pass on a background thread while the
current step trains (``daq_train/prefetch.py``). This benchmark trains the tracker of the shipped
model on full 5-frame clips (the ``small_cpu`` preset's phase after iteration 1,000) for
``--iters`` iterations in four configurations, each in its own process (torch's thread count is
per process), one after the other, and prints seconds per iteration and the speed-up over the
old default (no prefetching, 2 intra-op threads, what ``scripts/train_shipped.sh`` used before).
The losses of the runs must agree (prefetching changes no result); the script checks that too.

    .venv/bin/python benchmarks/tracker_training_throughput.py                 # about 2 minutes
    .venv/bin/python benchmarks/tracker_training_throughput.py --iters 100 --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCENARIOS = (("no prefetch", False, 2), ("no prefetch", False, 1), ("prefetch", True, 1), ("prefetch", True, 2))


def _worker(args: argparse.Namespace) -> None:
    import torch

    from daq_train.config import get_train_preset
    from daq_train.data import DataSource
    from daq_train.model_setup import build_stage_model
    from daq_train.run import load_datasets, make_model_config, make_sampler
    from daq_train.stage_tracker import TrackerLoss

    torch.set_num_threads(args.threads)
    cfg = get_train_preset("small_cpu").with_overrides({"tracker.full_clip_from": 0})
    datasets = load_datasets([DataSource.from_root(args.data)])
    model_cfg = make_model_config(cfg, datasets)
    torch.manual_seed(0)
    model = build_stage_model(model_cfg, "tracker", args.init, "cpu")
    loss_fn = TrackerLoss(model, make_sampler(datasets, cfg, model_cfg, "tracker"), cfg, prefetch=args.prefetch)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    totals, start = [], 0.0
    for it in range(args.warmup + args.iters):
        if it == args.warmup:
            start = time.perf_counter()
        total = sum(loss_fn(it).values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        totals.append(round(float(total.detach()), 4))
    seconds = time.perf_counter() - start
    loss_fn.clips.close()
    print(json.dumps({"seconds_per_iteration": seconds / args.iters, "losses": totals}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=60, help="timed iterations per configuration")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--init", type=Path, default=ROOT / "daq_model" / "pretrained" / "daq_small_synth_v4.pt",
                        help="checkpoint whose segmenter (and tracker) start the stage")
    parser.add_argument("--data", type=Path, default=None,
                        help="YouTube-VIS-format set (default: 30 videos of the train_appear_disappear preset)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prefetch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.prefetch = bool(args.prefetch)
        _worker(args)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger("benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "data"
            subprocess.run([str(Path(sys.executable).parent / "daq-label"), "synth", str(data), "--preset",
                            "train_appear_disappear", "--seed", "4", "--videos", "30"],
                           check=True, capture_output=True)
        rows = []
        for name, prefetch, threads in SCENARIOS:
            log.info("running: %s, %d intra-op thread(s), %d iterations", name, threads, args.iters)
            done = subprocess.run([sys.executable, __file__, "--worker", "--prefetch", str(int(prefetch)),
                                   "--threads", str(threads), "--iters", str(args.iters), "--warmup",
                                   str(args.warmup), "--init", str(args.init), "--data", str(data)],
                                  check=True, capture_output=True, text=True)
            rows.append({"scenario": name, "threads": threads,
                         **json.loads(done.stdout.strip().splitlines()[-1])})
    base = rows[0]["seconds_per_iteration"]
    print(f"{'scenario':<14}{'threads':>8}{'s/iter':>9}{'speed-up':>10}")
    for row in rows:
        row["speedup_over_old_default"] = base / row["seconds_per_iteration"]
        print(f"{row['scenario']:<14}{row['threads']:>8}{row['seconds_per_iteration']:>9.3f}"
              f"{row['speedup_over_old_default']:>9.2f}x")
    by_threads: dict[int, list] = {}
    for row in rows:
        by_threads.setdefault(row["threads"], []).append(row["losses"])
    same = all(all(losses == group[0] for losses in group) for group in by_threads.values())
    print(f"losses identical with and without prefetching (same thread count): {same}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()

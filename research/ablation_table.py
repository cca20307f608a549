"""Print the issue #5 ablation table (markdown) from the metrics files of ``research/ablation.sh``.

    .venv/bin/python research/ablation_table.py runs/ablation

Reads ``OUT/<variant>/eval/<mode>_<objects>.json`` (``daq-label evaluate --out`` files) for the
variants a, b, c and the modes online, offline. Columns: AP and AP50 on all objects, AP on the
objects that appear or disappear, and tracking figures on those objects (ID switches, new objects
never picked up, mean pick-up latency in frames, re-appearances recovered under the same identity).

Runs of the same variant with other training seeds (``research/ablation_seed.sh``) sit beside it
as ``OUT/<variant>_seed<N>/`` (``OUT/<variant>/`` is the preset's seed, 42). ``--seed N`` prints the
per-run table of seed N; ``--seeds`` prints, per variant, the mean AP over its seeds with each
seed's value, on all objects and on the objects that appear or disappear.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

VARIANTS = {
    "a": "(a) referring tracker, DVIS-style anchors",
    "b": "(b) + DAQ",
    "c": "(c) + DAQ + EDS",
}
MODES = ("online", "offline")
DEFAULT_SEED = 42  # the small_cpu train preset's seed: OUT/<variant>/ without a suffix
SEED_HEADER = ("| variant | seeds | online AP | online AP (a/d) | offline AP | offline AP (a/d) |")
HEADER = ("| variant | mode | AP | AP50 | AP (appear/disappear) | AR10 (a/d) | ID switches (a/d) "
          "| new objects never picked up | pick-up latency (frames) | re-appearances, same id |")


def _pct(value: float | None) -> str:
    return "-" if value is None or value < 0 else f"{100 * value:.1f}"


def row(variant: str, mode: str, all_objects: dict, changing: dict) -> str:
    tr = changing.get("tracking") or {}
    pickup = tr.get("pickup_new_objects", {})
    reapp = tr.get("reappearance", {})
    latency = pickup.get("mean_latency_frames")
    cells = [
        VARIANTS[variant], mode, _pct(all_objects["AP"]), _pct(all_objects["AP50"]),
        _pct(changing["AP"]), _pct(changing["AR10"]), str(tr.get("id_switches", "-")),
        f"{pickup.get('never_picked_up', '-')} / {pickup.get('objects', '-')}",
        "-" if latency is None else f"{latency:.2f}",
        f"{reapp.get('same_identity', '-')} / {reapp.get('events', '-')}",
    ]
    return "| " + " | ".join(cells) + " |"


def run_dir(out_dir: Path, variant: str, seed: int = DEFAULT_SEED) -> Path:
    """``OUT/<variant>/`` for the preset's seed, ``OUT/<variant>_seed<N>/`` for another."""
    return out_dir / (variant if seed == DEFAULT_SEED else f"{variant}_seed{seed}")


def table(out_dir: Path, seed: int = DEFAULT_SEED) -> list[str]:
    """The per-run table of the runs trained with ``seed``."""
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    for variant in VARIANTS:
        for mode in MODES:
            paths = [run_dir(out_dir, variant, seed) / "eval" / f"{mode}_{objects}.json"
                     for objects in ("all", "appear-disappear")]
            if not all(p.exists() for p in paths):
                continue
            all_objects, changing = (json.loads(p.read_text()) for p in paths)
            lines.append(row(variant, mode, all_objects, changing))
    return lines


def seed_runs(out_dir: Path, variant: str) -> dict[int, Path]:
    """Seed -> run directory of ``variant`` that has all four metric files."""
    runs: dict[int, Path] = {}
    for path in out_dir.iterdir() if out_dir.is_dir() else ():
        match = re.fullmatch(rf"{variant}(?:_seed(\d+))?", path.name)
        if not match:
            continue
        complete = all((path / "eval" / f"{mode}_{objects}.json").exists()
                       for mode in MODES for objects in ("all", "appear-disappear"))
        if complete:
            runs[int(match.group(1)) if match.group(1) else DEFAULT_SEED] = path
    return dict(sorted(runs.items()))


def _mean_cell(values: list[float]) -> str:
    each = ", ".join(f"{100 * v:.1f}" for v in values)
    return f"{100 * statistics.fmean(values):.1f} ({each})"


def seed_table(out_dir: Path) -> list[str]:
    """Per variant: mean AP over its seeds (each seed's value in brackets, in seed order)."""
    lines = [SEED_HEADER, "|" + "---|" * (SEED_HEADER.count("|") - 1)]
    for variant, name in VARIANTS.items():
        runs = seed_runs(out_dir, variant)
        if not runs:
            continue
        cells = [name, ", ".join(str(seed) for seed in runs)]
        for mode in MODES:
            for objects in ("all", "appear-disappear"):
                values = [json.loads((run / "eval" / f"{mode}_{objects}.json").read_text())["AP"]
                          for run in runs.values()]
                cells.append(_mean_cell(values))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path, nargs="?", default=Path("runs/ablation"))
    parser.add_argument("--seeds", action="store_true",
                        help="mean AP per variant over OUT/<variant>[_seed<N>]/ instead of the per-run table")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"per-run table of the runs with this train seed (default {DEFAULT_SEED}: "
                             "OUT/<variant>/; another N: OUT/<variant>_seed<N>/)")
    args = parser.parse_args()
    lines = seed_table(args.out_dir) if args.seeds else table(args.out_dir, args.seed)
    if len(lines) == 2:
        where = run_dir(args.out_dir, "<variant>", DEFAULT_SEED if args.seeds else args.seed)
        print(f"no metrics under {where}/eval/", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

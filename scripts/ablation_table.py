"""Print the issue #5 ablation table (markdown) from the metrics files of ``scripts/ablation.sh``.

    .venv/bin/python scripts/ablation_table.py runs/ablation

Reads ``OUT/<variant>/eval/<mode>_<objects>.json`` (``daq-label evaluate --out`` files) for the
variants a, b, c and the modes online, offline. Columns: AP and AP50 on all objects, AP on the
objects that appear or disappear, and tracking figures on those objects (ID switches, new objects
never picked up, mean pick-up latency in frames, re-appearances recovered under the same identity).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VARIANTS = {
    "a": "(a) referring tracker, DVIS-style anchors",
    "b": "(b) + DAQ",
    "c": "(c) + DAQ + EDS",
}
MODES = ("online", "offline")
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


def table(out_dir: Path) -> list[str]:
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    for variant in VARIANTS:
        for mode in MODES:
            paths = [out_dir / variant / "eval" / f"{mode}_{objects}.json" for objects in ("all", "appear-disappear")]
            if not all(p.exists() for p in paths):
                continue
            all_objects, changing = (json.loads(p.read_text()) for p in paths)
            lines.append(row(variant, mode, all_objects, changing))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path, nargs="?", default=Path("runs/ablation"))
    args = parser.parse_args()
    lines = table(args.out_dir)
    if len(lines) == 2:
        print(f"no metrics under {args.out_dir}/<variant>/eval/", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

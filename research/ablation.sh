#!/usr/bin/env bash
# Issue #5, the paper's claim in miniature: three trackers on the same frozen segmenter with the
# same budget (the small_cpu preset's tracker and refiner iterations, on the shipped recipe's
# tracker data runs/data/synth_train_ad), each evaluated online
# (tracker masks) and offline (refiner masks) on the held-out appear/disappear set, on all objects
# and on the objects that appear or disappear.
#
#   (a) plain referring tracker, DVIS-style anchors   daq-label train ... --referring
#   (b) + DAQ (dynamic anchor queries), no EDS        daq-label train ... --no-eds
#   (c) + DAQ + EDS (the shipped recipe)              daq-label train ...
#
# Usage: research/ablation.sh SEGMENTER_MODEL.pt [OUT_DIR]     (variants: VARIANTS="a b c")
# Data (README, "The paper's claim in miniature"):
#   daq-label synth runs/data/synth_train_ad --preset train_appear_disappear --seed 4
#   daq-label synth runs/data/synth_heldout --preset heldout_appear_disappear --seed 2
# The three variants are independent: run them side by side with THREADS=1 on a 2-core machine
# (measured: (a) and (b) side by side, about 85 minutes with evaluation).
# research/ablation_table.py OUT_DIR prints the README table.
set -euo pipefail

SEG=${1:?segmenter checkpoint (RUN/segmenter/model.pt)}
OUT=${2:-runs/ablation}
D=${D:-.venv/bin/daq-label}
TRAIN=${TRAIN:-runs/data/synth_train_ad}
HELDOUT=${HELDOUT:-runs/data/synth_heldout}
THREADS=${THREADS:-1}
VARIANTS=${VARIANTS:-a b c}
TRAIN_FLAGS=${TRAIN_FLAGS:-}   # e.g. "--iters 2" for a smoke run

flags_of() {
  case "$1" in
    a) echo "--referring" ;;
    b) echo "--no-eds" ;;
    c) echo "" ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

for v in $VARIANTS; do
  run="$OUT/$v"
  # shellcheck disable=SC2046,SC2086
  $D train --data "$TRAIN" --stage tracker --out "$run" --init "$SEG" --threads "$THREADS" $TRAIN_FLAGS $(flags_of "$v")
  # shellcheck disable=SC2086
  $D train --data "$TRAIN" --stage refiner --out "$run" --threads "$THREADS" $TRAIN_FLAGS
  D="$D" bash "$(dirname "$0")/../scripts/evaluate_run.sh" "$run" "$HELDOUT" "$THREADS"
done

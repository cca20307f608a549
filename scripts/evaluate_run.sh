#!/usr/bin/env bash
# Evaluate a training run's offline model on a held-out YouTube-VIS-format set: predictions online
# (tracker masks) and offline (refiner masks), each scored on all objects and on the objects that
# appear or disappear. Writes RUN/eval/pred_<mode>.json and RUN/eval/<mode>_<objects>.json.
#
#   scripts/evaluate_run.sh RUN_DIR HELDOUT_ROOT [THREADS]
set -euo pipefail

RUN=${1:?run directory (with refiner/model.pt)}
HELDOUT=${2:?held-out dataset root (annotations.json, JPEGImages/)}
THREADS=${3:-1}
D=${D:-.venv/bin/daq-label}

mkdir -p "$RUN/eval"
for mode in online offline; do
  $D predict --data "$HELDOUT" --checkpoint "$RUN/refiner/model.pt" --mode "$mode" \
    --threads "$THREADS" --out "$RUN/eval/pred_$mode.json"
  for objects in all appear-disappear; do
    $D evaluate "$RUN/eval/pred_$mode.json" "$HELDOUT/annotations.json" --objects "$objects" \
      --out "$RUN/eval/${mode}_${objects}.json"
  done
done

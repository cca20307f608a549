#!/usr/bin/env bash
# Retrain the model daq-label ships (daq_model/pretrained), from nothing, in one command:
# synthetic data -> the three training stages (train preset small_cpu) -> held-out evaluation
# (online and offline, all objects and the objects that appear or disappear) -> ship with its card.
#
#   bash scripts/train_shipped.sh [RUN_DIR]        (default runs/shipped; THREADS=2 by default)
#
# About 90 minutes on 2 CPU cores (see daq_model/pretrained/MODEL_CARD.md for the measured stage times).
# Set SHIP=0 to train and evaluate without replacing the shipped model.
set -euo pipefail

RUN=${1:-runs/shipped}
D=${D:-.venv/bin/daq-label}
PY=${PY:-.venv/bin/python}
THREADS=${THREADS:-2}
NAME=${NAME:-daq_small_synth_v3}
SHIP=${SHIP:-1}
TRAIN=${TRAIN:-runs/data/synth_train}
HELDOUT=${HELDOUT:-runs/data/synth_heldout}
TRAIN_FLAGS=${TRAIN_FLAGS:-}   # e.g. "--iters 2" for a smoke run (with SHIP=0)

[ -f "$TRAIN/annotations.json" ] || $D synth "$TRAIN" --preset train --seed 0
[ -f "$HELDOUT/annotations.json" ] || $D synth "$HELDOUT" --preset heldout_appear_disappear --seed 2

start=$(date +%s)
# shellcheck disable=SC2086
$D train --data "$TRAIN" --stage all --out "$RUN" --config small_cpu --threads "$THREADS" $TRAIN_FLAGS
wall=$(( $(date +%s) - start ))

D="$D" bash "$(dirname "$0")/evaluate_run.sh" "$RUN" "$HELDOUT" "$THREADS"

if [ "$SHIP" = 1 ]; then
  $PY scripts/ship_model.py "$RUN" --name "$NAME" \
    --command "bash scripts/train_shipped.sh $RUN" \
    --data "synth_train=daq-label synth $TRAIN --preset train --seed 0" \
    --data "synth_heldout=daq-label synth $HELDOUT --preset heldout_appear_disappear --seed 2" \
    --wall "total=$wall" \
    --metrics "heldout_online=$RUN/eval/online_all.json" \
    --metrics "heldout_online_appear_disappear=$RUN/eval/online_appear-disappear.json" \
    --metrics "heldout_offline=$RUN/eval/offline_all.json" \
    --metrics "heldout_offline_appear_disappear=$RUN/eval/offline_appear-disappear.json"
fi

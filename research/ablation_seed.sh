#!/usr/bin/env bash
# Issue #5 ablation: one variant trained again with another seed, on the shipped segmenter.
#
#   research/ablation_seed.sh VARIANT SEED [OUT_DIR]      (VARIANT a, b or c; OUT_DIR runs/ablation)
#
# Writes OUT_DIR/<VARIANT>_seed<SEED>/ beside research/ablation.sh's OUT_DIR/<VARIANT>/ (the train
# preset's seed, 42), so `research/ablation_table.py OUT_DIR --seeds` averages over both.
# The seed is the train config's: it sets the random init of the tracker and refiner (the model is
# built under it by research/segmenter_from_shipped.py, which takes the shipped segmenter's weights)
# and the data order, clip sampling and EDS draws of both stages. Same data and budget as
# research/ablation.sh; about 80 minutes per run on one thread with two runs side by side.
set -euo pipefail

V=${1:?variant: a, b or c}
SEED=${2:?training seed}
OUT=${3:-runs/ablation}
D=${D:-.venv/bin/daq-label}
PY=${PY:-.venv/bin/python}
TRAIN=${TRAIN:-runs/data/synth_train_ad}
HELDOUT=${HELDOUT:-runs/data/synth_heldout}
THREADS=${THREADS:-1}
TRAIN_FLAGS=${TRAIN_FLAGS:-}   # e.g. "--iters 2" for a smoke run

case "$V" in
  a) FLAGS="--referring" ;;
  b) FLAGS="--no-eds" ;;
  c) FLAGS="" ;;
  *) echo "unknown variant $V (a, b or c)" >&2; exit 2 ;;
esac
RUN="$OUT/${V}_seed$SEED"
mkdir -p "$RUN"
printf 'train_config:\n  base: small_cpu\n  seed: %s\n' "$SEED" > "$RUN/train_seed.yaml"
"$PY" "$(dirname "$0")/segmenter_from_shipped.py" "$RUN" --config "$RUN/train_seed.yaml"
# shellcheck disable=SC2086
$D train --data "$TRAIN" --stage tracker --out "$RUN" --threads "$THREADS" --set seed="$SEED" $TRAIN_FLAGS $FLAGS
# shellcheck disable=SC2086
$D train --data "$TRAIN" --stage refiner --out "$RUN" --threads "$THREADS" --set seed="$SEED" $TRAIN_FLAGS
D="$D" bash "$(dirname "$0")/../scripts/evaluate_run.sh" "$RUN" "$HELDOUT" "$THREADS"

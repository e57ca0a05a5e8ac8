#!/usr/bin/env bash
# Issue 17, section 3.3: cuda-convnet's conv-local nets without (13pct) and with (11pct) response
# normalisation, SEEDS seeds each, on a shortened schedule of the files' methodology (EPOCHS epochs, epsW /10
# after each epoch in DROPS). The methodology: 160 epochs, drops after 140 and 150 (13pct); 520 epochs, drops
# after 500 and 510 (11pct); the default 15 epochs with drops after 13 and 14 keeps them near the end. Each
# run is scored with the cropped provider's ten views on the test split, then one table
# (python -m paper_repro.sweep, seeds pooled, the 13pct net as the reference).
# JOBS runs at a time, THREADS torch threads each.
# Usage: results/cifar10/section33.sh STORE RUNS_DIR SWEEP_DIR
# Rerunnable: a finished run is skipped (--auto-resume finds its checkpoint and has nothing left to do).
set -euo pipefail
STORE=$1 RUNS=$2 SWEEP=$3
EPOCHS=${EPOCHS:-15} DROPS=${DROPS:-13,14} SEEDS=${SEEDS:-"0 1"} JOBS=${JOBS:-2} THREADS=${THREADS:-1}
mkdir -p "$RUNS"
# The slower net (rnorm, about 1.8x the time per epoch) first, so that JOBS lanes finish close together.
for config in cifar10_conv_local_rnorm cifar10_conv_local; do
  for seed in $SEEDS; do echo "$config $seed"; done
done | xargs -P "$JOBS" -L 1 bash -c '
  run='"$RUNS"'/$0_s$1
  echo "$(date -u +%H:%M:%S) start $run"
  export OMP_NUM_THREADS='"$THREADS"'
  python -m paper_repro.train --data '"$STORE"' --config $0 --seed $1 --epochs '"$EPOCHS"' \
    --lr-drop-epochs '"$DROPS"' --out "$run" --auto-resume --no-progress > "$run.log" 2>&1
  [ -f "$run/eval.json" ] || python -m paper_repro.evaluate --data '"$STORE"' --split test --gpus cpu \
    --checkpoint "$run/checkpoint.pt" --json "$run/eval.json" --no-progress > "$run.eval.log" 2>&1
  echo "$(date -u +%H:%M:%S) done  $run: $(tail -n 1 "$run.eval.log")"'
python -m paper_repro.sweep --runs "$RUNS"/cifar10_conv_local*_s[0-9] --reference "$RUNS/cifar10_conv_local_s0" \
  --out "$SWEEP"

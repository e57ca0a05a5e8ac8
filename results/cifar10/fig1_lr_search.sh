#!/usr/bin/env bash
# Issue 17, Figure 1: each unit at its fastest learning rate from a small search (the paper chose each net's
# rate "to make training as fast as possible"), then the figure and the ratio from the fastest run of each.
# Every run stops after the first epoch at or below 25 % training error (--stop-at-train-error 0.25):
# nothing after it changes the epochs-to-target. A ReLU run gets RELU_EPOCHS (the configs' lr reaches 25 % in
# 10: a rate that needs more is not the fastest), a tanh run TANH_EPOCHS. tanh starts above the configs' 0.001,
# which had 31.1 % training error after 40 epochs (results/cifar10.md). JOBS runs at a time, THREADS threads each.
# Usage: results/cifar10/fig1_lr_search.sh STORE RUNS_DIR OUT_DIR
# Rerunnable: a finished run is skipped (--auto-resume finds its checkpoint and has nothing left to do).
set -euo pipefail
STORE=$1 RUNS=$2 OUT=$3
RELU_LRS=${RELU_LRS:-"0.001 0.002 0.004 0.008"} TANH_LRS=${TANH_LRS:-"0.002 0.004 0.008 0.016"}
RELU_EPOCHS=${RELU_EPOCHS:-12} TANH_EPOCHS=${TANH_EPOCHS:-60} JOBS=${JOBS:-2} THREADS=${THREADS:-1}
NOTE=${NOTE:-"CIFAR-10, each unit at its fastest lr"}
mkdir -p "$RUNS" "$OUT"
{
  for lr in $RELU_LRS; do echo "relu $lr $RELU_EPOCHS"; done
  for lr in $TANH_LRS; do echo "tanh $lr $TANH_EPOCHS"; done
} | xargs -P "$JOBS" -L 1 bash -c '
  run='"$RUNS"'/$0_lr$1
  echo "$(date -u +%H:%M:%S) start $run"
  OMP_NUM_THREADS='"$THREADS"' python -m paper_repro.train --data '"$STORE"' --config cifar10_fig1_$0 --lr $1 \
    --epochs $2 --stop-at-train-error 0.25 --out "$run" --auto-resume --no-progress > "$run.log" 2>&1
  echo "$(date -u +%H:%M:%S) done  $run: $(tail -n 1 "$run.log")"'
python -m paper_repro.cifar_fig1 --relu "$RUNS"/relu_lr*/ --tanh "$RUNS"/tanh_lr*/ --plot "$OUT/fig1.png" \
  --json "$OUT/fig1.json" --note "$NOTE"

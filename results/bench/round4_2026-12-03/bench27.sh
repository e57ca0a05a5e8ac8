#!/bin/bash
# Quarter-width Imagewoof epoch + validation, whole processes, quiet machine, in turn per round:
# A = this session's code (paper-text), B = 2afb85b (before issue 18, its JPEG store),
# A16 = A with --bf16 (paper-text), R = A with the default (released) recipe, R0 = 8e33da1 (last session's end), released recipe.
run() { # name folder store extra
  rm -rf /work/runs/b27_$1
  cd $2 && /usr/bin/time -f "$1 wall %e s user %U sys %S maxrss %M KB" python -m paper_repro.train --data $3 --width 0.25 --epochs 1 --gpus cpu --out /work/runs/b27_$1 --no-progress $4 2>&1 | grep -E "wall|done after" | cut -c1-200
}
for i in 1 2 3; do
  echo "round $i $(date +%T)"
  run A /work/snap27b /work/data/woof_raw "--recipe paper-text"
  run B /work/before /work/data/woof_jpeg_before ""
  run A16 /work/snap27b /work/data/woof_raw "--recipe paper-text --bf16"
  run R /work/snap27b /work/data/woof_raw ""
  run R0 /work/snap27 /work/data/woof_raw ""
done
# the training step at width 1 and 0.25, fp32 against bf16 autocast (AMX on this CPU), same machine, quiet
cd /work/snap27b
for b in "" "--bf16"; do for w in 1 0.25; do
  echo "bench train width $w $b $(date +%T)"
  python -m paper_repro.bench train --gpus cpu,cpu --width $w --batch-size 128 --steps 2 --repeats 3 --warmup 1 --peak-size 2048 $b --json /work/runs/b27_train_w${w}${b:+_bf16}.json > /dev/null 2>&1
done; done
echo "end $(date +%T)"

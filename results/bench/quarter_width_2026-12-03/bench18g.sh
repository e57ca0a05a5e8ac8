#!/bin/bash
# quarter-width Imagewoof epoch + validation, whole processes: A (this session's HEAD) C (4295331) B (2afb85b) in turn
run() { # name folder store extra
  rm -rf /work/runs/b18_$1
  cd $2 && /usr/bin/time -f "$1 wall %e s user %U sys %S maxrss %M KB" python -m paper_repro.train --data $3 --width 0.25 --epochs 1 --gpus cpu --out /work/runs/b18_$1 --no-progress $4 2>&1 | grep -E "wall|done after" | cut -c1-160
}
for i in 0 1 2; do
  echo "triple $i $(date +%T)"
  run A /work/after /work/data/woof_raw "--recipe paper-text"
  run C /work/snap25 /work/data/woof_raw "--recipe paper-text"
  run B /work/before /work/data/woof_jpeg_before ""
done

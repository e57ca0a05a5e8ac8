#!/bin/bash
# Quarter-width Imagewoof epoch + validation, whole processes, quiet machine (the width-1 runs SIGSTOPped), in turn per round:
# A28 = c1dd1fc (patches cut with every thread when the loader has no workers), paper-text recipe;
# B = 2afb85b (before issue 18, its JPEG store, its default recipe); A27 = 1b4871b (stop 27's A), paper-text.
run() { # name folder store extra
  rm -rf /work/runs/b28_$1
  cd $2 && PYTHONPATH=$2 /usr/bin/time -f "$1 wall %e s user %U sys %S maxrss %M KB" python -m paper_repro.train --data $3 --width 0.25 --epochs 1 --gpus cpu --out /work/runs/b28_$1 --no-progress $4 2>&1 | grep -E "wall|done after" | cut -c1-200
}
for i in 1 2 3; do
  echo "round $i $(date +%T)"
  run A28 /work/snap28 /work/data/woof_raw "--recipe paper-text"
  run B /work/before /work/data/woof_jpeg_before ""
  run A27 /work/snap27b /work/data/woof_raw "--recipe paper-text"
done
echo "end $(date +%T)"

#!/bin/bash
# The demo, whole process, quiet (width-1 runs SIGSTOPped), in turn: A28 = c1dd1fc, B = 2afb85b; then the
# quarter-width training step against torchvision's (bench train, batch 128, two threads) at c1dd1fc.
demo() { # name folder
  rm -rf /work/runs/b28_demo_$1
  cd $2 && PYTHONPATH=$2 /usr/bin/time -f "demo $1 wall %e s user %U sys %S maxrss %M KB" python -m paper_repro.demo --workdir /work/runs/b28_demo_$1 --out /work/runs/b28_demo_$1/report 2>&1 | tail -n 2 | cut -c1-200
}
for i in 1 2; do
  echo "round $i $(date +%T)"
  demo A28 /work/snap28
  demo B /work/before
done
cd /work/snap28
echo "bench train width 0.25 $(date +%T)"
PYTHONPATH=/work/snap28 python -m paper_repro.bench train --gpus cpu,cpu --width 0.25 --batch-size 128 --steps 2 --repeats 3 --warmup 1 --peak-size 2048 --json /work/runs/b28_train_w0.25.json > /dev/null 2>&1
echo "end $(date +%T)"

#!/bin/bash
# stop 29: imagenet_subset_cpu at 20 epochs, the README's four subset commands verbatim (paths substituted), quiet
# (the width-1 runs stopped by SIGSTOP meanwhile): Imagewoof, then the second subset (30 Tiny ImageNet classes),
# then torchvision's baseline on Imagewoof for the same wall time as Imagewoof's train + evaluate.
cd /work/main
resume() { pkill -CONT -f "out /work/runs/w1_"; echo "$(date +%T) CONT (sub29 end)" >> /work/runs/pauses29.txt; }
trap resume EXIT
echo "$(date +%T) STOP (sub29)" >> /work/runs/pauses29.txt; pkill -STOP -f "out /work/runs/w1_"
git log --oneline | head -1; uptime
t() { local s=$(date +%s.%N); /usr/bin/time -v -a -o /work/runs/sub29/time.log "$@" || exit 1; W=$(echo "$(date +%s.%N) - $s" | bc); echo "== wall $W s: $*"; }
for name in woof tiny30; do
  src=/work/data/imagewoof2-320; [ $name = tiny30 ] && src=/work/data/tiny30_src
  D=/work/data/${name}_store29 R=/work/runs/sub29/${name}_run
  rm -rf $D $R
  echo "### $name $(date +%T)"
  t python data_prep/build_imagenet.py --source $src --out $D
  t python -m paper_repro.train --data $D --config imagenet_subset_cpu --out $R; TRAIN=$W
  t python -m paper_repro.evaluate --data $D --checkpoint $R/checkpoint.pt --json $R/eval.json; EVAL=$W
  t python -m paper_repro.report --run $R --eval $R/eval.json --out $R/report
  [ $name = woof ] && MIN=$(python -c "print(round(($TRAIN + $EVAL) / 60, 2))")
  uptime
done
echo "### baseline --minutes $MIN $(date +%T)"
rm -rf /work/runs/sub29/tv_run
t python -m paper_repro.baseline --data /work/data/woof_store29 --out /work/runs/sub29/tv_run --minutes $MIN --no-progress
uptime; echo "all done $(date +%T)"

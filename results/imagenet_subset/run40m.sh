#!/bin/bash
# stop 30: imagenet_subset_cpu with its 40-minute budget (train --minutes 40, at most 30 epochs), the README's four
# subset commands verbatim (paths substituted), quiet (the width-1 runs stopped by SIGSTOP meanwhile):
# Imagewoof, then the second subset (30 Tiny ImageNet classes, second_subset/make_tiny30.py).
cd /work/snap30  # a clone of the commit under test: the work tree stays free for edits meanwhile
resume() { pkill -CONT -f "out /work/runs/w1_"; echo "$(date +%T) CONT (sub30 end)" >> /work/runs/pauses30.txt; }
trap resume EXIT
echo "$(date +%T) STOP (sub30)" >> /work/runs/pauses30.txt; pkill -STOP -f "out /work/runs/w1_"
git log --oneline | head -1; uptime
t() { local s=$(date +%s.%N); /usr/bin/time -v -a -o /work/runs/sub30/time.log "$@" || exit 1; W=$(echo "$(date +%s.%N) - $s" | bc); echo "== wall $W s: $*"; }
for name in woof tiny30; do
  src=/work/data/imagewoof2-320; [ $name = tiny30 ] && src=/work/data/tiny30_src
  D=/work/data/${name}_store30 R=/work/runs/sub30/${name}_run
  rm -rf $D $R
  echo "### $name $(date +%T)"
  t python data_prep/build_imagenet.py --source $src --out $D
  t python -m paper_repro.train --data $D --config imagenet_subset_cpu --out $R
  t python -m paper_repro.evaluate --data $D --checkpoint $R/checkpoint.pt --json $R/eval.json
  t python -m paper_repro.report --run $R --eval $R/eval.json --out $R/report
  uptime
done
echo "all done $(date +%T)"

#!/bin/bash
# 2026-12-04 (stop 31): the README's four subset commands verbatim (paths substituted) from a fresh clone of
# the commit under test, on a new VM, quiet: Imagewoof, then the second subset (30 Tiny ImageNet classes,
# second_subset/make_tiny30.py). Nothing else of ours ran meanwhile but edits of text files.
cd /work/fresh
git log --oneline | head -1; uptime; lscpu | grep "Model name"
t() { local s=$(date +%s.%N); /usr/bin/time -v -a -o /work/runs/sub31/time.log "$@" || exit 1; W=$(echo "$(date +%s.%N) - $s" | bc); echo "== wall $W s: $*"; }
for name in woof tiny30; do
  src=/work/data/imagewoof2-320; [ $name = tiny30 ] && src=/work/data/tiny30_src
  D=/work/data/${name}_store R=/work/runs/sub31/${name}_run
  rm -rf $D $R
  echo "### $name $(date +%T)"
  t python data_prep/build_imagenet.py --source $src --out $D
  t python -m paper_repro.train --data $D --config imagenet_subset_cpu --out $R
  t python -m paper_repro.evaluate --data $D --checkpoint $R/checkpoint.pt --json $R/eval.json
  t python -m paper_repro.report --run $R --eval $R/eval.json --out $R/report
  uptime
done
echo "all done $(date +%T)"

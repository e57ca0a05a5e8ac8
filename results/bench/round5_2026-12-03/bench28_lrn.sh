#!/bin/bash
# Width 1, batch 128, two threads, quiet (width-1 runs SIGSTOPped): the paper-text step with and without its LRN
# (--lrn none), each beside torchvision's AlexNet in the same run; code: main at the commit that added bench train --recipe and --lrn.
cd /work/main
for lrn in code none; do
  echo "bench train width 1 --lrn $lrn $(date +%T)"
  python -m paper_repro.bench train --gpus cpu,cpu --width 1 --recipe paper-text --lrn $lrn --batch-size 128 --steps 2 --repeats 3 --warmup 1 --peak-size 2048 --json /work/runs/b28_train_w1_lrn_$lrn.json > /dev/null 2>&1
  python -c "import json; r=json.load(open('/work/runs/b28_train_w1_lrn_$lrn.json')); o, t = r['ours'], r['torchvision_alexnet']; print('ours', round(o['images_per_s'], 1), 'img/s', round(o['fraction_of_measured_matmul_peak'], 2), 'of peak; torchvision', round(t['images_per_s'], 1), round(t['fraction_of_measured_matmul_peak'], 2), '; ours/tv', round(o['images_per_s'] / t['images_per_s'], 3))"
done
echo "end $(date +%T)"

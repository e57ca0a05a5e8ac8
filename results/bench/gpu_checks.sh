#!/usr/bin/env bash
# The GPU checks in one run, for a lent machine with one CUDA GPU (run from the repository root):
# the CUDA tests, the product's commands on the GPU, the GPU rows of results/benchmarks.md (with a
# profile of each net's step), an end-to-end training run, then the whole suite. Everything it prints
# goes to $OUT/log.txt; the bench JSON to $OUT/*.json (8 files in all: the device tool's limit).
# No network and nothing installed: the clone on PYTHONPATH, the machine's own torch.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
W=/tmp/gpuw
rm -rf "$W"; mkdir -p "$W"
T0=$(date +%s)
step() { echo; echo "=== $1 (t=$(( $(date +%s) - T0 )) s) ==="; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import sys, torch, torchvision; print(sys.version.split()[0], torch.__version__, torchvision.__version__, torch.cuda.get_device_name(0), torch.backends.cudnn.version())"
nproc; date -u

step "CUDA tests (the 19 that skip without a GPU, and their neighbours)"
timeout 240 python3 -m pytest -q -rs -p no:cacheprovider tests/test_model_cuda.py tests/test_train.py tests/test_raw_store.py \
    tests/test_evaluate.py tests/test_loader.py tests/test_augment.py -k "cuda or gpu or CUDA"

step "bench train, one-device layout, TF32"
timeout 150 python3 -m paper_repro.bench train --gpus 0 --batch-size 128 --steps 20 --repeats 5 --profile 5 --json "$OUT/train_one_device.json"
step "bench train, one-device layout, TF32, the LRN in Triton kernels (--lrn-kernel triton)"
timeout 150 python3 -m paper_repro.bench train --gpus 0 --batch-size 128 --steps 20 --repeats 5 --lrn-kernel triton --profile 5 --json "$OUT/train_triton_lrn.json"
step "bench train, two columns on one GPU (--gpus 0,0), TF32"
timeout 120 python3 -m paper_repro.bench train --gpus 0,0 --batch-size 128 --steps 20 --repeats 5 --json "$OUT/train_two_columns.json"
step "bench train, bf16 + channels_last"
timeout 120 python3 -m paper_repro.bench train --gpus 0 --batch-size 128 --steps 20 --repeats 5 --bf16 --channels-last --profile 5 --json "$OUT/train_bf16.json"

step "demo on the GPU (generate, build, train, ten-view evaluate, report)"
timeout 240 python3 -m paper_repro.demo --workdir "$W/demo" --out "$W/demo/report" --workers 8

step "a larger generated store for the loader, eval and GPU-decoding checks (10 classes x 250 train + 300 val, JPEG)"
timeout 120 python3 data_prep/make_demo_imagenet.py --out "$W/gen" --train-per-class 250 --val-per-class 300 --layout folders
timeout 120 python3 data_prep/build_imagenet.py --source "$W/gen" --out "$W/store" --workers 16 --format jpeg --no-progress

step "train two columns on one GPU (--gpus 0,0), 2 epochs, GPU decoding; then evaluate with GPU decoding"
timeout 120 python3 -m paper_repro.train --data "$W/store" --config demo_cpu --gpus 0,0 --epochs 2 \
    --decode gpu --workers 4 --no-progress --out "$W/t00"
ls "$W/t00"
timeout 120 python3 -m paper_repro.evaluate --data "$W/store" --checkpoint "$W/t00/checkpoint.pt" --gpus 0 \
    --decode gpu --workers 4 --no-progress

step "bench eval (ten views), width 1"
timeout 180 python3 -m paper_repro.bench eval --data "$W/store" --gpus 0 --workers 16 --batch-size 128 --tmp "$W/tmp_eval" \
    --json "$OUT/eval.json"
step "bench loader (10 s per pipeline per round, 3 rounds)"
timeout 180 python3 -m paper_repro.bench loader --data "$W/store" --gpus 0 --workers 16 --batch-size 128 --seconds 10 \
    --tmp "$W/tmp_loader" --json "$OUT/loader.json"

step "train end to end, width 1, the released recipe, one device, 4 epochs of the store (images/s per epoch in log.jsonl)"
timeout 150 python3 -m paper_repro.train --data "$W/store" --gpus 0 --epochs 4 --workers 16 --no-progress --out "$W/e2e"
cat "$W/e2e/log.jsonl"

step "the whole suite (torch of this machine), 15 processes"
OMP_NUM_THREADS=1 timeout 200 python3 -m pytest -q -p no:cacheprovider -p no:benchmark -n 15 -rfEs tests \
    > "$OUT/suite.txt" 2>&1
tail -30 "$OUT/suite.txt"
step "end"

"""Where a training step's CPU time goes, by aten operator (two columns, batch 32, the bench's synthetic batch).

OMP_NUM_THREADS=1 PYTHONPATH=. python results/bench/profile_train_step.py WIDTH
(issue 18, results/benchmarks.md): three untimed steps, then torch.profiler over three steps.
"""
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from paper_repro.bench.common import NUM_CLASSES, synthetic_stats
from paper_repro.bench.train_step import training_setup
from paper_repro.data.augment import batch_generator
from paper_repro.training.engine import train_step

flags = ["--gpus", "cpu,cpu", "--batch-size", "32", "--width", sys.argv[1]]
settings, devices, _, model, optimizer, augment = training_setup(flags, NUM_CLASSES, synthetic_stats())
g = torch.Generator().manual_seed(1)
images = torch.randint(0, 256, (32, 256, 256, 3), dtype=torch.uint8, generator=g)
labels = torch.randint(0, NUM_CLASSES, (32,), generator=g)
model.train()
for step in range(6):
    if step == 3:
        prof = profile(activities=[ProfilerActivity.CPU])
        prof.__enter__()
    train_step(model, optimizer, images, labels, augment, batch_generator(0, 0, step), device=devices[0], bf16=False)
prof.__exit__(None, None, None)
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=40))

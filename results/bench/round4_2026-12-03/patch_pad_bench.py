"""TrainPatch / CentrePatch then the net's conv1 padding, batch 128: NCHW or channels_last patches, padded by the net
or written with the padding in place (pad=3); one thread, the training process's allocator policy.

OMP_NUM_THREADS=1 PYTHONPATH=. python results/bench/round4_2026-12-03/patch_pad_bench.py   (results/benchmarks.md, fourth round)
"""
import torch, time, sys
sys.path.insert(0, ".")
from paper_repro.data import augment
from paper_repro.data.augment import TrainPatch, CentrePatch
from paper_repro.nets.alexnet import PadRightBottom
from paper_repro.training.host_memory import keep_freed_memory; keep_freed_memory(["cpu"])
g = torch.Generator().manual_seed(0)
imgs = torch.randint(0, 256, (128, 256, 256, 3), dtype=torch.uint8, generator=g)
mean = torch.rand(256, 256, 3) * 255
eigval = [0.2, 0.02, 0.002]; eigvec = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0].numpy()
pad = PadRightBottom(3, 224)
orig = augment._empty_patches
for rep in range(2):
    for cl, p in ((False, 0), (True, 0), (True, 3), (False, 3)):
        augment._empty_patches = lambda n, size, c, _pad=0, _p=p: orig(n, size, c, _p)
        tp = TrainPatch(mean, eigval, eigvec, channels_last=cl); cp = CentrePatch(mean, channels_last=cl)
        ts, tc = [], []
        for i in range(7):
            s = time.perf_counter(); x = tp(imgs, torch.Generator().manual_seed(i))
            y = pad(x) if p == 0 else x.contiguous(memory_format=torch.channels_last); e = time.perf_counter()
            z = cp(imgs); z = pad(z) if p == 0 else z.contiguous(memory_format=torch.channels_last); h = time.perf_counter()
            ts.append(e - s); tc.append(h - e)
        med = lambda v: round(sorted(v)[3] * 1e3, 1)
        print("channels_last", cl, "pad in patch", p, "train patch+pad", med(ts), "centre+pad", med(tc), y.shape)

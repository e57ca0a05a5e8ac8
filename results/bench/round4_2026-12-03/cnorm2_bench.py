"""cnorm2 (same_map_norm) forward + backward at the quarter-width conv2 map (128 x 64 x 27 x 27): the composite formula
autograd differentiates ("old") against paper_repro.nets.lrn.same_map_norm ("new"), channels_last and NCHW.

OMP_NUM_THREADS=1 PYTHONPATH=. python results/bench/round4_2026-12-03/cnorm2_bench.py   (results/benchmarks.md, fourth round)
"""
import sys, time, torch
sys.path.insert(0, ".")
from paper_repro.nets import lrn
torch.manual_seed(0)
shape = (128, 64, 27, 27)
def old(x, size=5, scale=0.001, power=0.75, k=1.0):
    a = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    s = torch.nn.functional.avg_pool2d(a * a, size, 1, size // 2, count_include_pad=True).mul_(scale).add_(k)
    return (a * s.pow_(-power)).to(x.dtype)
fns = {"old": old, "new": lrn.same_map_norm}
for fmt in (torch.channels_last, torch.contiguous_format):
    x0 = (torch.randn(shape) * 30).relu().contiguous(memory_format=fmt)
    g = torch.randn(shape).contiguous(memory_format=fmt)
    res = {}
    for name, f in fns.items():
        ts = []
        for i in range(6):
            x = x0.clone().requires_grad_()
            t = time.perf_counter(); y = f(x); y.backward(g); ts.append(time.perf_counter() - t)
            res[name] = (y.detach(), x.grad)
        print(fmt, name, "ms", sorted(round(t * 1e3, 1) for t in ts[1:]))
    print("max diff y", (res["old"][0] - res["new"][0]).abs().max().item(), "grad", (res["old"][1] - res["new"][1]).abs().max().item(), res["old"][1].abs().max().item())

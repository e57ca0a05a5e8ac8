"""conv1 (11 x 11, stride 4, 3 input channels) as a space-to-depth 3 x 3 convolution over 48 channels, against the direct
one, forward + backward (weight gradient), batch 128, channels_last; a null result at widths 0.25 and 0.5, not kept.

OMP_NUM_THREADS=1 python results/bench/round4_2026-12-03/conv1_space_to_depth.py   (results/benchmarks.md, fourth round)
"""
import torch, time, torch.nn.functional as F
torch.manual_seed(0)
cl = torch.channels_last
def direct(x227, w, b):
    return F.conv2d(x227, w, b, stride=4)
def s2d(x227, w, b):
    x = F.pad(x227, (0, 1, 0, 1))                       # 228 = 4 * 57
    x = F.pixel_unshuffle(x, 4).contiguous(memory_format=cl)   # N x 48 x 57 x 57, channel c*16 + u*4 + v
    w12 = F.pad(w, (0, 1, 0, 1))                         # O x 3 x 12 x 12
    o, c = w.shape[:2]
    w3 = w12.view(o, c, 3, 4, 3, 4).permute(0, 1, 3, 5, 2, 4).reshape(o, c * 16, 3, 3)
    return F.conv2d(x, w3, b)
def t(f, x, w, b, g, n=4):
    ts = []
    for i in range(n + 1):
        w.grad = b.grad = None
        s = time.perf_counter(); y = f(x, w, b); y.backward(g); ts.append(time.perf_counter() - s)
    return round(sorted(ts[1:])[len(ts[1:]) // 2] * 1e3, 1), y, w.grad.clone()
for oc in (24, 96):
    x = torch.randn(128, 3, 227, 227).contiguous(memory_format=cl)
    w = (torch.randn(oc, 3, 11, 11) * 0.01).requires_grad_(); b = torch.zeros(oc, requires_grad=True)
    g = torch.randn(128, oc, 55, 55).contiguous(memory_format=cl)
    for k in range(2):
        td, yd, gd = t(direct, x, w, b, g); ts, ys, gs = t(s2d, x, w, b, g)
        print(oc, "direct ms", td, "s2d ms", ts, "max|dy|", (yd - ys).abs().max().item(), "max|dw|", (gd - gs).abs().max().item(), gd.abs().max().item())
x = torch.randn(128, 3, 227, 227).contiguous(memory_format=cl)
s = time.perf_counter()
for i in range(3): xx = F.pixel_unshuffle(F.pad(x, (0, 1, 0, 1)), 4).contiguous(memory_format=cl)
print("prep ms", (time.perf_counter() - s) / 3 * 1e3)
for oc in (24, 48, 96):
    w = (torch.randn(oc, 48, 3, 3) * 0.01).requires_grad_(); b = torch.zeros(oc, requires_grad=True)
    g = torch.randn(128, oc, 55, 55).contiguous(memory_format=cl)
    print(oc, "conv3x3 only", t(lambda x, w, b: F.conv2d(x, w, b), xx, w, b, g)[0])
    w = (torch.randn(oc, 3, 11, 11) * 0.01).requires_grad_()
    print(oc, "direct", t(direct, x, w, b, g)[0])

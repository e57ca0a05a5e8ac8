"""Local response normalisation across channels (Krizhevsky et al., NIPS 2012, section 3.3).

    b_i = a_i / (k + alpha' * sum_{j = i - n/2}^{i + n/2} a_j^2) ** beta,   k=2, n=5, alpha=1e-4, beta=0.75

The sum runs over the n channels centred on i (zero beyond the edges) and never leaves the
channel group i belongs to: in the paper each GPU normalises only its own maps, so the
one-device layout, which holds both columns' maps in one tensor, normalises each half apart.

Two conventions for alpha' exist:
  "code"  alpha' = alpha / n: the authors' cuda-convnet (its cmrnorm layer divides the scale by
          the size), Caffe, and torch.nn.LocalResponseNorm. The project's default.
  "paper" alpha' = alpha: the formula as printed in the paper.

The op is one autograd Function (fp32 inside whatever the input dtype): the forward keeps the
activations a, s = k + alpha' * window_sum(a^2) and r = s^-beta, and the backward is the analytic
gradient

    da_j = g_j r_j - 2 alpha' beta a_j sum_{i: j in window(i)} g_i a_i r_i / s_i

instead of autograd through ~10 elementwise ops and their saved intermediates. Every step writes
into a tensor that has to exist anyway (forward: s, r and the output; backward: the input's
gradient and one scratch buffer): the window sums are addcmul's into s (no tensor of squares), the
transposed window adds straight into the gradient, and on the CPU the paper's s^-3/4 is sqrt,
multiply and rsqrt (half pow's time there). On the CPU both directions also work through the
batch a few images at a time, so that the ten-odd passes over each chunk run in cache rather than
over main memory (see CPU_CHUNK_BYTES); and in channels_last with few channels (narrow nets) the
window sums are a GEMM against a 0/1 band matrix rather than slices (see BAND_GEMM_MAX_CHANNELS).
It is differentiable once: double backward raises an error.
"""
import torch
from torch import nn

from paper_repro.nets.lrn_triton import triton_local_response_norm

CONVENTIONS = ("code", "paper")
KERNELS = ("torch", "triton")  # the fused op of torch operators here; two Triton kernels (lrn_triton.py)
SQRT_CHAIN_DEVICES = ("cpu",)  # device types where s^-3/4 is sqrt, multiply, rsqrt (elsewhere pow)
# On the CPU the LRN walks the batch in chunks of about this many bytes per fp32 tensor (a few
# images), so that the ten-odd operators over a chunk's a, s, r and output find them in cache (1 MiB
# L2 per core, 32 MiB L3 on the development VM) instead of main memory. One thread: 1.25 and 2.5 MiB
# equally fast, the whole batch at once 30 % slower; two threads: 2.5 MiB the fastest at conv1's
# shape and within 1 % of the fastest (5 MiB) at conv2's.
CPU_CHUNK_BYTES = 5 * 2**19
# On the CPU, in channels_last, the window's taps are channel slices of every pixel's row: runs of a
# few floats that do not vectorise (at a quarter width, conv1's groups hold 12 channels). Up to this many
# channels the window sums are instead one GEMM per chunk against a 0/1 band matrix (C x C, the centre
# and both groups included), forward and backward. Forward + backward, batch 128, two threads: 60 -> 42 ms
# at 24 x 55 x 55, 109 -> 80 ms at 48 x 55 x 55, 202 -> 185 ms at 96 x 55 x 55, 33 -> 27 ms at 64 x 27 x 27,
# but 65 -> 62 ms at 128 x 27 x 27 and 125 -> 159 ms at 256 x 27 x 27, where the band's zeros cost more.
BAND_GEMM_MAX_CHANNELS = 96
_DOUBLE_BACKWARD = ("{op} is differentiable once: its fused backward cannot build a graph "
                    "(create_graph=True, double backward, is not supported)")


def _taps(before, after, c):
    """(destination, source) channel slices of the window's off-centre taps: channel i gets i - d (d <= before)
    and i + d (d <= after), clipped to the c channels (zero beyond the edges)."""
    taps = [(slice(d, c), slice(0, c - d)) for d in range(1, min(before, c - 1) + 1)]
    return taps + [(slice(0, c - d), slice(d, c)) for d in range(1, min(after, c - 1) + 1)]


def _channel_groups(t, groups):
    """View N x C x H x W `t` as N x groups x C/groups x H x W: a window never leaves its group."""
    return t.unflatten(1, (groups, t.shape[1] // groups))


def _inverse_power(s, beta, out):
    """out = s^-beta: on the CPU, beta = 3/4 (the paper's) as rsqrt(s * sqrt(s)); elsewhere pow."""
    # On the CPU pow is compute-bound: sqrt, multiply and rsqrt took half its time (4.9 vs 11.5 ms
    # on 32 x 48 x 55 x 55, one thread) and stay within 1.3 fp32 ulps of the exact value (pow: 0.5).
    # On a GPU pow is one pass over memory and those would be three.
    if beta == 0.75 and s.device.type in SQRT_CHAIN_DEVICES:
        torch.sqrt(s, out=out)
        return out.mul_(s).rsqrt_()
    return torch.pow(s, -beta, out=out)


def _band(a, size, groups):
    """The 0/1 C x C matrix W[j, i] = 1 where channel j is in channel i's window (and group), if the window sums
    of `a` are to be GEMMs (a channels_last CPU tensor of at most BAND_GEMM_MAX_CHANNELS channels); else None."""
    c = a.shape[1]
    if a.device.type != "cpu" or c > BAND_GEMM_MAX_CHANNELS or not a.is_contiguous(memory_format=torch.channels_last):
        return None
    i = torch.arange(c)
    j = i[:, None]
    window = (j >= i - size // 2) & (j <= i + (size - 1) // 2) & (j // (c // groups) == i // (c // groups))
    return window.to(a.dtype)


def _rows(t):
    """A channels_last N x C x H x W tensor as its (N*H*W) x C matrix (a view: one row of channels per pixel)."""
    return t.permute(0, 2, 3, 1).view(-1, t.shape[1])


def _chunks(t):
    """Batch slices of `t` to work through in turn: on the CPU, runs of images of about CPU_CHUNK_BYTES; else one."""
    if t.device.type != "cpu" or t.shape[0] == 0:
        return [slice(None)]
    per = max(1, CPU_CHUNK_BYTES // max(1, t[0].numel() * t.element_size()))
    return [slice(i, i + per) for i in range(0, t.shape[0], per)]


class _LRNFunction(torch.autograd.Function):
    """Fused LRN: y = a * r, r = s^-beta, s = k + alpha' * W(a^2); analytic backward; saves a, s and r."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k, groups, relu):
        """Return the normalised `x` (of relu(x) if `relu`) in x's dtype, computed in at least fp32."""
        # Sum of squares in (at least) fp32: under bf16 autocast the activations are bf16, whose 8-bit
        # mantissa turns k + alpha' * sum into plain k (sum lost), and fp16 squares of ReLU outputs in
        # the hundreds overflow. Casting up here and back at the end keeps both sane.
        dtype = torch.promote_types(x.dtype, torch.float32)
        # With relu, a = max(x, 0) is written chunk by chunk below (and x, the convolution's output,
        # is then needed by no one): no separate ReLU pass, and no ReLU gradient tensor in the backward.
        a = torch.empty_like(x, dtype=dtype) if relu else x.to(dtype)
        s, r, y = torch.empty_like(a), torch.empty_like(a), torch.empty_like(a)  # laid out like a
        kt = a.new_full((), k)  # a fill kernel: new_tensor(k) would be a blocking host-to-device copy on a GPU
        chunks = _chunks(a)
        band = _band(a, size, groups)
        squares = torch.empty_like(a[chunks[0]]) if band is not None else None
        for b in chunks:
            if relu and x.dtype == dtype:
                torch.clamp_min(x[b], 0, out=a[b])
            elif relu:  # out= takes no other dtype: cast, then clamp (exact either way round)
                a[b].copy_(x[b]).clamp_min_(0)
            if band is not None:  # s = k + alpha' * (a^2 @ band): one small GEMM over rows of channels
                q = torch.mul(a[b], a[b], out=squares[:a[b].shape[0]])
                torch.addmm(kt, _rows(q), band, alpha=alpha, out=_rows(s[b]))
            else:
                a5, s5 = _channel_groups(a[b], groups), _channel_groups(s[b], groups)
                # s = k + alpha' * (centre tap), then each off-centre tap of the window i - n//2 .. i + (n-1)//2
                # (as in the paper) added in place: addcmul squares on the fly, so no tensor of squares exists.
                torch.addcmul(kt, a5, a5, value=alpha, out=s5)
                for dst, src in _taps(size // 2, (size - 1) // 2, a5.shape[2]):
                    tap = a5[:, :, src]
                    s5[:, :, dst].addcmul_(tap, tap, value=alpha)
            torch.mul(_inverse_power(s[b], beta, r[b]), a[b], out=y[b])
        # r is kept as well as s: recomputing s^-beta in the backward cost more (three compute-bound
        # passes on the CPU) than holding one more activation-sized tensor.
        ctx.save_for_backward(a, s, r)
        ctx.lrn = (size, alpha, beta, groups, x.dtype, relu)
        ctx.band = band
        # Rounded to x's dtype by .to, not by a mul with a bf16 out=: that path is 30x slower under channels_last.
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        """da_j = g_j r_j - 2 alpha' beta a_j sum_{i: j in window(i)} g_i a_i r_i / s_i."""
        # Grad mode is on here only under create_graph=True. once_differentiable would instead hand
        # back a gradient detached from x whenever the incoming gradient is a constant, silently
        # dropping the LRN's share of a second derivative.
        if torch.is_grad_enabled():
            raise RuntimeError(_DOUBLE_BACKWARD.format(op="local_response_norm"))
        a, s, r = ctx.saved_tensors
        size, alpha, beta, groups, dtype, relu = ctx.lrn
        da = torch.empty_like(a)
        chunks = _chunks(a)
        scratch = torch.empty_like(a[chunks[0]])  # g a r / s of one chunk at a time
        sums = torch.empty_like(scratch) if ctx.band is not None else None  # its window sums (GEMM path)
        c = -2 * alpha * beta
        for b in chunks:
            d = torch.mul(r[b], grad[b], out=da[b])  # g r, the first term (a bf16 g is promoted: no fp32 copy)
            u = torch.mul(d, a[b], out=scratch[:d.shape[0]]).div_(s[b])  # g a r / s
            # The transposed window: channel j receives from every i whose window i - n//2 .. i + (n-1)//2
            # holds j, i.e. i = j - (n-1)//2 .. j + n//2; each tap adds straight into the gradient.
            if ctx.band is not None:  # the transposed window, centre included, as one GEMM with band^T
                w = sums[:d.shape[0]]
                torch.mm(_rows(u), ctx.band.t(), out=_rows(w))
                d.addcmul_(a[b], w, value=c)
            else:
                d.addcmul_(a[b], u, value=c)
                d5, a5, u5 = _channel_groups(d, groups), _channel_groups(a[b], groups), _channel_groups(u, groups)
                for dst, src in _taps((size - 1) // 2, size // 2, a5.shape[2]):
                    d5[:, :, dst].addcmul_(a5[:, :, dst], u5[:, :, src], value=c)
            if relu:  # the ReLU's own gradient op, in place: zero where its output is <= 0
                # (masked_fill_ with a <= 0 mask did the same 40x slower on a channels_last chunk)
                torch.ops.aten.threshold_backward.grad_input(d, a[b], 0, grad_input=d)
        return da.to(dtype), None, None, None, None, None, None


def local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=2.0, convention="code", groups=1, relu=False,
                        kernel="torch"):
    """Normalise N x C x H x W `x` (`relu`: relu(x)) across channels within each of `groups` equal channel groups.

    One fused autograd op: the forward saves the activations, the denominator base s and s^-beta,
    and the backward is the analytic gradient. It is differentiable once: a backward through it with
    create_graph=True (double backward, gradient penalties) raises a RuntimeError. kernel="triton":
    the same arithmetic in two Triton kernels (lrn_triton.py; a CUDA tensor).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"LRN convention must be one of {CONVENTIONS}; got {convention!r}")
    if x.dim() != 4:
        raise ValueError(f"LRN expects an N x C x H x W tensor; got shape {tuple(x.shape)}")
    if x.shape[1] % groups:
        raise ValueError(f"LRN: {x.shape[1]} channels do not split into {groups} equal groups")
    if kernel not in KERNELS:
        raise ValueError(f"LRN kernel must be one of {KERNELS}; got {kernel!r}")
    scale = alpha / size if convention == "code" else alpha
    if kernel == "triton":
        return triton_local_response_norm(x, size, scale, beta, k, groups, relu)
    return _LRNFunction.apply(x, size, scale, beta, k, groups, relu)


class LocalResponseNorm(nn.Module):
    """Cross-channel LRN (see the module docstring); `groups` keeps columns' channels apart; `relu` applies the
    ReLU that precedes it in the paper (section 3.3) inside the same op."""

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=2.0, convention="code", groups=1, relu=False):
        """Store the hyper-parameters; the paper's are the defaults (alpha/n as the authors' code)."""
        super().__init__()
        if convention not in CONVENTIONS:
            raise ValueError(f"LRN convention must be one of {CONVENTIONS}; got {convention!r}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.convention, self.groups, self.relu = convention, groups, relu
        self.kernel = "torch"  # use_lrn_kernel() changes it; not a hyper-parameter (the same arithmetic)

    def forward(self, x):
        """Return the normalised `x` (relu(x) if self.relu), same shape and dtype."""
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k, self.convention, self.groups,
                                   self.relu, self.kernel)

    def extra_repr(self):
        """Show the hyper-parameters in print(model)."""
        return (f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
                f"convention={self.convention!r}, groups={self.groups}" + (", relu=True" if self.relu else ""))


def use_lrn_kernel(model, kernel):
    """Run every cross-channel LRN of `model` with `kernel` ('torch' or 'triton'); returns how many there are."""
    if kernel not in KERNELS:
        raise ValueError(f"LRN kernel must be one of {KERNELS}; got {kernel!r}")
    layers = [m for m in model.modules() if isinstance(m, LocalResponseNorm)]
    for m in layers:
        m.kernel = kernel
    return len(layers)


class _SameMapFunction(torch.autograd.Function):
    """Fused same-map norm: y = a * r, r = s^-power, s = k + scale * box(a^2); analytic backward; saves a, s and r."""

    @staticmethod
    def forward(ctx, x, size, scale, power, k):
        """Return the normalised `x` in x's dtype, computed in at least fp32."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        a = x.to(dtype)
        s, r, y = torch.empty_like(a), torch.empty_like(a), torch.empty_like(a)
        chunks = _chunks(a)
        squares = torch.empty_like(a[chunks[0]])
        for b in chunks:
            q = torch.mul(a[b], a[b], out=squares[:a[b].shape[0]])
            # avg_pool2d with count_include_pad divides every window's sum by size^2: cuda-convnet's
            # scale/size^2, and zero padding is its clipped window. k is added as a Python number: a
            # tensor made from it on a GPU would be a host-to-device copy in every step.
            torch.mul(_box(q, size), scale, out=s[b]).add_(k)
            torch.mul(_inverse_power(s[b], power, r[b]), a[b], out=y[b])
        ctx.save_for_backward(a, s, r)
        ctx.norm = (size, scale, power, x.dtype)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        """da_j = g_j r_j - 2 power scale a_j box(g a r / s)_j (the window is symmetric: its transpose is itself)."""
        if torch.is_grad_enabled():
            raise RuntimeError(_DOUBLE_BACKWARD.format(op="same_map_norm"))
        a, s, r = ctx.saved_tensors
        size, scale, power, dtype = ctx.norm
        da = torch.empty_like(a)
        chunks = _chunks(a)
        scratch = torch.empty_like(a[chunks[0]])
        for b in chunks:
            d = torch.mul(r[b], grad[b], out=da[b])  # g r, the first term
            u = torch.mul(d, a[b], out=scratch[:d.shape[0]]).div_(s[b])  # g a r / s
            d.addcmul_(a[b], _box(u, size), value=-2 * power * scale)
        return da.to(dtype), None, None, None, None


def _box(t, size):
    """The mean of every size x size window of `t` centred on each pixel, zeros beyond the edges."""
    return torch.nn.functional.avg_pool2d(t, size, 1, size // 2, count_include_pad=True)


def same_map_norm(x, size=5, scale=0.001, power=0.75, k=1.0):
    """cuda-convnet's same-map ("rnorm") normalisation: x * (k + scale/size^2 * sum of x^2 over a size x size window)^-power.

    The window is centred (offsets -size//2 .. size//2) and clipped at the borders; the divisor stays
    size^2 there, so a clipped window is the same as zero padding. Computed in at least fp32, as one
    fused autograd op like the LRN's (differentiable once).
    """
    if size % 2 != 1:
        raise ValueError(f"same-map normalisation: size must be odd (a centred window); got {size}")
    if x.dim() != 4:
        raise ValueError(f"same-map normalisation expects an N x C x H x W tensor; got shape {tuple(x.shape)}")
    return _SameMapFunction.apply(x, size, scale, power, k)


class SameMapNorm(nn.Module):
    """The released code's cnorm2 after conv2 (layers-145.cfg: rnorm, size 5, scale 0.001, pow 0.75; k 1)."""

    def __init__(self, size=5, scale=0.001, power=0.75, k=1.0):
        """Store the hyper-parameters; the defaults are cnorm2's."""
        super().__init__()
        self.size, self.scale, self.power, self.k = size, scale, power, k

    def forward(self, x):
        """Return the normalised `x`, same shape and dtype."""
        return same_map_norm(x, self.size, self.scale, self.power, self.k)

    def extra_repr(self):
        """Show the hyper-parameters in print(model)."""
        return f"size={self.size}, scale={self.scale}, power={self.power}, k={self.k}"

"""Locally connected layers (cuda-convnet's `local`): a convolution whose filters differ at every output position.

    y[n, f, i, j] = b[f, i, j] + sum_{c, u, v} w[i, j, f, u, v, c] * x_pad[n, c, i*s + u, j*s + v]

Untied weights (one filter bank per output position) and untied biases (one per filter per
position), zero padding, every filter sees every input channel (groups = 1): cuda-convnet's
LocalUnsharedLayer (layer.py make_weights(modules * filterPixels * filterChannels, filters),
biases modules * filters; filter_acts.cu loads 0 outside the image). Output size
1 + ceil((2 * padding + size - kernel) / stride), as its layer.py computes it.

Two implementations with one parameter layout (weight [Ho, Wo, F, k, k, C]: at each position a
filter bank with the input channels innermost; bias [F, Ho, Wo]):
  LocallyConnected2d  the project's: the padded input held channels-innermost, all patches cut by
                      one copy of a strided view ([L, N, k*k*C], position-major), one batched
                      matmul against the positions' filters, and a hand-written backward that
                      scatters the patch gradients back by k*k strided adds (no col2im, no
                      autograd graph of views).
  UnfoldLocal2d       the plain-torch way (F.unfold, einsum, autograd): the baseline that
                      `python -m paper_repro.bench local` times beside it, and an independent check.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


def local_output_size(size, kernel, padding, stride):
    """Output side of a local layer: 1 + ceil((2 * padding + size - kernel) / stride) (cuda-convnet's layer.py)."""
    return 1 + math.ceil((2 * padding + size - kernel) / stride)


def _padded(x, padding, kernel, stride, out):
    """x zero-padded so that `out` windows of `kernel` with `stride` fit (ceil: right/bottom may get more zeros)."""
    h, w = x.shape[2:]
    need_h, need_w = (out[0] - 1) * stride + kernel, (out[1] - 1) * stride + kernel
    return F.pad(x, (padding, max(0, need_w - w - padding), padding, max(0, need_h - h - padding)))


def _padded_size(size, padding, kernel, stride, out):
    """Side of the padded input: enough for `out` windows (cuda-convnet's ceil may need zeros past the far edge)."""
    return max(size + padding, (out - 1) * stride + kernel)


class _LocalFunction(torch.autograd.Function):
    """y = bmm(patches, W^T) + b over positions; backward by batched matmuls and k*k strided adds.

    The padded input is held as [H, W, N, C] (channels innermost), so that every patch is k*k runs of
    C contiguous values: cutting all patches is one copy of a strided view, and the backward's k*k
    adds run over the same contiguous runs. The output's memory is [Ho, Wo, N, F], which is that
    layout again: a following local layer reads it without a transposing copy.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, padding, stride):
        """x [N, C, H, W], weight [Ho, Wo, F, k, k, C], bias [F, Ho, Wo] -> [N, F, Ho, Wo]."""
        ho, wo, f, k, _, c = weight.shape
        n, _, h, w = x.shape
        hp, wp = _padded_size(h, padding, k, stride, ho), _padded_size(w, padding, k, stride, wo)
        xp = x.new_zeros(hp, wp, n, c)
        xp[padding:padding + h, padding:padding + w] = x.permute(2, 3, 0, 1)
        s_h, s_w, s_n, _ = xp.stride()
        # [Ho, Wo, N, k, k, C] view of every patch; the copy makes [L, N, k*k*C], position-major
        patches = xp.as_strided((ho, wo, n, k, k, c), (stride * s_h, stride * s_w, s_n, s_h, s_w, 1))
        patches = patches.reshape(ho * wo, n, k * k * c)
        wt = weight.view(ho * wo, f, k * k * c).transpose(1, 2)  # [L, k*k*C, F], a view
        out = torch.baddbmm(bias.view(f, ho * wo).t().unsqueeze(1), patches, wt)  # [L, N, F]
        ctx.save_for_backward(patches, weight)
        ctx.geometry = (h, w, hp, wp, padding, stride)
        return out.view(ho, wo, n, f).permute(2, 3, 0, 1)  # [N, F, Ho, Wo], a view of the [Ho, Wo, N, F] memory

    @staticmethod
    def backward(ctx, grad):
        """Gradients of x, weight and bias (the analytic ones; grad may have any memory layout)."""
        if torch.is_grad_enabled():
            raise RuntimeError("locally connected layer: double backward is not supported")
        patches, weight = ctx.saved_tensors
        h, w, hp, wp, padding, stride = ctx.geometry
        ho, wo, f, k, _, c = weight.shape
        n = grad.shape[0]
        g = grad.permute(2, 3, 0, 1).reshape(ho * wo, n, f)  # [L, N, F] (no copy when grad has our layout)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.bmm(g.transpose(1, 2), patches).view(weight.shape)  # [L, F, k*k*C]
        if ctx.needs_input_grad[2]:
            grad_b = g.sum(1).t().reshape(f, ho, wo)
        if ctx.needs_input_grad[0]:
            gp = torch.bmm(g, weight.view(ho * wo, f, k * k * c)).view(ho, wo, n, k, k, c)  # each patch's gradient
            gxp = grad.new_zeros(hp, wp, n, c)
            span_h, span_w = (ho - 1) * stride + 1, (wo - 1) * stride + 1
            # Each of the k*k taps adds its [Ho, Wo] grid of patch gradients into the padded input's gradient.
            for u in range(k):
                for v in range(k):
                    gxp[u:u + span_h:stride, v:v + span_w:stride] += gp[:, :, :, u, v]
            grad_x = gxp[padding:padding + h, padding:padding + w].permute(2, 3, 0, 1)
        return grad_x, grad_w, grad_b, None, None


class _LocalBase(nn.Module):
    """The parameters and init of a locally connected layer; subclasses compute it."""

    def __init__(self, in_channels, out_channels, in_size, kernel_size, padding=0, stride=1):
        super().__init__()
        if kernel_size < 1 or stride < 1 or padding < 0:
            raise ValueError(f"local layer: kernel_size >= 1, stride >= 1, padding >= 0; got "
                             f"{kernel_size}, {stride}, {padding}")
        self.in_channels, self.out_channels, self.in_size = in_channels, out_channels, in_size
        self.kernel_size, self.padding, self.stride = kernel_size, padding, stride
        self.out_size = local_output_size(in_size, kernel_size, padding, stride)
        if self.out_size < 1:
            raise ValueError(f"local layer: a {kernel_size}x{kernel_size} kernel does not fit {in_size}x{in_size} "
                             f"with padding {padding}")
        o, k = self.out_size, kernel_size
        # per position a filter bank [F, k, k, C]: channels innermost, as the patches are cut (see _LocalFunction)
        self.weight = nn.Parameter(torch.empty(o, o, out_channels, k, k, in_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels, o, o))
        nn.init.normal_(self.weight, 0.0, 0.01)

    def _check(self, x):
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != (self.in_size, self.in_size):
            raise ValueError(f"{type(self).__name__} expects N x {self.in_channels} x {self.in_size} x {self.in_size}; "
                             f"got {tuple(x.shape)}")

    def extra_repr(self):
        """Shapes in print(model)."""
        return (f"{self.in_channels}, {self.out_channels}, in_size={self.in_size}, kernel_size={self.kernel_size}, "
                f"padding={self.padding}, stride={self.stride}, out_size={self.out_size}")


class LocallyConnected2d(_LocalBase):
    """cuda-convnet's `local` layer (untied weights and biases), fast on the CPU; see the module docstring."""

    def forward(self, x):
        """[N, C, H, W] -> [N, F, Ho, Wo] (a position-major view; the next layer reads it as it is)."""
        self._check(x)
        return _LocalFunction.apply(x, self.weight, self.bias, self.padding, self.stride)


class UnfoldLocal2d(_LocalBase):
    """The same layer from plain torch ops (F.unfold, einsum, autograd): the baseline and an independent check."""

    def forward(self, x):
        """[N, C, H, W] -> [N, F, Ho, Wo]."""
        self._check(x)
        o, k = self.out_size, self.kernel_size
        xp = _padded(x, self.padding, k, self.stride, (o, o))
        cols = F.unfold(xp, k, stride=self.stride)  # [N, C*k*k, L], taps (u, v) inside each channel
        cols = cols.view(x.shape[0], self.in_channels, k * k, o * o)
        w = self.weight.reshape(o * o, self.out_channels, k * k, self.in_channels)  # [L, F, k*k, C]
        out = torch.einsum("ncpl,lfpc->nfl", cols, w).reshape(x.shape[0], self.out_channels, o, o)
        return out + self.bias

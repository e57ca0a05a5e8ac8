"""Local response normalisation across channels (Krizhevsky et al., NIPS 2012, section 3.3).

    b_i = a_i / (k + alpha' * sum_{j = i - n/2}^{i + n/2} a_j^2) ** beta,   k=2, n=5, alpha=1e-4, beta=0.75

The sum runs over the n channels centred on i (zero beyond the edges) and never leaves the
channel group i belongs to: in the paper each GPU normalises only its own maps, so the
one-device layout, which holds both columns' maps in one tensor, normalises each half apart.

Two conventions for alpha' exist:
  "code"  alpha' = alpha / n: the authors' cuda-convnet (its cmrnorm layer divides the scale by
          the size), Caffe, and torch.nn.LocalResponseNorm. The project's default.
  "paper" alpha' = alpha: the formula as printed in the paper.

The op is one autograd Function (fp32 inside whatever the input dtype): the forward keeps only
the activations a and s = k + alpha' * window_sum(a^2), and the backward is the analytic gradient

    da_j = g_j s_j^-beta - 2 alpha' beta a_j sum_{i: j in window(i)} g_i a_i s_i^(-beta-1)

instead of autograd through ~10 elementwise ops and their saved intermediates (about 2x faster
forward+backward on the CPU). It is differentiable once: double backward raises an error.
"""
import torch
from torch import nn

CONVENTIONS = ("code", "paper")
_DOUBLE_BACKWARD = ("local_response_norm is differentiable once: its fused backward cannot build a graph "
                    "(create_graph=True, double backward, is not supported)")


def _window_sum(t, before, after, scale, offset=0.0):
    """offset + scale * sum of t over channels i - before .. i + after (dim 2 of N x G x C x H x W; 0 beyond C)."""
    # Shifted in-place adds, no padding: exact (a cumsum difference loses ~1e-5 relative in fp32
    # to cancellation) and, measured on 32 x 96 x 55 x 55, faster than padding once or avg_pool3d.
    # scale and offset ride along in the adds, so they cost no pass of their own.
    out = torch.add(t.new_full((), offset), t, alpha=scale)
    c = t.shape[2]
    for d in range(1, min(before, c - 1) + 1):
        out[:, :, d:].add_(t[:, :, :c - d], alpha=scale)
    for d in range(1, min(after, c - 1) + 1):
        out[:, :, :c - d].add_(t[:, :, d:], alpha=scale)
    return out


class _LRNFunction(torch.autograd.Function):
    """Fused LRN: y = a * s^-beta, s = k + alpha' * W(a^2); analytic backward; saves only a and s."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k, groups):
        """Return the normalised `x` in its own dtype, computed in at least fp32."""
        # Sum of squares in (at least) fp32: under bf16 autocast the activations are bf16, whose 8-bit
        # mantissa turns k + alpha' * sum into plain k (sum lost), and fp16 squares of ReLU outputs in
        # the hundreds overflow. Casting up here and back at the end keeps both sane.
        a = x.to(torch.promote_types(x.dtype, torch.float32))
        square = a.square().unflatten(1, (groups, a.shape[1] // groups))  # each group's window stays inside it
        # The window of channel i is i - n//2 .. i + (n-1)//2, as in the paper.
        s = _window_sum(square, size // 2, (size - 1) // 2, alpha, k).flatten(1, 2)
        # s, not s^-beta, is kept: the backward recomputes one pow rather than hold a third tensor.
        ctx.save_for_backward(a, s)
        ctx.lrn = (size, alpha, beta, groups, x.dtype)
        return (a * s.pow(-beta)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        """da_j = g_j s_j^-beta - 2 alpha' beta a_j sum_{i: j in window(i)} g_i a_i s_i^(-beta-1)."""
        # Grad mode is on here only under create_graph=True. once_differentiable would instead hand
        # back a gradient detached from x whenever the incoming gradient is a constant, silently
        # dropping the LRN's share of a second derivative.
        if torch.is_grad_enabled():
            raise RuntimeError(_DOUBLE_BACKWARD)
        a, s = ctx.saved_tensors
        size, alpha, beta, groups, dtype = ctx.lrn
        scaled = grad.to(a.dtype) * s.pow(-beta)  # g s^-beta, the first term
        u = (scaled * a).div_(s).unflatten(1, (groups, a.shape[1] // groups))  # g a s^(-beta-1)
        # The transposed window: channel j feeds every i whose window i - n//2 .. i + (n-1)//2 holds j.
        back = _window_sum(u, (size - 1) // 2, size // 2, -2 * alpha * beta).flatten(1, 2)
        return scaled.addcmul_(back, a).to(dtype), None, None, None, None, None


def local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=2.0, convention="code", groups=1):
    """Normalise N x C x H x W `x` across channels within each of `groups` equal channel groups.

    One fused autograd op: the forward saves only the activations and the denominator base s, and
    the backward is the analytic gradient. It is differentiable once: a backward through it with
    create_graph=True (double backward, gradient penalties) raises a RuntimeError.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"LRN convention must be one of {CONVENTIONS}; got {convention!r}")
    if x.dim() != 4:
        raise ValueError(f"LRN expects an N x C x H x W tensor; got shape {tuple(x.shape)}")
    if x.shape[1] % groups:
        raise ValueError(f"LRN: {x.shape[1]} channels do not split into {groups} equal groups")
    scale = alpha / size if convention == "code" else alpha
    return _LRNFunction.apply(x, size, scale, beta, k, groups)


class LocalResponseNorm(nn.Module):
    """Cross-channel LRN (see the module docstring); `groups` keeps columns' channels apart."""

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=2.0, convention="code", groups=1):
        """Store the hyper-parameters; the paper's are the defaults (alpha/n as the authors' code)."""
        super().__init__()
        if convention not in CONVENTIONS:
            raise ValueError(f"LRN convention must be one of {CONVENTIONS}; got {convention!r}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.convention, self.groups = convention, groups

    def forward(self, x):
        """Return the normalised `x`, same shape and dtype."""
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k, self.convention, self.groups)

    def extra_repr(self):
        """Show the hyper-parameters in print(model)."""
        return (f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
                f"convention={self.convention!r}, groups={self.groups}")

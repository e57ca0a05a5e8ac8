"""The cross-channel LRN as two Triton kernels: one pass over the map forward, one backward (a GPU option).

The same arithmetic as paper_repro/nets/lrn.py's fused op (its docstring has the formula), for the
GPU, where that op's window taps are strided `addcmul_` passes over main memory: counted on "meta"
tensors, the LRN after conv1 moves 52 map-sized passes forward and backward at batch 128
(results/benchmarks.md). Here each program walks the channels of one column group for a block of
pixels, and the window's other taps are reloads of rows it has just read (cache hits), so main
memory sees about seven passes: x read and y and s written forward; the gradient, x and s read and
the input's gradient written backward. s^-beta is recomputed from s rather than stored.

Triton ships with PyTorch's CUDA builds; the kernels (lrn_triton_kernels.py) are imported when the
first Triton LRN runs. With TRITON_INTERPRET=1 set before that, the same kernels run on CPU tensors
through Triton's interpreter: that is how the tests check them on a machine without a GPU
(tests/test_lrn_triton.py).
"""
import functools
import importlib.util
import os

import torch

BLOCK = 128  # pixels per program: one row of 128 fp32 per channel, contiguous in NCHW


def available(device):
    """Why the Triton LRN cannot run on `device` (a sentence), or None when it can."""
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed (it comes with PyTorch's CUDA builds)"
    if torch.device(device).type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return f"it runs on a CUDA device, not {device} (TRITON_INTERPRET=1 runs it on the CPU, slowly, for tests)"
    return None


@functools.lru_cache(maxsize=None)
def _kernels():
    """(forward kernel, backward kernel, triton), imported on first use: importing Triton costs every command."""
    from paper_repro.nets import lrn_triton_kernels as kernels  # lazy: Triton loads only when used
    return kernels.forward_kernel, kernels.backward_kernel, kernels.triton


def _layout(x, groups):
    """(x as NCHW or channels_last, channels per group, pixels, strides of n, c and the flattened pixel index)."""
    # The outputs are empty_like(x) and share x's strides only if x is dense: a slice or view is copied.
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        x = x.contiguous()
    n, c, h, w = x.shape
    return x, c // groups, h * w, (x.stride(0), x.stride(1), x.stride(3))


class _TritonLRNFunction(torch.autograd.Function):
    """The LRN of lrn.py in two Triton kernels; saves x (the input, not a copy) and s (fp32)."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k, groups, relu):
        """Return the normalised `x` (of relu(x) if `relu`) in x's dtype and layout, computed in fp32."""
        x, cg, hw, strides = _layout(x, groups)
        y = torch.empty_like(x)  # empty_like keeps x's strides (NCHW or channels_last)
        s = torch.empty_like(x, dtype=torch.float32)
        forward_kernel, _, triton = _kernels()
        grid = (triton.cdiv(hw, BLOCK), x.shape[0] * groups)
        forward_kernel[grid](x, y, s, cg, hw, groups, *strides, float(alpha), float(beta), float(k),
                              BEFORE=size // 2, AFTER=(size - 1) // 2, RELU=bool(relu), BLOCK=BLOCK)
        ctx.save_for_backward(x, s)
        ctx.lrn = (size, alpha, beta, groups, relu)
        return y

    @staticmethod
    def backward(ctx, grad):
        """The analytic gradient, as lrn.py's: one kernel."""
        if torch.is_grad_enabled():
            # lrn.py's _DOUBLE_BACKWARD text, written out: lrn.py imports this module, not the other way round
            raise RuntimeError("local_response_norm is differentiable once: its fused backward cannot build a "
                               "graph (create_graph=True, double backward, is not supported)")
        x, s = ctx.saved_tensors
        size, alpha, beta, groups, relu = ctx.lrn
        _, cg, hw, strides = _layout(x, groups)
        grad = grad.to(x.dtype) if grad.stride() == x.stride() else torch.empty_like(x).copy_(grad)
        dx = torch.empty_like(x)
        _, backward_kernel, triton = _kernels()
        grid = (triton.cdiv(hw, BLOCK), x.shape[0] * groups)
        backward_kernel[grid](grad, x, s, dx, cg, hw, groups, *strides, float(-2 * alpha * beta), float(beta),
                               BEFORE=size // 2, AFTER=(size - 1) // 2, RELU=bool(relu), BLOCK=BLOCK)
        return dx, None, None, None, None, None, None


def triton_local_response_norm(x, size, alpha, beta, k, groups, relu):
    """lrn.py's local_response_norm (alpha already alpha') in Triton kernels; x on a CUDA device."""
    why = available(x.device)
    if why:
        raise RuntimeError(f"--lrn-kernel triton: {why}")
    return _TritonLRNFunction.apply(x, size, alpha, beta, k, groups, relu)

"""The Triton kernels of lrn_triton.py (imported only when a Triton LRN runs: Triton's import costs time)."""
import triton
import triton.language as tl


@triton.jit
def _pixel_rows(cg, hw, groups, stride_n, stride_c, stride_p, BLOCK: tl.constexpr):
    """This program's block of pixels: (offsets of their channel 0 in its image and column group, in-bounds mask).

    Grid: (pixel blocks, images x groups); each program walks the cg channels of one group from there.
    """
    pid_ng = tl.program_id(1)
    n = (pid_ng // groups).to(tl.int64)
    first = (pid_ng % groups).to(tl.int64) * cg
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    return n * stride_n + first * stride_c + p.to(tl.int64) * stride_p, p < hw


@triton.jit
def forward_kernel(x_ptr, y_ptr, s_ptr, cg, hw, groups, stride_n, stride_c, stride_p, alpha, beta, k,
                   BEFORE: tl.constexpr, AFTER: tl.constexpr, RELU: tl.constexpr, BLOCK: tl.constexpr):
    """y = a * s^-beta, s = k + alpha * (sum of a^2 over channels c-BEFORE .. c+AFTER of the group)."""
    base, inside = _pixel_rows(cg, hw, groups, stride_n, stride_c, stride_p, BLOCK)
    for c in range(0, cg):
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for d in tl.static_range(BEFORE + AFTER + 1):
            j = c - BEFORE + d
            v = tl.load(x_ptr + base + j * stride_c, mask=inside & (j >= 0) & (j < cg), other=0.0)
            v = v.to(tl.float32)
            if RELU:
                v = tl.maximum(v, 0.0)
            acc += v * v
        s = k + alpha * acc
        a = tl.load(x_ptr + base + c * stride_c, mask=inside, other=0.0).to(tl.float32)
        if RELU:
            a = tl.maximum(a, 0.0)
        r = tl.exp2(-beta * tl.log2(s))  # s >= k > 0
        tl.store(y_ptr + base + c * stride_c, (a * r).to(y_ptr.dtype.element_ty), mask=inside)
        tl.store(s_ptr + base + c * stride_c, s, mask=inside)


@triton.jit
def backward_kernel(g_ptr, x_ptr, s_ptr, dx_ptr, cg, hw, groups, stride_n, stride_c, stride_p, coef, beta,
                    BEFORE: tl.constexpr, AFTER: tl.constexpr, RELU: tl.constexpr, BLOCK: tl.constexpr):
    """da_j = g_j r_j + coef a_j sum_{i = j-AFTER .. j+BEFORE} g_i a_i r_i / s_i, coef = -2 alpha beta."""
    base, inside = _pixel_rows(cg, hw, groups, stride_n, stride_c, stride_p, BLOCK)
    for c in range(0, cg):
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for d in tl.static_range(BEFORE + AFTER + 1):
            i = c - AFTER + d
            ok = inside & (i >= 0) & (i < cg)
            g = tl.load(g_ptr + base + i * stride_c, mask=ok, other=0.0).to(tl.float32)
            a = tl.load(x_ptr + base + i * stride_c, mask=ok, other=0.0).to(tl.float32)
            if RELU:
                a = tl.maximum(a, 0.0)
            s = tl.load(s_ptr + base + i * stride_c, mask=ok, other=1.0)
            acc += g * a * tl.exp2((-beta - 1.0) * tl.log2(s))  # g a r / s
        g = tl.load(g_ptr + base + c * stride_c, mask=inside, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + base + c * stride_c, mask=inside, other=0.0).to(tl.float32)
        s = tl.load(s_ptr + base + c * stride_c, mask=inside, other=1.0)
        a = x
        if RELU:
            a = tl.maximum(x, 0.0)
        da = g * tl.exp2(-beta * tl.log2(s)) + coef * a * acc
        if RELU:
            da = tl.where(x > 0.0, da, 0.0)  # the ReLU's gradient: zero where its output is 0
        tl.store(dx_ptr + base + c * stride_c, da.to(dx_ptr.dtype.element_ty), mask=inside)

"""--lrn-kernel triton: the Triton LRN against the LRN's formula (Triton's interpreter on the CPU), and its errors."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from paper_repro.core.cli import UsageError
from paper_repro.nets.alexnet import AlexNet
from paper_repro.nets.lrn import LocalResponseNorm, local_response_norm, use_lrn_kernel
from paper_repro.training.build import build_model
from paper_repro.training.settings import parse_args

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")

# Run in a fresh process: TRITON_INTERPRET must be set before the kernels are first imported.
INTERPRETED_CHECK = r"""
import itertools, json, os, sys
os.environ["TRITON_INTERPRET"] = "1"
import torch
sys.path.insert(0, "tests")
from test_model import lrn_window_formula  # the LRN by explicit loops over the window
from paper_repro.nets.lrn_triton import triton_local_response_norm


def formula(x, groups, alpha, size, relu):
    # the window formula of relu(x) when the ReLU is inside the op (a = relu(x) in the numerator and the sums)
    return lrn_window_formula(x.clamp_min(0) if relu else x, groups, alpha, size)


worst = {"forward": 0.0, "backward": 0.0}
strides_kept = True
for size, groups, relu, cl in itertools.product((3, 4, 5), (1, 2), (False, True), (False, True)):
    gen = torch.Generator().manual_seed(size * 8 + groups * 4 + relu * 2 + cl)
    x64 = torch.randn(2, 12, 3, 5, dtype=torch.float64, generator=gen) * 60
    w = torch.randn(2, 12, 3, 5, dtype=torch.float64, generator=gen)
    layout = torch.channels_last if cl else torch.contiguous_format
    x = x64.float().contiguous(memory_format=layout).requires_grad_(True)
    ref_in = x64.clone().requires_grad_(True)
    alpha = 1e-4 / size
    y = triton_local_response_norm(x, size, alpha, 0.75, 2.0, groups, relu)
    ref = formula(ref_in, groups, alpha, size, relu)
    (y.double() * w).sum().backward()
    (ref * w).sum().backward()
    worst["forward"] = max(worst["forward"], ((y.double() - ref).abs().max() / ref.abs().max()).item())
    worst["backward"] = max(worst["backward"],
                            ((x.grad.double() - ref_in.grad).abs().max() / ref_in.grad.abs().max()).item())
    strides_kept &= y.stride() == x.stride() and x.grad.stride() == x.stride()
# a channel slice of a bigger map (not dense: it is copied first, and its gradient lands in the slice)
big = (torch.randn(2, 16, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(99)) * 60)
leaf, ref_in = big.float().requires_grad_(True), big[:, 2:14].clone().requires_grad_(True)
y = triton_local_response_norm(leaf[:, 2:14], 5, 2e-5, 0.75, 2.0, 2, True)
ref = formula(ref_in, 2, 2e-5, 5, True)
(y.double() ** 2).sum().backward()
(ref ** 2).sum().backward()
worst["forward"] = max(worst["forward"], ((y.double() - ref).abs().max() / ref.abs().max()).item())
worst["backward"] = max(worst["backward"],
                        ((leaf.grad[:, 2:14].double() - ref_in.grad).abs().max() / ref_in.grad.abs().max()).item())
strides_kept &= bool((leaf.grad[:, :2] == 0).all() and (leaf.grad[:, 14:] == 0).all())
print(json.dumps({"worst": worst, "strides_kept": strides_kept}))
"""


@needs_triton
def test_triton_lrn_matches_the_formula_and_its_gradient_under_the_interpreter():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-c", INTERPRETED_CHECK], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # fp32 kernels against a float64 formula: sizes 3-5, one and two groups, with and without the ReLU, both layouts
    assert result["worst"]["forward"] < 1e-6 and result["worst"]["backward"] < 1e-5, result
    assert result["strides_kept"]


KERNEL_ARGS = {
    "forward_kernel": ("x_ptr", "y_ptr", "s_ptr", "alpha", "beta", "k"),
    "backward_kernel": ("g_ptr", "x_ptr", "s_ptr", "dx_ptr", "coef", "beta"),
}


@needs_triton
@pytest.mark.parametrize("arch", [90, 80], ids=["sm_90-hopper", "sm_80-ampere"])
def test_triton_lrn_kernels_compile_to_gpu_machine_code_without_a_gpu(arch):
    # The interpreter runs Python; this is the compiler a GPU would run (Triton -> PTX -> cubin by its ptxas).
    triton = pytest.importorskip("triton")
    try:
        from triton.backends.compiler import GPUTarget
    except ImportError:
        pytest.skip("this Triton has no GPUTarget to compile for")
    from paper_repro.nets import lrn_triton_kernels as kernels
    for name, args in KERNEL_ARGS.items():
        for relu in (False, True):
            for dtype in ("fp32", "bf16"):
                signature = {a: ("*" + (dtype if a != "s_ptr" else "fp32")) if a.endswith("_ptr") else "fp32"
                             for a in args}
                signature.update({a: "i32" for a in ("cg", "hw", "groups", "stride_n", "stride_c", "stride_p")})
                names = list(getattr(kernels, name).arg_names)
                signature = {a: signature.get(a, "constexpr") for a in names}
                src = triton.compiler.ASTSource(fn=getattr(kernels, name), signature=signature,
                                                constexprs={"BEFORE": 2, "AFTER": 2, "RELU": relu, "BLOCK": 128})
                compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32))
                assert len(compiled.asm["cubin"]) > 1000, (name, relu, dtype)


def test_triton_lrn_on_the_cpu_is_refused_in_one_line():
    settings = parse_args(["--data", "d", "--out", "o", "--gpus", "cpu", "--width", "0.125", "--lrn-kernel", "triton"])
    with pytest.raises(UsageError) as err:
        build_model(settings, 10, ["cpu"])
    assert str(err.value) == ("--lrn-kernel triton: it runs on a CUDA device, not cpu (TRITON_INTERPRET=1 runs it "
                              "on the CPU, slowly, for tests); use --lrn-kernel torch")


def test_use_lrn_kernel_reaches_every_lrn_and_refuses_unknown_kernels():
    net = AlexNet(num_classes=10, devices=["cpu", "cpu"], width=0.125)
    layers = [m for m in net.modules() if isinstance(m, LocalResponseNorm)]
    assert use_lrn_kernel(net, "triton") == len(layers) >= 2
    assert all(m.kernel == "triton" for m in layers)
    with pytest.raises(ValueError, match="LRN kernel must be one of"):
        use_lrn_kernel(net, "cuda")
    with pytest.raises(ValueError, match="LRN kernel must be one of"):
        local_response_norm(torch.zeros(1, 4, 2, 2), kernel="fast")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_lrn_matches_the_torch_lrn_on_cuda(layout, dtype):
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = (torch.randn(8, 96, 55, 55, device="cuda", generator=gen) * 60).to(dtype).contiguous(memory_format=layout)
    g = torch.randn(8, 96, 55, 55, device="cuda", generator=gen).to(dtype).contiguous(memory_format=layout)
    outs = []
    for kernel in ("torch", "triton"):
        xi = x.clone().requires_grad_(True)
        y = local_response_norm(xi, groups=2, relu=True, kernel=kernel)
        y.backward(g)
        outs.append((y.float(), xi.grad.float()))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(outs[1][0], outs[0][0], **tol)
    torch.testing.assert_close(outs[1][1], outs[0][1], **tol)

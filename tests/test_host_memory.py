"""The CPU run's allocator policy: what it asks glibc for, when, and that freed blocks are then reused."""
import platform
import subprocess
import sys
import textwrap

import pytest

from paper_repro.training.host_memory import M_MMAP_MAX, M_TRIM_THRESHOLD, NEVER_TRIM, keep_freed_memory


class Recorder:
    def __init__(self, answer=1):
        self.calls, self.answer = [], answer

    def __call__(self, param, value):
        self.calls.append((param, value))
        return self.answer


def test_cpu_run_turns_off_mmap_and_trimming():
    mallopt = Recorder()
    policy = keep_freed_memory(("cpu", "cpu"), mallopt=mallopt)
    assert mallopt.calls == [(M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, NEVER_TRIM)]
    assert policy == {"keep_freed_memory": True, "why": "glibc malloc: M_MMAP_MAX=0, M_TRIM_THRESHOLD=2**31-1"}


@pytest.mark.parametrize("devices, enabled, why", [
    (("cuda:0", "cuda:1"), True, "GPU run: CUDA's caching allocator holds the tensors"),
    (("cpu",), False, "--no-keep-freed-memory"),
])
def test_gpu_runs_and_the_flag_leave_malloc_alone(devices, enabled, why):
    mallopt = Recorder()
    assert keep_freed_memory(devices, enabled, mallopt=mallopt) == {"keep_freed_memory": False, "why": why}
    assert mallopt.calls == []


def test_a_refused_mallopt_is_reported_not_claimed():
    policy = keep_freed_memory(("cpu",), mallopt=Recorder(answer=0))
    assert policy == {"keep_freed_memory": False, "why": "glibc refused mallopt"}


# Training steps of a small conv net whose activations (41 MB) are above the 32 MB that glibc
# always maps afresh: page faults and resident-size growth over the last three of eight steps.
_STEPS = textwrap.dedent("""
    import resource, sys, torch
    from paper_repro.training.host_memory import keep_freed_memory
    from paper_repro.nets.lrn import local_response_norm
    if sys.argv[1] == "keep":
        assert keep_freed_memory(("cpu",))["keep_freed_memory"]
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 32, 5, padding=2)
    x = torch.randn(8, 3, 200, 200)
    def rss():
        return int(open("/proc/self/statm").read().split()[1])
    for step in range(8):
        if step == 5:
            faults, pages = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, rss()
        local_response_norm(conv(x), relu=True).square().sum().backward()
        conv.weight.grad = conv.bias.grad = None
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults, rss() - pages)
""")


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_training_steps_reuse_freed_blocks_instead_of_faulting_them_in():
    def run(mode):
        out = subprocess.run([sys.executable, "-c", _STEPS, mode], capture_output=True, text=True, check=True)
        return [int(v) for v in out.stdout.split()]
    activation_pages = 8 * 32 * 200 * 200 * 4 // 4096  # one 41 MB activation tensor
    default_faults, _ = run("default")
    assert default_faults > 3 * 3 * activation_pages  # every big tensor unmapped when freed, faulted in again
    faults, growth = run("keep")
    # Reused. The heap may still take a block while it settles (measured: 0 or 1 block in 8 runs).
    assert faults < default_faults / 10 and growth <= 3 * activation_pages

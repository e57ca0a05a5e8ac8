"""On a CPU run, make the C allocator keep freed memory in the process instead of returning it to the OS.

A training step on the CPU allocates and frees a few gigabytes in tensors of 1-75 MB. glibc's
malloc serves blocks that large with mmap and unmaps them when freed, so every step asks the
kernel for fresh zeroed pages again and faults them in one by one: on the development VM that
was 6-7 s of system time in a 36 s benchmark, and the page faults cost the net with the most
temporaries (ours: the LRN's) the most. With mmap off (M_MMAP_MAX = 0) and the heap never
trimmed (M_TRIM_THRESHOLD huge), freed blocks are reused by the next step's tensors: the same
arithmetic, no page faults once the heap has settled (after two or three steps), and a resident
size that stays at its high-water mark plus what fragmentation holds (a batch-32 training step of
our net: 1.80 GB against 1.71 GB; a synthetic loop of 40 MB tensors with a 200 MB working set
settled at 1.3-1.4 GB). `--no-keep-freed-memory` leaves malloc alone. See results/benchmarks.md.
"""
import ctypes
import ctypes.util
import platform

from paper_repro.core.devices import all_cpu

# mallopt parameters of glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1  # mallopt takes an int: 2 GiB of free heap top before any is handed back


def _glibc_mallopt():
    """glibc's mallopt as a Python callable, or None where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return getattr(libc, "mallopt", None)


def keep_freed_memory(devices, enabled=True, mallopt=None):
    """On an all-CPU run (and if `enabled`), set glibc's malloc to reuse freed blocks; return the policy set.

    `mallopt` defaults to glibc's (tests pass a recorder). Returns {"keep_freed_memory": bool,
    "why": str}, recorded in config.json and the bench JSON beside the precision policy.
    """
    if not enabled:
        return {"keep_freed_memory": False, "why": "--no-keep-freed-memory"}
    if not all_cpu(devices):
        # On a GPU the big tensors live in CUDA's caching allocator already; host malloc is left alone.
        return {"keep_freed_memory": False, "why": "GPU run: CUDA's caching allocator holds the tensors"}
    mallopt = _glibc_mallopt() if mallopt is None else mallopt
    if mallopt is None:
        return {"keep_freed_memory": False, "why": "the C library is not glibc"}
    # mallopt returns 1 on success, 0 on an unknown or refused parameter.
    if mallopt(M_MMAP_MAX, 0) != 1 or mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) != 1:
        return {"keep_freed_memory": False, "why": "glibc refused mallopt"}
    return {"keep_freed_memory": True, "why": "glibc malloc: M_MMAP_MAX=0, M_TRIM_THRESHOLD=2**31-1"}

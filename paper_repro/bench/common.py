"""What every benchmark shares: where it ran, CUDA timing, FLOP counts, and the baselines' image folders."""
import io
import os
import platform
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from paper_repro.core import cli
from paper_repro.core.devices import parse_gpus

NUM_CLASSES = 1000

# Dense (no sparsity) tensor-core peaks from NVIDIA's data sheets, TFLOP/s; used only to report
# the fraction of peak a run reaches. A GPU not listed reports no fraction rather than a guess.
PEAK_TFLOPS = {
    "H100 80GB HBM3": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},  # H100 SXM5
    "H100 PCIe": {"bf16": 756.0, "tf32": 378.0, "fp32": 51.2},
    "H200": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "A100-SXM4-80GB": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "A100-SXM4-40GB": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
}


def machine_info(devices):
    """Describe where a benchmark ran: CPU count, torch version, GPU name."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "platform": platform.platform(), "devices": list(devices)}
    if any(str(d).startswith("cuda") for d in devices):
        info["gpu"] = torch.cuda.get_device_name(torch.device(devices[0]))
    return info


def peak_tflops(device, precision):
    """Return the data-sheet dense peak of `device` for `precision`, or None if unknown."""
    if not str(device).startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    for key, peaks in PEAK_TFLOPS.items():
        if key in name:
            return peaks[precision]
    return None


def synchronize(devices):
    """Wait for every CUDA device in `devices` (timing must include queued kernels)."""
    for d in set(devices):
        if str(d).startswith("cuda"):
            torch.cuda.synchronize(torch.device(d))


def matmul_peak_tflops(device, n=2048, repeats=5, dtype=torch.float32):
    """The device's measured matmul rate: (TFLOP/s, TFLOP per CPU-second of this process) of the best of `repeats`
    n x n by n x n torch.mm (2 n^3 FLOPs each) with the current threads and precision policy: the ceiling a
    training step's FLOP rate is read by. Per CPU-second is what other jobs on a shared CPU disturb least."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    c = torch.mm(a, b)  # warm-up: the BLAS threads and buffers
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        synchronize([device])
        start, cpu_start = time.perf_counter(), time.process_time()
        torch.mm(a, b, out=c)
        synchronize([device])
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - cpu_start)
    return 2 * n ** 3 / wall / 1e12, 2 * n ** 3 / max(cpu, 1e-9) / 1e12


def forward_flops(model, x):
    """Count the FLOPs of one forward pass of `model` on `x` (aten-level: convs and matmuls)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def synthetic_stats(seed=0):
    """A mean image and colour PCA of the shape load_stats gives (random numbers; speed does not depend on them)."""
    g = torch.Generator().manual_seed(seed)
    eigvec, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    return {"mean_image": (torch.rand(256, 256, 3, generator=g) * 255).numpy(),
            "pca_eigval": np.array([4000.0, 250.0, 30.0]), "pca_eigvec": eigvec.numpy()}


def devices_or_usage_error(spec):
    """parse_gpus, its ValueError as a usage error (exit status 2)."""
    try:
        return parse_gpus(spec)
    except ValueError as e:
        raise cli.UsageError(str(e)) from None


class threads:
    """torch.set_num_threads(n) inside the block, the old count restored after."""

    def __init__(self, n):
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self):
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


def scratch_folder(parent):
    """A temporary folder under `parent` (made first if missing; None: the system's), removed on exit."""
    if parent:
        os.makedirs(parent, exist_ok=True)
    return tempfile.TemporaryDirectory(dir=parent)


def export_jpegs(store, folder):
    """Write the store's images as JPEG files folder/<wnid>/<name> (ImageFolder's tree); their paths in store order.

    A JPEG store's own bytes; a raw store's pixels encoded as the build encodes them (q95, 4:4:4)."""
    paths = []
    for i in range(len(store)):
        d = os.path.join(folder, store.classes[int(store.labels[i])])
        os.makedirs(d, exist_ok=True)
        paths.append(os.path.join(d, os.path.basename(store.filenames[i])))
        if store.store_format == "raw":
            buf = io.BytesIO()
            Image.fromarray(store[i][0]).save(buf, "JPEG", quality=95, subsampling="4:4:4")
            data = buf.getvalue()
        else:
            data = store.read_encoded(i)
        with open(paths[-1], "wb") as f:
            f.write(data)
    return paths


def export_image_folder(store, folder):
    """Write the store's images as JPEGs in folder/<wnid>/<name> (export_jpegs): the ImageFolder tree the baselines
    read; returns the folder."""
    export_jpegs(store, folder)
    return folder


def time_batches(batches, make_input, devices, seconds, warmup):
    """Pull batches until `seconds` have passed after `warmup` batches; return (images, seconds)."""
    it = iter(batches)
    for _ in range(warmup):
        make_input(next(it))
    synchronize(devices)
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(batches)
            batch = next(it)
        images += make_input(batch).shape[0]
    synchronize(devices)
    return images, time.perf_counter() - start

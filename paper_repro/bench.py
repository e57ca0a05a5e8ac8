"""python -m paper_repro.bench {train,loader,eval,lrn}: our speed beside the baseline a user would run.

Each stage runs ours and the baseline in one process, on the same device, data and precision,
and prints one JSON object (images_per_s of each, the figures behind them, the speed-up).
`train` runs the training command's own code: its flags' defaults, build_model, PaperSGD,
TrainPatch, set_precision_policy, keep_freed_memory and engine.train_step, for our net and for torchvision's AlexNet.
The image-prep benchmark is `python data_prep/bench_prep.py`.
"""
import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter

import numpy as np
import torch
import torchvision
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

from paper_repro import cli
from paper_repro.atomic import print_json
from paper_repro.augment import TrainPatch, batch_generator
from paper_repro.data import ImageNetStore, load_stats
from paper_repro.devices import parse_gpus, set_precision_policy
from paper_repro.engine import train_step
from paper_repro.evaluate import evaluate
from paper_repro.host_memory import keep_freed_memory
from paper_repro.loader import BatchLoader, epoch_order
from paper_repro.lrn import local_response_norm
from paper_repro.model import AlexNet
from paper_repro.optim import PaperSGD
from paper_repro.run_state import seed_dropout, seed_everything
from paper_repro.train import build_model
from paper_repro.train import parse_args as train_parse_args

PROG = "python -m paper_repro.bench"
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


def forward_flops(model, x):
    """Count the FLOPs of one forward pass of `model` on `x` (aten-level: convs and matmuls)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


class OpCounter(TorchDispatchMode):
    """Counts the aten operators dispatched while it is active that compute or allocate, and the bytes they touch.

    A TorchDispatchMode sees every operator below autograd, the backward's included. Not counted:
    views (they alias, no kernel runs) and queries that return no tensor. `bytes` adds, per operator,
    the size of every distinct tensor it reads and of every tensor it writes (an in-place operand
    is read and written; an out= tensor is only written; empty* allocate and touch nothing).
    """

    UNTOUCHED = ("aten::empty", "aten::empty_like", "aten::empty_strided", "aten::new_empty",
                 "aten::new_empty_strided")

    def __init__(self):
        """Start from zero."""
        super().__init__()
        self.ops, self.bytes = Counter(), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        """Run `func` and count it if it computes or allocates."""
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        written = _distinct(t for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        if func.namespace == "aten" and not func.is_view and (written or func._schema.is_mutable):
            self.ops[str(func)] += 1
            inputs = _distinct(t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor))
            in_place = func._schema.name.endswith("_")  # aten::mul_ ...: its first operand is read, then written
            read = [t for key, t in inputs.items() if key not in written or in_place]
            if func._schema.name not in self.UNTOUCHED:
                self.bytes += sum(t.numel() * t.element_size() for t in [*read, *written.values()])
        return out

    def total(self):
        """Operators counted."""
        return sum(self.ops.values())


def _distinct(tensors):
    """{memory key: tensor}: two views of the same elements count once."""
    return {(t.device, t.data_ptr() if t.device.type != "meta" else id(t), tuple(t.shape), t.stride(), t.dtype): t
            for t in tensors}


def synthetic_stats(seed=0):
    """A mean image and colour PCA of the shape load_stats gives (random numbers; speed does not depend on them)."""
    g = torch.Generator().manual_seed(seed)
    eigvec, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    return {"mean_image": (torch.rand(256, 256, 3, generator=g) * 255).numpy(),
            "pca_eigval": np.array([4000.0, 250.0, 30.0]), "pca_eigvec": eigvec.numpy()}


def training_setup(flags, num_classes, stats):
    """The training command's objects for its own command-line `flags`, built by the training code.

    Returns (settings, devices, precision and host-memory policy, model, optimizer, augmentation) as
    paper_repro.train makes them for one process: the flags' defaults are the paper's recipe.
    """
    # train's own resolution of defaults and checks; it wants a store and a run folder, which
    # nothing here reads (the batch is synthetic, nothing is written).
    settings = train_parse_args([*flags, "--data", "unused-by-bench", "--out", "unused-by-bench"])
    devices = _devices(settings.gpus)
    precision = set_precision_policy(devices, tf32=settings.tf32)
    # Process-wide: both nets of the benchmark run under the allocator policy the training command sets.
    precision["host_memory"] = keep_freed_memory(devices, settings.keep_freed_memory)
    seed_everything(settings.seed)
    model, _ = build_model(settings, num_classes, devices)
    seed_dropout(settings.seed, 0, devices)
    optimizer = PaperSGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                         weight_decay=settings.weight_decay)
    augment = TrainPatch(stats["mean_image"], stats["pca_eigval"], stats["pca_eigvec"], size=settings.input_size,
                         colour_noise=settings.colour_noise_scale if settings.colour_noise else None,
                         noise_std=settings.colour_noise_std, channels_last=settings.channels_last)
    return settings, devices, precision, model, optimizer, augment


def _devices(spec):
    """parse_gpus, its ValueError as a usage error (exit status 2)."""
    try:
        return parse_gpus(spec)
    except ValueError as e:
        raise cli.UsageError(str(e)) from None


class _Trainee:
    """One net in the training benchmark: its model, optimizer and step counter, stepped by engine.train_step."""

    def __init__(self, model, optimizer, devices):
        self.model, self.optimizer, self.devices, self.step_index = model, optimizer, devices, 0

    def steps(self, n, images, labels, augment, seed, bf16):
        """Run n training steps on the fixed batch (new augmentation draws each step); return (wall, CPU) seconds."""
        synchronize(self.devices)
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            train_step(self.model, self.optimizer, images, labels, augment,
                       batch_generator(seed, 0, self.step_index), device=self.devices[0], bf16=bf16)
            self.step_index += 1
        synchronize(self.devices)
        return time.perf_counter() - start, time.process_time() - cpu


def bench_train(args):
    """engine.train_step of our net vs torchvision.models.alexnet: same batch, augmentation, optimizer and device."""
    flags = ["--gpus", args.gpus, "--batch-size", str(args.batch_size), "--width", str(args.width)]
    flags += ["--bf16"] * args.bf16 + ["--channels-last"] * args.channels_last + ["--no-tf32"] * (not args.tf32)
    flags += ["--no-keep-freed-memory"] * (not args.keep_freed_memory)
    stats = synthetic_stats()
    settings, devices, precision, ours, opt, augment = training_setup(flags, NUM_CLASSES, stats)
    dev0 = torch.device(devices[0])
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    theirs = torchvision.models.alexnet(num_classes=NUM_CLASSES).to(dev0, memory_format=memory_format)
    their_opt = PaperSGD(theirs.parameters(), lr=settings.lr, momentum=settings.momentum,
                         weight_decay=settings.weight_decay)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (args.batch_size, 256, 256, 3), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=g)
    if dev0.type == "cuda":
        images, labels = images.pin_memory(), labels.pin_memory()  # as BatchLoader's batches on a GPU run
    nets = {"ours": _Trainee(ours, opt, devices), "torchvision_alexnet": _Trainee(theirs, their_opt, (devices[0],))}
    result = {"stage": "train", "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
              "precision": "bf16" if settings.bf16 else ("tf32" if precision["tf32"] else "fp32"),
              "precision_policy": precision, "channels_last": settings.channels_last, "width": settings.width,
              "training_flags": flags, "machine": machine_info(devices)}
    for net in nets.values():
        net.model.train()
    # Warm-up steps alternate the nets as the rounds do: the first steps after a switch fault in the
    # heap's pages until both nets' tensors have found their places (measured on the CPU: ours
    # faulted ~50,000 pages in its first step after torchvision's first steps, none after that).
    for _ in range(args.warmup):
        for net in nets.values():
            net.steps(1, images, labels, augment, settings.seed, settings.bf16)
    # Rounds alternate the two nets, so a machine whose speed drifts slows both alike.
    seconds, cpu_seconds = {name: [] for name in nets}, {name: [] for name in nets}
    for _ in range(args.repeats):
        for name, net in nets.items():
            wall, cpu = net.steps(args.steps, images, labels, augment, settings.seed, settings.bf16)
            seconds[name].append(wall)
            cpu_seconds[name].append(cpu)
    x = augment(images[:1].to(dev0), batch_generator(0, 0, 0))
    for name, net in nets.items():
        per_step = [s / args.steps for s in seconds[name]]
        flops = forward_flops(net.model, x)
        row = {"images_per_s": args.batch_size / statistics.median(per_step),
               "images_per_s_best": args.batch_size / min(per_step),
               "seconds_per_step": per_step, "cpu_seconds_per_step": [s / args.steps for s in cpu_seconds[name]],
               "forward_gflop_per_image": flops / 1e9,
               # backward costs about twice the forward (grads of inputs and of weights)
               "train_tflop_per_s": 3 * flops * args.batch_size / statistics.median(per_step) / 1e12}
        peak = peak_tflops(devices[0], result["precision"])
        if peak:
            row["fraction_of_peak"] = row["train_tflop_per_s"] / peak
            row["peak_tflop_per_s_assumed"] = peak
        row.update(step_counts(net, images, labels, augment, settings))
        result[name] = row
    result["speedup"] = result["ours"]["images_per_s"] / result["torchvision_alexnet"]["images_per_s"]
    result["speedup_per_round"] = [b / a for a, b in zip(seconds["ours"], seconds["torchvision_alexnet"])]
    # On a machine shared with other jobs, CPU time (all of this process's threads) is less disturbed than wall time.
    result["speedup_cpu_time_per_round"] = [b / a for a, b in zip(cpu_seconds["ours"],
                                                                  cpu_seconds["torchvision_alexnet"])]
    result["speedup_cpu_time"] = statistics.median(result["speedup_cpu_time_per_round"])
    result["link_bytes_per_step"] = result["ours"].pop("link_bytes_per_step")
    result["link_bytes_per_link"] = result["ours"].pop("link_bytes_per_link")
    result["ops_per_step"] = result["ours"]["ops_per_step"]
    result["ops_counted_by"] = ("a TorchDispatchMode (paper_repro.bench.OpCounter) around one whole train_step: "
                                "aten operators that compute or allocate, views excluded")
    return result


def step_counts(net, images, labels, augment, settings):
    """ops_per_step (with the ten most frequent) of one more training step, and for our net the bytes its links carried."""
    traffic = getattr(net.model, "traffic", None)
    if traffic is not None:
        traffic.reset()
    with OpCounter() as counter:
        net.steps(1, images, labels, augment, settings.seed, settings.bf16)
    row = {"ops_per_step": counter.total(), "most_frequent_ops": dict(counter.ops.most_common(10))}
    if traffic is not None:
        row["link_bytes_per_step"] = traffic.total()
        row["link_bytes_per_link"] = {"forward": dict(traffic.forward), "backward": dict(traffic.backward)}
    return row


def bench_lrn(args):
    """Forward + backward of paper_repro.lrn on one activation tensor: seconds, operators and passes over memory."""
    shape = tuple(int(v) for v in args.shape.split(","))
    g = torch.Generator().manual_seed(0)
    base = torch.relu(torch.randn(shape, generator=g)) * 100  # ReLU outputs in the hundreds, as after conv1
    grad = torch.randn(shape, generator=g)
    host_memory = keep_freed_memory(("cpu",))  # process-wide, as in a CPU training run
    result = {"stage": "lrn", "shape": list(shape), "groups": args.groups, "repeats": args.repeats,
              "machine": machine_info(("cpu",)), "host_memory": host_memory,
              "passes_means": "bytes every operator reads and writes / bytes of one fp32 tensor of this shape"}
    with _threads(args.threads):
        result["machine"]["threads"] = torch.get_num_threads()
        for layout in ("nchw", "channels_last"):
            for dtype in (torch.float32, torch.bfloat16):
                fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
                x = base.to(dtype).contiguous(memory_format=fmt).requires_grad_(True)
                g_ = grad.to(dtype).contiguous(memory_format=fmt)

                def once():
                    local_response_norm(x, groups=args.groups).backward(g_)
                    x.grad = None

                once()
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    once()
                    times.append(time.perf_counter() - start)
                with OpCounter() as counter:
                    once()
                # The same call on "meta" tensors dispatches what a GPU would (no kernels run there).
                xm = torch.empty_like(x, device="meta").requires_grad_(True)
                with OpCounter() as gpu:
                    local_response_norm(xm, groups=args.groups).backward(torch.empty_like(g_, device="meta"))
                result[f"{layout}_{str(dtype).split('.')[1]}"] = {
                    "seconds_min": min(times), "seconds_median": statistics.median(times),
                    "ops": counter.total(), "passes": counter.bytes / (base.numel() * 4),
                    "op_counts": dict(counter.ops),
                    "gpu_path_ops": gpu.total(), "gpu_path_passes": gpu.bytes / (base.numel() * 4)}
    return result


class _threads:
    """torch.set_num_threads(n) inside the block, the old count restored after."""

    def __init__(self, n):
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self):
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


def export_image_folder(store, folder):
    """Write the store's JPEGs as folder/<wnid>/<name>: the ImageFolder tree the baselines read."""
    for i in range(len(store)):
        d = os.path.join(folder, store.classes[int(store.labels[i])])
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, os.path.basename(store.filenames[i])), "wb") as f:
            f.write(store.read_encoded(i))
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


class _StackCrops:
    """TenCrop's tuple of PIL crops -> a V x 3 x S x S float tensor, 0-255 scale (picklable for workers)."""

    def __call__(self, crops):
        return torch.stack([torch.from_numpy(np.asarray(c, dtype=np.float32)).permute(2, 0, 1) for c in crops])


def bench_loader(args):
    """The training input pipeline (decode, crop, flip, colour noise, mean) vs ImageFolder + RandomCrop."""
    devices = _devices(args.gpus)
    dev = torch.device(devices[0])
    store = ImageNetStore(args.data, "train")
    stats = load_stats(args.data)
    patch = TrainPatch(stats["mean_image"], stats["pca_eigval"], stats["pca_eigvec"])
    pin = dev.type == "cuda"
    loader = BatchLoader(store, epoch_order(len(store), 0, 0), args.batch_size, workers=args.workers,
                         pin_memory=pin, drop_last=True)
    step = [0]

    def ours(batch):
        images, labels = batch
        step[0] += 1
        x = patch(images.to(dev, non_blocking=True), batch_generator(0, 0, step[0]))
        labels.to(dev, non_blocking=True)
        return x

    n_ours, s_ours = time_batches(loader, ours, devices, args.seconds, args.warmup)
    del loader
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = export_image_folder(store, os.path.join(tmp, "train"))
        dataset = torchvision.datasets.ImageFolder(folder, transform=transforms.Compose([
            transforms.RandomCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor()]))
        baseline = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                               num_workers=args.workers, pin_memory=pin, drop_last=True,
                                               persistent_workers=args.workers > 0)

        def theirs(batch):
            images, labels = batch
            labels.to(dev, non_blocking=True)
            return images.to(dev, non_blocking=True)

        n_base, s_base = time_batches(baseline, theirs, devices, args.seconds, args.warmup)
    result = {"stage": "loader", "batch_size": args.batch_size, "workers": args.workers,
              "store_images": len(store), "machine": machine_info(devices),
              "ours": {"images_per_s": n_ours / s_ours, "images": n_ours, "seconds": s_ours,
                       "what": "BatchLoader (decode in workers) + TrainPatch on the device: crop, flip, "
                               "PCA colour noise, mean image"},
              "imagefolder_baseline": {"images_per_s": n_base / s_base, "images": n_base, "seconds": s_base,
                                       "what": "ImageFolder over the same 256x256 JPEGs + RandomCrop(224) + "
                                               "RandomHorizontalFlip + ToTensor, DataLoader, same workers"}}
    result["speedup"] = result["ours"]["images_per_s"] / result["imagefolder_baseline"]["images_per_s"]
    return result


def bench_eval(args):
    """Ten-view evaluation of the val split: ours (views cut on the device) vs ImageFolder + TenCrop."""
    devices = _devices(args.gpus)
    dev = torch.device(devices[0])
    store = ImageNetStore(args.data, "val")
    mean_image = load_stats(args.data)["mean_image"]
    torch.manual_seed(0)
    net = AlexNet(num_classes=len(store.classes), devices=devices, width=args.width).eval()
    warm = torch.zeros(2, 3, 224, 224, device=dev)
    with torch.inference_mode():
        net(warm)
    start = time.perf_counter()
    evaluate([net], store, mean_image, views=10, batch_size=args.batch_size, workers=args.workers,
             bf16=args.bf16, progress=False)
    synchronize(devices)
    s_ours = time.perf_counter() - start
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = export_image_folder(store, os.path.join(tmp, "val"))
        dataset = torchvision.datasets.ImageFolder(folder, transform=transforms.Compose([
            transforms.TenCrop(224), _StackCrops()]))
        mean = torch.as_tensor(mean_image).permute(2, 0, 1).mean(dim=(1, 2)).view(1, 1, 3, 1, 1).to(dev)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                                             pin_memory=dev.type == "cuda")
        start = time.perf_counter()
        with torch.inference_mode():
            for crops, _ in loader:
                crops = crops.to(dev, non_blocking=True) - mean
                n, v = crops.shape[:2]
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
                    logits = net(crops.flatten(0, 1))
                torch.softmax(logits.float(), 1).view(n, v, -1).mean(1).cpu()
        synchronize(devices)
        s_base = time.perf_counter() - start
    n = len(store)
    result = {"stage": "eval", "views": 10, "images": n, "batch_size": args.batch_size, "workers": args.workers,
              "width": args.width, "bf16": args.bf16, "machine": machine_info(devices),
              "ours": {"images_per_s": n / s_ours, "seconds": s_ours,
                       "what": "paper_repro.evaluate.evaluate: decode once in workers, ten views cut on the device"},
              "tencrop_baseline": {"images_per_s": n / s_base, "seconds": s_base,
                                   "what": "ImageFolder over the same JPEGs + transforms.TenCrop(224) in workers, "
                                           "same net and device"}}
    result["speedup"] = result["ours"]["images_per_s"] / result["tencrop_baseline"]["images_per_s"]
    return result


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written, and every flag's default after its help."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default:" in text or action.default in (None, argparse.SUPPRESS):
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return text + " (default: off)"
        return text + " (default: %(default)s)"


def _pipeline_flags(p, data_help, gpus_help):
    """The flags the loader and eval stages share: the store, the device, the workers, the batch, the outputs."""
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--gpus", default="cpu", help=gpus_help)
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="decoding processes of each pipeline")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch")
    p.add_argument("--tmp", default=None, help="where the baseline's ImageFolder copy is written (default: the "
                                               "system's temporary folder)")
    p.add_argument("--json", help="also write the JSON here (default: print only)")


def get_args_parser():
    """The bench command line: one sub-command per stage."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=_Formatter)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="{train,loader,eval,lrn}")

    p = sub.add_parser("train", formatter_class=_Formatter, help="a training step (augment, forward, loss, backward, "
                       "PaperSGD) by the training code: ours vs torchvision.models.alexnet",
                       description="engine.train_step of our net (built by paper_repro.train with these flags,\n"
                                   "the rest the paper's recipe) and of torchvision's AlexNet, in alternating\n"
                                   "rounds on one fixed uint8 batch with fresh augmentation draws every step.")
    p.add_argument("--gpus", default="cpu", help="device spec as for train: cpu, cpu,cpu, 0, 0,0, 0,1")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (the paper's 128)")
    p.add_argument("--steps", type=int, default=10, help="timed steps of each net per round")
    p.add_argument("--repeats", type=int, default=3, help="rounds (each net's steps in turn); median and best reported")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each net, in alternation, before the first round")
    p.add_argument("--width", type=float, default=1.0, help="our net's width (torchvision's is always 1)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for both nets, as train --bf16")
    p.add_argument("--channels-last", action="store_true", help="channels_last for both nets, as train --channels-last")
    p.add_argument("--no-tf32", dest="tf32", action="store_false", help="as train --no-tf32: plain fp32 convolutions and matmuls on a GPU "
                                                                  "(default: TF32 on a GPU)")
    p.add_argument("--no-keep-freed-memory", dest="keep_freed_memory", action="store_false",
                   help="as train --no-keep-freed-memory: glibc's malloc returns freed memory to the OS "
                        "(default: kept for reuse on the CPU, for both nets)")
    p.add_argument("--json", help="also write the JSON here (default: print only)")
    p.set_defaults(func=bench_train)

    p = sub.add_parser("loader", formatter_class=_Formatter,
                       help="training input pipeline: ours vs ImageFolder + RandomCrop + flip")
    _pipeline_flags(p, "STORE from data_prep/build_imagenet.py (its train split)",
                    "where the batches go (augmentation runs there for ours)")
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds for each pipeline")
    p.add_argument("--warmup", type=int, default=3, help="batches before the clock starts")
    p.set_defaults(func=bench_loader)

    p = sub.add_parser("eval", formatter_class=_Formatter,
                       help="ten-view evaluation: ours vs ImageFolder + TenCrop, same net")
    _pipeline_flags(p, "STORE (its val split is evaluated)", "device spec as for evaluate: cpu, 0, 0,1")
    p.add_argument("--width", type=float, default=1.0, help="width of the (untrained) net")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for both")
    p.set_defaults(func=bench_eval)

    p = sub.add_parser("lrn", formatter_class=_Formatter,
                       help="the LRN's forward + backward on one tensor: time, operators, passes over memory",
                       description="paper_repro.lrn.local_response_norm forward + backward on a ReLU-like\n"
                                   "tensor, NCHW and channels_last, fp32 and bf16.")
    p.add_argument("--shape", default="32,96,55,55", help="N,C,H,W (default: conv1's output at batch 32)")
    p.add_argument("--groups", type=int, default=2, help="channel groups (2: the one-device layout's two columns)")
    p.add_argument("--repeats", type=int, default=7, help="timed calls of each variant; min and median reported")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads")
    p.add_argument("--json", help="also write the JSON here (default: print only)")
    p.set_defaults(func=bench_lrn)
    return parser


def main(args):
    """Run the chosen stage, print its JSON, and write it to --json if given."""
    return print_json(args.func(args), args.json)


if __name__ == "__main__":
    cli.run(PROG, main, get_args_parser().parse_args(sys.argv[1:]))

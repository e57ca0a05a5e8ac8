"""python -m paper_repro.bench {train,loader,eval,prep}: our speed beside the baseline a user would run.

Each stage runs ours and the baseline in one process, on the same device, data and precision,
and prints one JSON object (images_per_s of each, the figures behind them, the speed-up).
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch

from paper_repro.checkpoint import atomic_write_json

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
            "platform": platform.platform(), "devices": list(devices)}
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
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def time_train_steps(model, optimizer, x, y, devices, steps, warmup, bf16):
    """Run warmup + `steps` SGD steps on a fixed batch; return seconds for the timed steps."""
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        with torch.autocast(device_type=torch.device(devices[0]).type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    synchronize(devices)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(devices)
    return time.perf_counter() - start


def bench_train(args):
    """Forward + backward + PaperSGD of our net vs torchvision.models.alexnet, same batch and device."""
    import torchvision

    from paper_repro.devices import parse_gpus
    from paper_repro.model import AlexNet
    from paper_repro.optim import PaperSGD

    devices = parse_gpus(args.gpus)
    torch.manual_seed(0)
    dev0 = torch.device(devices[0])
    if dev0.type == "cuda":
        # TF32 for matmuls too (cuDNN convolutions already default to it): the fp32 rows say "tf32".
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    ours = AlexNet(num_classes=1000, devices=devices, width=args.width).to(memory_format=memory_format)
    theirs = torchvision.models.alexnet(num_classes=1000).to(dev0, memory_format=memory_format)
    size = ours.config().get("input_size", 224)
    x = torch.randn(args.batch_size, 3, size, size, device=dev0).contiguous(memory_format=memory_format)
    y = torch.randint(0, 1000, (args.batch_size,), device=dev0)
    precision = "bf16" if args.bf16 else ("tf32" if dev0.type == "cuda" else "fp32")
    result = {"stage": "train", "batch_size": args.batch_size, "steps": args.steps, "precision": precision,
              "channels_last": args.channels_last, "width": args.width, "machine": machine_info(devices)}
    for name, model in (("ours", ours), ("torchvision_alexnet", theirs)):
        model.train()
        flops = forward_flops(model, x[:1]) * args.batch_size
        opt = PaperSGD(model.parameters(), lr=0.01)
        seconds = time_train_steps(model, opt, x, y, devices if name == "ours" else (devices[0],),
                                   args.steps, args.warmup, args.bf16)
        ips = args.batch_size * args.steps / seconds
        row = {"images_per_s": ips, "seconds": seconds, "forward_gflop_per_image": flops / args.batch_size / 1e9,
               # backward costs about twice the forward (grads of inputs and of weights)
               "train_tflop_per_s": 3 * flops * args.steps / seconds / 1e12}
        peak = peak_tflops(devices[0], precision)
        if peak:
            row["fraction_of_peak"] = row["train_tflop_per_s"] / peak
            row["peak_tflop_per_s_assumed"] = peak
        result[name] = row
    result["speedup"] = result["ours"]["images_per_s"] / result["torchvision_alexnet"]["images_per_s"]
    return result


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
    import torchvision
    from torchvision import transforms

    from paper_repro.augment import TrainPatch, batch_generator
    from paper_repro.data import ImageNetStore, load_stats
    from paper_repro.devices import parse_gpus
    from paper_repro.loader import BatchLoader, epoch_order

    devices = parse_gpus(args.gpus)
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
    import torchvision
    from torchvision import transforms

    from paper_repro.data import ImageNetStore, load_stats
    from paper_repro.devices import parse_gpus
    from paper_repro.evaluate import evaluate
    from paper_repro.model import AlexNet

    devices = parse_gpus(args.gpus)
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


def bench_prep(args):
    """data_prep's image recipe vs the first PIL script a user would write, same images and pool size."""
    from data_prep.bench_prep import bench_prep as run_prep, find_images

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        result = run_prep(find_images(args.source, args.limit), args.workers, tmp, repeat=args.repeat)
    return {"stage": "prep", "machine": machine_info(("cpu",)), **result}


def get_args_parser():
    """The bench command line: one sub-command per stage."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True)

    p = sub.add_parser("train", help="forward+backward+PaperSGD: ours vs torchvision.models.alexnet")
    p.add_argument("--gpus", default="cpu", help="device spec as for train (cpu, 0, 0,0, 0,1)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for both nets")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format for both nets")
    p.add_argument("--json", help="also write the JSON here")
    p.set_defaults(func=bench_train)

    p = sub.add_parser("loader", help="training input pipeline: ours vs ImageFolder + RandomCrop + flip")
    p.add_argument("--data", required=True, help="STORE from data_prep/build_imagenet.py (its train split)")
    p.add_argument("--gpus", default="cpu", help="where the batches go (augmentation runs there for ours)")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds for each pipeline")
    p.add_argument("--warmup", type=int, default=3, help="batches before the clock starts")
    p.add_argument("--tmp", default=None, help="where the baseline's ImageFolder copy is written")
    p.add_argument("--json", help="also write the JSON here")
    p.set_defaults(func=bench_loader)

    p = sub.add_parser("eval", help="ten-view evaluation: ours vs ImageFolder + TenCrop, same net")
    p.add_argument("--data", required=True, help="STORE (its val split is evaluated)")
    p.add_argument("--gpus", default="cpu")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--tmp", default=None, help="where the baseline's ImageFolder copy is written")
    p.add_argument("--json", help="also write the JSON here")
    p.set_defaults(func=bench_eval)

    p = sub.add_parser("prep", help="data_prep's image recipe vs a first PIL script, same images and pool")
    p.add_argument("--source", required=True, help="folder of source images (*.JPEG, *.jpg, *.png directly in it)")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--limit", type=int, default=None, help="use at most this many images")
    p.add_argument("--repeat", type=int, default=3, help="interleaved repeats; the best of each is kept")
    p.add_argument("--tmp", default=None, help="where both scripts write their outputs")
    p.add_argument("--json", help="also write the JSON here")
    p.set_defaults(func=bench_prep)
    return parser


def main(args):
    """Run the chosen stage, print its JSON, and write it to --json if given."""
    result = args.func(args)
    print(json.dumps(result, indent=2))
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args(sys.argv[1:]))

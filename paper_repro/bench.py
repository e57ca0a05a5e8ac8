"""python -m paper_repro.bench {train,loader,eval,prep}: our speed beside the baseline a user would run.

Each stage runs ours and the baseline in one process, on the same device, data and precision,
and prints one JSON object (images_per_s of each, the figures behind them, the speed-up).
"""
import argparse
import json
import os
import platform
import sys
import time

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

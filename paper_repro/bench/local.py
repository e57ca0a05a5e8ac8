"""bench local: section 3.3's net (cuda-convnet's conv-local net) with our locally connected layers against the
same net whose local3 and local4 are plain torch (F.unfold + einsum + autograd), same weights, same run.

Two measurements, each in alternating rounds (ours, plain, ours, ...) so that a busy machine slows both alike:
  layers  forward + backward of local3 and local4 alone, on pool2-shaped input (batch x 64 x 6 x 6)
  step    the whole training step by the training command's own code (settings of --config
          cifar10_conv_local, build_model, make_optimizer's per-layer PaperSGD, the cropped provider's
          transform, engine.train_step) on one fixed uint8 batch of 32x32 images
Each gives seconds per batch (median and best of the rounds) and the time of one epoch of 50,000
images at that rate (epoch_seconds = 50,000 / batch x seconds per batch).
"""
import copy
import statistics
import time

import numpy as np
import torch

from paper_repro.bench.common import machine_info, threads
from paper_repro.data.augment import batch_generator
from paper_repro.nets.local import UnfoldLocal2d
from paper_repro.training.build import build_model, make_optimizer, make_schedule, make_transforms
from paper_repro.training.engine import train_step
from paper_repro.training.host_memory import keep_freed_memory
from paper_repro.training.param_groups import apply_learning_rates
from paper_repro.training.run_state import seed_everything
from paper_repro.training.settings import parse_args as train_parse_args

CIFAR_TRAIN_IMAGES = 50_000


def plain_copy(model):
    """A deep copy of a conv-local net whose locally connected layers are UnfoldLocal2d with the same weights."""
    plain = copy.deepcopy(model)
    for name in ("local3", "local4"):
        ours = getattr(plain.layers, name)
        layer = UnfoldLocal2d(ours.in_channels, ours.out_channels, ours.in_size, ours.kernel_size, ours.padding,
                              ours.stride)
        layer.load_state_dict(ours.state_dict())
        setattr(plain.layers, name, layer)
    return plain


def _synthetic_cifar(batch, seed=0):
    g = np.random.default_rng(seed)
    images = torch.from_numpy(g.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8))
    labels = torch.from_numpy(g.integers(0, 10, batch))
    stats = {"mean_image": g.uniform(0, 255, (32, 32, 3)).astype(np.float32),
             "pca_eigval": np.array([4000.0, 250.0, 30.0]), "pca_eigvec": np.eye(3)}
    return images, labels, stats


def _rounds(fns, repeats, steps):
    """{name: [seconds per call, one entry per round]}: each round runs every fn `steps` times, in turn."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            times[name].append((time.perf_counter() - start) / steps)
    return times


def _figures(times, batch):
    out = {}
    for name, t in times.items():
        med = statistics.median(t)
        out[name] = {"seconds_per_batch_median": med, "seconds_per_batch_best": min(t), "rounds": t,
                     "images_per_s": batch / med, "epoch_seconds": CIFAR_TRAIN_IMAGES / batch * med}
    out["speedup"] = out["plain"]["seconds_per_batch_median"] / out["ours"]["seconds_per_batch_median"]
    return out


def bench_local(args):
    """Time section 3.3's local layers and training step, ours against plain torch; return the JSON dict."""
    flags = ["--config", "cifar10_conv_local", "--cifar-layers", args.layers, "--batch-size", str(args.batch_size)]
    settings = train_parse_args([*flags, "--data", "unused-by-bench", "--out", "unused-by-bench"])
    host_memory = keep_freed_memory(("cpu",), settings.keep_freed_memory)
    images, labels, stats = _synthetic_cifar(args.batch_size)
    seed_everything(0)
    ours, _ = build_model(settings, 10, ("cpu",))
    plain = plain_copy(ours)
    result = {"stage": "local", "net": f"cifar_conv_local {args.layers}", "batch_size": args.batch_size,
              "steps": args.steps, "repeats": args.repeats, "host_memory": host_memory,
              "plain_means": "local3 and local4 as UnfoldLocal2d: F.unfold, einsum, autograd (same weights)"}
    with threads(args.threads):
        result["machine"] = machine_info(("cpu",))
        # the local layers alone, on pool2's output shape
        x = torch.randn(args.batch_size, 64, 6, 6, generator=torch.Generator().manual_seed(1)).requires_grad_(True)

        def local_pass(net):
            def run():
                y = net.layers.act4(net.layers.local4(net.layers.act3(net.layers.local3(x))))
                y.backward(torch.ones_like(y))
            return run

        with torch.no_grad():
            y_ours, y_plain = ours.layers.local3(x), plain.layers.local3(x)
        result["local3_max_abs_difference"] = float((y_ours - y_plain).abs().max())
        layer_fns = {"ours": local_pass(ours), "plain": local_pass(plain)}
        _rounds(layer_fns, 1, 2)  # warm-up
        result["layers"] = _figures(_rounds(layer_fns, args.repeats, args.steps), args.batch_size)
        # the whole training step, by the training code
        step_fns = {}
        for name, net in (("ours", ours), ("plain", plain)):
            optimizer = make_optimizer(net, settings)
            apply_learning_rates(optimizer, make_schedule(settings), settings.lr, settings.bias_lr_fixed)
            augment, _ = make_transforms(settings, stats, net, loader_workers=0)
            counter = iter(range(10 ** 9))

            def step(net=net, optimizer=optimizer, augment=augment, counter=counter):
                train_step(net, optimizer, images, labels, augment, batch_generator(0, 0, next(counter)), device="cpu")
            step_fns[name] = step
        _rounds(step_fns, 1, 2)
        result["step"] = _figures(_rounds(step_fns, args.repeats, args.steps), args.batch_size)
    return result

"""bench train: engine.train_step of our net against torchvision's AlexNet, same batch, optimiser and device."""
import statistics
import time

import torch
import torchvision

from paper_repro.bench.common import (NUM_CLASSES, devices_or_usage_error, forward_flops, machine_info,
                                      matmul_peak_tflops, peak_tflops, synchronize, synthetic_stats)
from paper_repro.bench.op_count import OpCounter
from paper_repro.core.devices import set_precision_policy
from paper_repro.data.augment import TrainPatch, batch_generator
from paper_repro.training.build import build_model, make_optimizer, make_schedule, make_transforms
from paper_repro.training.engine import train_step
from paper_repro.training.host_memory import keep_freed_memory
from paper_repro.training.optim import PaperSGD
from paper_repro.training.param_groups import apply_learning_rates
from paper_repro.training.run_state import seed_dropout, seed_everything
from paper_repro.training.settings import parse_args as train_parse_args


def training_setup(flags, num_classes, stats):
    """The training command's objects for its own command-line `flags`, built by the training code.

    Returns (settings, devices, precision and host-memory policy, model, optimizer, augmentation) as
    paper_repro.train makes them for one process: the flags' defaults are the paper's recipe.
    """
    # train's own resolution of defaults and checks; it wants a store and a run folder, which
    # nothing here reads (the batch is synthetic, nothing is written).
    settings = train_parse_args([*flags, "--data", "unused-by-bench", "--out", "unused-by-bench"])
    devices = devices_or_usage_error(settings.gpus)
    precision = set_precision_policy(devices, tf32=settings.tf32)
    # Process-wide: both nets of the benchmark run under the allocator policy the training command sets.
    precision["host_memory"] = keep_freed_memory(devices, settings.keep_freed_memory)
    seed_everything(settings.seed)
    model, _ = build_model(settings, num_classes, devices)
    seed_dropout(settings.seed, 0, devices)
    optimizer = make_optimizer(model, settings)
    apply_learning_rates(optimizer, make_schedule(settings), settings.lr, settings.bias_lr_fixed)
    augment, _ = make_transforms(settings, stats, model, loader_workers=0)  # as on a raw store, read in-process
    return settings, devices, precision, model, optimizer, augment


def plain_patches(settings, stats):
    """The same augmentation, unpadded, in the flags' layout (torchvision's AlexNet pads conv1 itself), all threads."""
    return TrainPatch(stats["mean_image"], stats["pca_eigval"], stats["pca_eigvec"], size=settings.input_size,
                      colour_noise=settings.colour_noise_scale if settings.colour_noise else None,
                      noise_std=settings.colour_noise_std, channels_last=settings.channels_last,
                      mean_crop=settings.mean_crop, rescale=settings.colour_noise_rescale,
                      crop_chunk=settings.crop_chunk, all_threads=True)


class _Trainee:
    """One net in the training benchmark: model, optimizer, its patches and step counter, stepped by train_step."""

    def __init__(self, model, optimizer, devices, augment):
        self.model, self.optimizer, self.devices, self.step_index = model, optimizer, devices, 0
        self.augment = augment

    def steps(self, n, images, labels, seed, bf16):
        """Run n training steps on the fixed batch (new augmentation draws each step); return (wall, CPU) seconds."""
        synchronize(self.devices)
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            train_step(self.model, self.optimizer, images, labels, self.augment,
                       batch_generator(seed, 0, self.step_index), device=self.devices[0], bf16=bf16)
            self.step_index += 1
        synchronize(self.devices)
        return time.perf_counter() - start, time.process_time() - cpu


def bench_train(args):
    """engine.train_step of our net vs torchvision.models.alexnet: same batch, draws, optimizer and device."""
    flags = ["--gpus", args.gpus, "--batch-size", str(args.batch_size), "--width", str(args.width),
             "--recipe", args.recipe] + ["--lrn", args.lrn] * (args.lrn is not None)
    flags += ["--bf16"] * args.bf16 + ["--channels-last"] * args.channels_last + ["--no-tf32"] * (not args.tf32)
    flags += ["--no-keep-freed-memory"] * (not args.keep_freed_memory)
    flags += ["--lrn-kernel", args.lrn_kernel] * (args.lrn_kernel != "torch")
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
    # Ours gets the training command's patches (on the CPU: channels_last, conv1's padding in place),
    # torchvision's the same draws as plain 224 x 224 patches.
    nets = {"ours": _Trainee(ours, opt, devices, augment),
            "torchvision_alexnet": _Trainee(theirs, their_opt, (devices[0],), plain_patches(settings, stats))}
    result = {"stage": "train", "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
              "precision": "bf16" if settings.bf16 else ("tf32" if precision["tf32"] else "fp32"),
              "precision_policy": precision, "channels_last": settings.channels_last, "width": settings.width,
              "training_flags": flags, "machine": machine_info(devices)}
    for net in nets.values():
        net.model.train()
    peak_dtype = torch.bfloat16 if settings.bf16 else torch.float32
    peaks = [matmul_peak_tflops(dev0, args.peak_size, dtype=peak_dtype)] if args.peak_size else []
    # Warm-up steps alternate the nets as the rounds do: the first steps after a switch fault in the
    # heap's pages until both nets' tensors have found their places (measured on the CPU: ours
    # faulted ~50,000 pages in its first step after torchvision's first steps, none after that).
    for _ in range(args.warmup):
        for net in nets.values():
            net.steps(1, images, labels, settings.seed, settings.bf16)
    # Rounds alternate the two nets, so a machine whose speed drifts slows both alike.
    seconds, cpu_seconds = {name: [] for name in nets}, {name: [] for name in nets}
    for _ in range(args.repeats):
        for name, net in nets.items():
            wall, cpu = net.steps(args.steps, images, labels, settings.seed, settings.bf16)
            seconds[name].append(wall)
            cpu_seconds[name].append(cpu)
    if args.peak_size:  # before and after the rounds: the better of the two is the ceiling
        peaks.append(matmul_peak_tflops(dev0, args.peak_size, dtype=peak_dtype))
        result["matmul_peak_tflop_per_s"] = max(p[0] for p in peaks)
        result["matmul_peak_tflop_per_cpu_s"] = max(p[1] for p in peaks)
        result["matmul_peak_measured"] = {"size": args.peak_size, "dtype": str(peak_dtype).split(".")[1],
                                          "threads": torch.get_num_threads(),
                                          "tflop_per_s_before_after": [p[0] for p in peaks],
                                          "tflop_per_cpu_s_before_after": [p[1] for p in peaks]}
    for name, net in nets.items():
        per_step = [s / args.steps for s in seconds[name]]
        flops = forward_flops(net.model, net.augment(images[:1].to(dev0), batch_generator(0, 0, 0)))
        row = {"images_per_s": args.batch_size / statistics.median(per_step),
               "images_per_s_best": args.batch_size / min(per_step),
               "seconds_per_step": per_step, "cpu_seconds_per_step": [s / args.steps for s in cpu_seconds[name]],
               "forward_gflop_per_image": flops / 1e9,
               # backward costs about twice the forward (grads of inputs and of weights)
               "train_tflop_per_s": 3 * flops * args.batch_size / statistics.median(per_step) / 1e12}
        if args.peak_size:
            row["fraction_of_measured_matmul_peak"] = row["train_tflop_per_s"] / result["matmul_peak_tflop_per_s"]
            # the same in CPU time (this process's threads): what a step's CPU-second yields against the sgemm's
            row["train_tflop_per_cpu_s"] = (3 * flops * args.batch_size
                                            / statistics.median(row["cpu_seconds_per_step"]) / 1e12)
            row["fraction_of_matmul_peak_cpu_time"] = (row["train_tflop_per_cpu_s"]
                                                       / result["matmul_peak_tflop_per_cpu_s"])
        peak = peak_tflops(devices[0], result["precision"])
        if peak:
            row["fraction_of_peak"] = row["train_tflop_per_s"] / peak
            row["peak_tflop_per_s_assumed"] = peak
        row.update(step_counts(net, images, labels, settings))
        if args.profile:
            row["profile"] = step_profile(net, args.profile, images, labels, settings)
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
    result["ops_counted_by"] = ("a TorchDispatchMode (paper_repro.bench.op_count.OpCounter) around one whole train_step: "
                                "aten operators that compute or allocate, views excluded")
    return result


def step_counts(net, images, labels, settings):
    """ops_per_step (with the ten most frequent) of one more training step, and for our net the bytes its links carried."""
    traffic = getattr(net.model, "traffic", None)
    if traffic is not None:
        traffic.reset()
    with OpCounter() as counter:
        net.steps(1, images, labels, settings.seed, settings.bf16)
    row = {"ops_per_step": counter.total(), "most_frequent_ops": dict(counter.ops.most_common(10))}
    if traffic is not None:
        row["link_bytes_per_step"] = traffic.total()
        row["link_bytes_per_link"] = {"forward": dict(traffic.forward), "backward": dict(traffic.backward)}
    return row


PROFILE_ROWS = 25


def step_profile(net, steps, images, labels, settings):
    """Where `steps` more training steps spend their time, by torch.profiler: the costliest events.

    `self`: operators by their own time (device time where a GPU ran them, else CPU time), grouped
    by input shapes so that, say, the grouped conv2 and the dense conv3 stand apart. `total`: events
    by time including what they called: autograd's backward nodes (`autograd::engine::evaluate_function:
    ...Backward`) and the fused functions' forward, which attributes the elementwise operators to the
    LRN, cnorm2 or the optimizer. Times in microseconds per step.
    """
    on_gpu = any(str(d).startswith("cuda") for d in net.devices)
    activities = [torch.profiler.ProfilerActivity.CPU] + [torch.profiler.ProfilerActivity.CUDA] * on_gpu
    with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        net.steps(steps, images, labels, settings.seed, settings.bf16)
    clock = "device" if on_gpu else "cpu"

    def own(e):
        return _event_time(e, "self_", clock)

    def inclusive(e):
        return _event_time(e, "", clock)

    def rows(events, key):
        return [{"name": e.key, "input_shapes": str(e.input_shapes)[:200], "calls_per_step": e.count / steps,
                 "self_us_per_step": own(e) / steps, "total_us_per_step": inclusive(e) / steps}
                for e in sorted(events, key=key, reverse=True)[:PROFILE_ROWS]]

    by_name = prof.key_averages()
    return {"steps": steps, "clock": clock,
            "self_us_per_step_all": sum(own(e) for e in by_name) / steps,
            "self": rows([e for e in prof.key_averages(group_by_input_shape=True) if own(e) > 0], own),
            "total": rows([e for e in by_name if not e.key.startswith("ProfilerStep")], inclusive)}


def _event_time(event, prefix, clock):
    """An averaged profiler event's `prefix`cpu/device time total in microseconds (torch < 2.4 said cuda)."""
    if clock == "cpu":
        return getattr(event, prefix + "cpu_time_total")
    found = getattr(event, prefix + "device_time_total", None)
    return found if found is not None else getattr(event, prefix + "cuda_time_total")

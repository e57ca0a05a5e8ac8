"""Turn a `--gpus` spec into the devices the two columns run on."""
import os

import torch

HELP = (
    "devices for the columns: '0,1' puts column 0 on cuda:0 and column 1 on cuda:1 (the paper's "
    "two GPUs); '0,0' both columns on one GPU; '0' the one-device layout (grouped convolutions); "
    "'cpu' or 'cpu,cpu' the same on the CPU. Under torchrun each process takes its own block of k "
    "GPUs (k = distinct entries, named 0..k-1): process LOCAL_RANK=r gets GPUs k*r .. k*r+k-1, or, "
    "where the launcher already gives each process only its own GPUs (CUDA_VISIBLE_DEVICES), those."
)


def all_cpu(devices):
    """Whether every one of `devices` (strings or torch.device) is the CPU."""
    return all(str(d).startswith("cpu") for d in devices)


def help_text(on_cpu):
    """--gpus's help for a command whose layout without GPUs is `on_cpu` (the rule is every command's)."""
    return HELP + (f" A spec given is used as given, or refused if this machine lacks a device it names. Without "
                   f"--gpus (the default): '0,1' where this machine (under torchrun: this process) has two or more "
                   f"GPUs, '0' where it has one, '{on_cpu}' where it has none; the command's first line says which")


def _environment_int(name, default):
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def parse_gpus(spec, local_rank=None, cuda_count=None, local_world_size=None, visible_set=None):
    """Return the tuple of torch device strings for `spec` (see HELP), checked against this machine.

    local_rank, local_world_size (torchrun's LOCAL_RANK, LOCAL_WORLD_SIZE), cuda_count and
    visible_set (whether CUDA_VISIBLE_DEVICES is set) default to this process's; tests pass them.
    """
    parts = [p.strip() for p in str(spec).split(",")]
    if not 1 <= len(parts) <= 2 or any(p == "" for p in parts):
        raise ValueError(f"--gpus {spec!r}: expected one or two comma-separated entries, e.g. 0,1 or 0 or cpu")
    if all(p == "cpu" for p in parts):
        return tuple("cpu" for _ in parts)
    if any(p == "cpu" for p in parts):
        raise ValueError(f"--gpus {spec!r}: mixing cpu and GPU columns is not supported; pass cpu,cpu or GPU indices")
    try:
        idx = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"--gpus {spec!r}: entries must be GPU indices (0, 1, ...) or 'cpu'") from None
    if any(i < 0 for i in idx):
        raise ValueError(f"--gpus {spec!r}: GPU indices must be >= 0")
    local_rank = _environment_int("LOCAL_RANK", 0) if local_rank is None else local_rank
    if local_world_size is None:
        local_world_size = _environment_int("LOCAL_WORLD_SIZE", local_rank + 1)
    local_world_size = max(local_world_size, local_rank + 1)
    count = torch.cuda.device_count() if cuda_count is None else cuda_count
    if visible_set is None:
        visible_set = bool(os.environ.get("CUDA_VISIBLE_DEVICES"))
    if count == 0:
        raise ValueError(f"--gpus {spec!r}: this machine has no CUDA device; pass --gpus cpu (or cpu,cpu for two columns)")
    if local_world_size > 1:
        idx = _own_block(spec, idx, local_rank, local_world_size, count, visible_set)
    bad = [i for i in idx if i >= count]
    if bad:
        have = ", ".join(f"cuda:{i}" for i in range(count))
        hint = "--gpus 0,0 for both columns on one GPU, or --gpus 0" if count == 1 else f"indices below {count}"
        raise ValueError(
            f"--gpus {spec!r}: cuda:{bad[0]} does not exist; this machine has {count} CUDA "
            f"device{'s' if count != 1 else ''} ({have}); pass {hint}"
        )
    return tuple(f"cuda:{i}" for i in idx)


def default_spec(on_cpu="cpu,cpu", cuda_count=None, local_world_size=None, visible_set=None):
    """The spec a command takes without --gpus: the paper's layout on what this machine has.

    Two or more GPUs for this process: '0,1' (the paper's two columns on two GPUs); one: '0' (the
    one-device layout, the fast path on one GPU); none: `on_cpu`. Under torchrun the GPUs are shared
    among the node's processes first, as parse_gpus does.
    """
    count = torch.cuda.device_count() if cuda_count is None else cuda_count
    processes = max(1, _environment_int("LOCAL_WORLD_SIZE", 1) if local_world_size is None else local_world_size)
    if visible_set is None:
        visible_set = bool(os.environ.get("CUDA_VISIBLE_DEVICES"))
    # srun --gpus-per-task gives each process its own GPUs: all it sees are its own.
    own = count if processes == 1 or (visible_set and count < processes) else count // processes
    if count == 0:
        return on_cpu
    return "0,1" if own >= 2 else "0"  # with fewer GPUs than processes, parse_gpus says what to do


def choose_devices(spec, on_cpu="cpu,cpu", one_device=None, **machine):
    """(devices, how they were chosen in words): `spec` checked against this machine, or default_spec's.

    one_device: the name of a net that runs on one device only (torchvision's AlexNet): a spec naming two
    is refused, and the default is '0' on any GPU machine. `machine`: parse_gpus's cuda_count, local_rank,
    local_world_size, visible_set (tests pass them).
    """
    if spec is not None:
        devices = parse_gpus(spec, **machine)
        if one_device and len(set(devices)) > 1:
            raise ValueError(f"--gpus {spec!r}: {one_device} runs on one device; pass one, such as --gpus 0 or "
                             f"--gpus cpu")
        return devices, f"--gpus {spec}"
    chosen = default_spec(on_cpu, **{k: v for k, v in machine.items() if k != "local_rank"})
    chosen = "0" if one_device and chosen == "0,1" else chosen
    devices = parse_gpus(chosen, **machine)
    count = torch.cuda.device_count() if machine.get("cuda_count") is None else machine["cuda_count"]
    have = "no CUDA device" if count == 0 else f"{count} CUDA device{'s' if count != 1 else ''}"
    return devices, f"--gpus {chosen}: not given, and this machine has {have}"


def _own_block(spec, idx, local_rank, local_world_size, count, visible_set):
    """Indices for process `local_rank` of `local_world_size` on this node: its own k GPUs, never a peer's."""
    k = len(set(idx))
    if sorted(set(idx)) != list(range(k)):
        raise ValueError(
            f"--gpus {spec!r}: with {local_world_size} processes on this node each process takes its own block "
            f"of {k} GPUs, named 0..{k - 1} (--gpus {'0,1' if k == 2 else '0'}); to use particular GPUs, "
            f"choose them with CUDA_VISIBLE_DEVICES")
    if count >= k * local_world_size:  # every process sees the node's GPUs: take block local_rank
        return [i + local_rank * k for i in idx]
    if visible_set and count >= k:  # the launcher gave this process its own GPUs (srun --gpus-per-task)
        return idx
    raise ValueError(
        f"--gpus {spec!r}: {local_world_size} processes on this node need {k} GPUs each, {k * local_world_size} "
        f"in all, and this process sees {count}; start fewer processes (--nproc-per-node), put both columns on "
        f"one GPU (--gpus 0,0), or give each process its own GPUs with CUDA_VISIBLE_DEVICES")


def set_precision_policy(devices, tf32=True):
    """Set the GPU precision policy for a run on `devices` and return it (recorded in config.json / eval JSON).

    On a GPU: cudnn.benchmark (the net's shapes never change, so the autotuned kernels are reused
    every step) and TF32 for convolutions and matmuls unless `tf32` is False (the paper's arithmetic
    is fp32; TF32 keeps fp32's range with a 10-bit mantissa in the products). On the CPU nothing is set.
    """
    on_gpu = any(str(d).startswith("cuda") for d in devices)
    if on_gpu:
        torch.backends.cudnn.benchmark = True
        precision = "tf32" if tf32 else "ieee"
        if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9: the legacy flags must not be mixed in
            torch.backends.cuda.matmul.fp32_precision = precision
            torch.backends.cudnn.conv.fp32_precision = precision
        else:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
    return {"cudnn_benchmark": on_gpu, "tf32": on_gpu and tf32}

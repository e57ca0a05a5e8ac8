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

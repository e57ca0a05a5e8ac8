"""Data-parallel replicas under torchrun: each process drives its own pair of columns, DDP averages gradients."""
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def init_from_env(devices):
    """Join the torchrun group if WORLD_SIZE > 1 (nccl on GPUs, gloo on the CPU); return (rank, world_size)."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if devices[0].startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(devices[0])
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def is_distributed():
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main():
    """True on the process that writes files and prints (rank 0, or the only process)."""
    return not is_distributed() or dist.get_rank() == 0


def wrap(model):
    """Wrap the model in DDP when distributed (device_ids=None: a two-column net spans two devices)."""
    if not is_distributed():
        return model
    devices = {p.device for p in model.parameters()}
    device_ids = [next(iter(devices))] if len(devices) == 1 and next(iter(devices)).type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model):
    """The plain model inside a DDP wrapper (for state_dict and config)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def all_reduce_sum(values, device="cpu"):
    """Sum a list of numbers over all processes (float64); identity when not distributed."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_process(flag, device="cpu"):
    """True if `flag` is true on any process (a SIGTERM seen by one rank stops all of them together)."""
    return all_reduce_sum([1.0 if flag else 0.0], device)[0] > 0


def barrier():
    """Wait for every process (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def cleanup(synchronize=True):
    """Leave the process group, if one was joined; with `synchronize`, first wait for every process.

    A process that destroys a gloo group while its peer is still talking through it can make the
    peer abort (SIGABRT); after an error the peers may be gone, so callers pass synchronize=False.
    Free DDP-wrapped models first: their reducer holds the group.
    """
    if dist.is_available() and dist.is_initialized():
        if synchronize:
            barrier()
        dist.destroy_process_group()


def all_gather_objects(obj):
    """[obj of rank 0, obj of rank 1, ...] (picklable objects); [obj] when not distributed."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out

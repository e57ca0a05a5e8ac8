"""Data-parallel replicas under torchrun: each process drives its own pair of columns, DDP averages gradients.

Every helper here is a collective when the run is distributed: every process calls it at the same
point, or the others wait (until TIMEOUT). Each is the identity when the run is one process.
"""
import os
import secrets
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from paper_repro.core.cli import UsageError

# Joining the group and every collective give up after this (torch's default: 30 min on gloo, 10 on nccl): a
# peer that stopped answering ends the run in minutes, and torchrun restarts the group. It must
# exceed the longest wait of one process for another: rank 0 writing a full checkpoint, a slow first batch.
TIMEOUT = timedelta(minutes=10)


def init_from_env(devices, timeout=TIMEOUT):
    """Bind this process to its first GPU; join the torchrun group if WORLD_SIZE > 1; return (rank, world_size).

    nccl on GPUs, gloo on the CPU. Without set_device, CUDA's current device stays cuda:0: a
    process driving cuda:2 would also create a context (and NCCL's buffers) on cuda:0.
    """
    cuda = str(devices[0]).startswith("cuda")
    if cuda:
        torch.cuda.set_device(devices[0])
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size <= 1:
        return 0, 1
    if not dist.is_initialized():
        rank = int(os.environ["RANK"])
        dist.init_process_group("nccl" if cuda else "gloo", store=_group_store(world_size, timeout), rank=rank,
                                world_size=world_size, timeout=timeout)
    return dist.get_rank(), dist.get_world_size()


def _group_store(world_size, timeout):
    """The store the group's processes meet in, its keys private to this start of the group (None: torch's env://).

    torchrun keeps one store (its agent's, TORCHELASTIC_USE_AGENT_STORE) for every restart of the
    group, and init_process_group's keys carry no restart number: a restarted process can read the
    address its killed predecessor published and fail with "Gloo connectFullMesh failed ...
    Connection refused" (nccl: a stale unique id), or wait for a peer that is already gone. Keys
    under TORCHELASTIC_RESTART_COUNT are fresh for each restart. torchrun counts restarts per agent
    (pytorch/pytorch#135712): on several nodes the prefixes agree while the agents restart together;
    where they do not, joining fails after `timeout` instead of reaching a dead process.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False,
                          timeout=timeout)
    return dist.PrefixStore(f"paper_repro/restart_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def is_distributed():
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def ddp_device_ids(devices):
    """DDP's device_ids for a replica whose parameters live on `devices` (torch.device objects).

    One GPU: [that GPU] (DDP then moves inputs there). Two GPUs (the two columns) or the CPU: None.
    """
    devices = set(devices)
    only = next(iter(devices))
    return [only] if len(devices) == 1 and only.type == "cuda" else None


def wrap(model):
    """Wrap the model in DDP when distributed (device_ids: ddp_device_ids of its parameters)."""
    if not is_distributed():
        return model
    return DistributedDataParallel(model, device_ids=ddp_device_ids(p.device for p in model.parameters()))


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


def first_error(message, device="cpu"):
    """None if no process passed a message, else `rank R: message` of the lowest such rank, on every process.

    A process that meets an error (a NaN loss) passes its message instead of raising alone; every
    process then raises the same error together, and none is left waiting in the next collective.
    """
    if not is_distributed():
        return message
    if not any_process(message is not None, device):
        return None  # the common case costs one all-reduce of one number
    rank, text = next((r, m) for r, m in enumerate(all_gather_objects(message)) if m is not None)
    return f"rank {rank}: {text}"


def broadcast_object(obj, src=0):
    """Rank `src`'s `obj` (picklable) on every process (rank 0 decides, the others follow); `obj` if not distributed."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def check_shared_folder(folder):
    """Raise UsageError on every process unless every process sees rank 0's `folder` (the same files).

    Rank 0 writes a token file into it; each process reads it back. A folder on a disk of its own
    per machine (not shared) would leave each machine writing and resuming a run of its own.
    """
    if not is_distributed():
        return
    rank0 = dist.get_rank() == 0
    path = token = error = None
    if rank0:
        path = os.path.join(folder, f".visible-to-all-ranks-{secrets.token_hex(8)}")
        token = secrets.token_hex(16)
        try:
            os.makedirs(folder, exist_ok=True)
            with open(path, "w") as f:
                f.write(token)
        except OSError as e:
            error = f"--out {folder}: rank 0 cannot write into it ({e.strerror}); pass a folder it can write to"
    path, token, error = broadcast_object((path, token, error))
    if error is not None:
        raise UsageError(error)
    try:
        try:
            with open(path) as f:
                sees = f.read() == token
        except OSError:
            sees = False
        seen = all_gather_objects((sees, socket.gethostname()))
    finally:
        if rank0:
            os.unlink(path)
    blind = [(r, host) for r, (ok, host) in enumerate(seen) if not ok]
    if blind:
        names = ", ".join(f"{r} (on {host})" for r, host in blind)
        raise UsageError(f"--out {folder}: rank(s) {names} cannot see the files rank 0 writes there; every process "
                         f"must see the same run folder: pass a folder on a file system shared by all machines")


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

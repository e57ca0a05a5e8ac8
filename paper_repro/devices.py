"""Turn a `--gpus` spec into the devices the two columns run on."""
import os

import torch

HELP = (
    "devices for the columns: '0,1' puts column 0 on cuda:0 and column 1 on cuda:1 (the paper's "
    "two GPUs); '0,0' both columns on one GPU; '0' the one-device layout (grouped convolutions); "
    "'cpu' or 'cpu,cpu' the same on the CPU. Under torchrun each process drives its own pair: "
    "process LOCAL_RANK=r adds r*k to every GPU index, k = the number of distinct GPUs in the spec."
)


def parse_gpus(spec, local_rank=None, cuda_count=None):
    """Return the tuple of torch device strings for `spec` (see HELP), checked against this machine."""
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
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
    idx = [i + local_rank * len(set(idx)) for i in idx]
    count = torch.cuda.device_count() if cuda_count is None else cuda_count
    if count == 0:
        raise ValueError(f"--gpus {spec!r}: this machine has no CUDA device; pass --gpus cpu (or cpu,cpu for two columns)")
    bad = [i for i in idx if i >= count]
    if bad:
        have = ", ".join(f"cuda:{i}" for i in range(count))
        hint = "--gpus 0,0 for both columns on one GPU, or --gpus 0" if count == 1 else f"indices below {count}"
        where = f" (LOCAL_RANK={local_rank} shifts the indices)" if local_rank else ""
        raise ValueError(
            f"--gpus {spec!r}: cuda:{bad[0]} does not exist{where}; this machine has {count} CUDA "
            f"device{'s' if count != 1 else ''} ({have}); pass {hint}"
        )
    return tuple(f"cuda:{i}" for i in idx)

"""bench lrn: the LRN's forward + backward on one tensor: time, operators and passes over memory."""
import statistics
import time

import torch

from paper_repro.bench.common import machine_info, threads
from paper_repro.bench.op_count import OpCounter
from paper_repro.nets.lrn import local_response_norm
from paper_repro.training.host_memory import keep_freed_memory


def bench_lrn(args):
    """Forward + backward of paper_repro.nets.lrn on one activation tensor: seconds, operators and passes over memory."""
    shape = tuple(int(v) for v in args.shape.split(","))
    g = torch.Generator().manual_seed(0)
    base = torch.relu(torch.randn(shape, generator=g)) * 100  # ReLU outputs in the hundreds, as after conv1
    grad = torch.randn(shape, generator=g)
    host_memory = keep_freed_memory(("cpu",))  # process-wide, as in a CPU training run
    result = {"stage": "lrn", "shape": list(shape), "groups": args.groups, "repeats": args.repeats,
              "machine": machine_info(("cpu",)), "host_memory": host_memory,
              "passes_means": "bytes every operator reads and writes / bytes of one fp32 tensor of this shape"}
    with threads(args.threads):
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

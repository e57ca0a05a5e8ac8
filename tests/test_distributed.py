"""Two gloo processes with cpu,cpu replicas make the same update as one process on the whole batch."""
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from paper_repro import distributed
from paper_repro.checkpoint import load_checkpoint
from paper_repro.model import AlexNet
from paper_repro.optim import PaperSGD

BATCH = 8


pytestmark = pytest.mark.usefixtures("one_thread")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 3, 224, 224, generator=g) * 50, torch.randint(0, 4, (BATCH,), generator=g)


def _model():
    torch.manual_seed(0)
    return AlexNet(num_classes=4, devices=("cpu", "cpu"), width=0.125, dropout=0.0)


def _steps(model, batches):
    opt = PaperSGD(model.parameters(), lr=0.01)
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return distributed.unwrap(model).state_dict()


def _replica(rank, world_size, port, out):
    os.environ.update(WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    assert distributed.init_from_env(("cpu", "cpu")) == (rank, world_size)
    finished = False
    try:
        _replica_work(rank, out)  # the DDP model lives only in there: freed before the group is left
        finished = True
    finally:
        distributed.cleanup(synchronize=finished)


def _replica_work(rank, out):
    model = distributed.wrap(_model())
    assert isinstance(model, torch.nn.parallel.DistributedDataParallel)
    x, y = _data()
    half = slice(rank * BATCH // 2, (rank + 1) * BATCH // 2)
    state = _steps(model, [(x[half], y[half])] * 2)
    total = distributed.all_reduce_sum([rank + 1, 0.5])
    stop = distributed.any_process(rank == 1)
    gathered = distributed.all_gather_objects({"rank": rank})
    if distributed.is_main():
        torch.save({"state": state, "total": total, "stop": stop, "gathered": gathered}, out)


def test_two_gloo_replicas_equal_one_process_on_the_whole_batch(tmp_path):
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_replica, args=(2, _free_port(), out), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    assert got["total"] == [3.0, 1.0] and got["stop"] is True and got["gathered"] == [{"rank": 0}, {"rank": 1}]
    x, y = _data()
    start = _model().state_dict()
    whole = _steps(_model(), [(x, y)] * 2)
    one_half = _steps(_model(), [(x[:BATCH // 2], y[:BATCH // 2])] * 2)
    moved = differs = 0.0
    for k in whole:
        torch.testing.assert_close(got["state"][k], whole[k], rtol=1e-4, atol=1e-6)
        moved = max(moved, (whole[k] - start[k]).abs().max().item())
        differs = max(differs, (whole[k] - one_half[k]).abs().max().item())
    assert moved > 1e-4 and differs > 1e-4  # the update is real, and half the batch alone is not it


def test_not_distributed_helpers_are_identities():
    assert distributed.init_from_env(("cpu",)) == (0, 1)
    assert distributed.is_main() and not distributed.is_distributed()
    assert distributed.all_reduce_sum([1, 2.5]) == [1.0, 2.5]
    model = _model()
    assert distributed.wrap(model) is model and distributed.unwrap(model) is model


def _train_rank(rank, world_size, port, argv):
    os.environ.update(WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from paper_repro.train import main, parse_args

    main(parse_args(argv))


def test_train_under_two_gloo_processes(tiny_store, tmp_path):
    """What torchrun --nproc-per-node 2 ... --gpus cpu,cpu does: one log, one checkpoint, all ranks' RNGs."""
    run = str(tmp_path / "run")
    argv = ["--data", tiny_store, "--out", run, "--gpus", "cpu,cpu", "--width", "0.125", "--workers", "0",
            "--epochs", "1", "--batch-size", "8", "--checkpoint-every", "4", "--no-progress"]
    mp.spawn(_train_rank, args=(2, _free_port(), argv), nprocs=2, join=True)
    with open(os.path.join(run, "log.jsonl")) as f:
        lines = f.read().splitlines()
    assert len(lines) == 1
    ckpt = load_checkpoint(os.path.join(run, "checkpoint.pt"))
    assert (ckpt["epoch"], ckpt["step"]) == (1, 0) and ckpt["config"]["world_size"] == 2
    assert len(ckpt["rng"]) == 2 and not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    record = json.loads(lines[0])
    assert record["val_images"] == 16 and record["train_images"] == 48  # each image once over the two shards

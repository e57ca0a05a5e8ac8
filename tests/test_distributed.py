"""Data parallelism: two gloo processes make one process's update; the collectives agree; the GPU branch, faked."""
import json
import os
import socket
import time
import types
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from paper_repro.core.cli import UsageError
from paper_repro.nets.alexnet import AlexNet
from paper_repro.nets.checkpoint import load_checkpoint
from paper_repro.train import main, parse_args
from paper_repro.training import distributed
from paper_repro.training.optim import PaperSGD

BATCH = 8


pytestmark = pytest.mark.usefixtures("one_thread")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank, world_size, port, timeout=distributed.TIMEOUT):
    """What torch.multiprocessing gives a process: torchrun's variables, no agent store."""
    os.environ.update(WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    assert distributed.init_from_env(("cpu", "cpu"), timeout=timeout) == (rank, world_size)


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
    return getattr(model, "module", model).state_dict()


def _replica(rank, world_size, port, out):
    _join(rank, world_size, port)
    finished = False
    try:
        _replica_work(rank, out)  # the DDP model lives only in there: freed before the group is left
        finished = True
    finally:
        distributed.cleanup(synchronize=finished)


def _replica_work(rank, out):
    model = distributed.wrap(_model())
    assert isinstance(model, torch.nn.parallel.DistributedDataParallel) and model.device_ids is None
    x, y = _data()
    half = slice(rank * BATCH // 2, (rank + 1) * BATCH // 2)
    state = _steps(model, [(x[half], y[half])] * 2)
    total = distributed.all_reduce_sum([rank + 1, 0.5])
    stop = distributed.any_process(rank == 1)
    gathered = distributed.all_gather_objects({"rank": rank})
    if rank == 0:
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


SILENT_PEER_TIMEOUT = 8  # seconds; long enough for both processes to start on a loaded machine


def _helpers_rank(rank, world_size, port, tmp):
    _join(rank, world_size, port, timeout=timedelta(seconds=SILENT_PEER_TIMEOUT))
    got = {}
    got["broadcast"] = distributed.broadcast_object({"resume": True, "from": "a.pt"} if rank == 0 else None)
    got["broadcast_src1"] = distributed.broadcast_object(rank * 10 + 1, src=1)
    got["no_error"] = distributed.first_error(None)
    got["one_error"] = distributed.first_error("loss nan" if rank == 1 else None)
    got["two_errors"] = distributed.first_error(f"error of rank {rank}")
    distributed.check_shared_folder(os.path.join(tmp, "shared"))  # an absolute path: both processes see it
    distributed.barrier()  # rank 0 removes the token file after both have read it
    got["shared_left"] = sorted(os.listdir(os.path.join(tmp, "shared")))
    for name, folder in (("unwritable", os.path.join(tmp, "a_file", "run")), ("blind", "run")):
        if name == "blind":
            # A relative --out from a different working directory: the same name, another folder, as
            # on machines that each have a disk of their own.
            os.makedirs(os.path.join(tmp, f"cwd{rank}"))
            os.chdir(os.path.join(tmp, f"cwd{rank}"))
        try:
            distributed.check_shared_folder(folder)
            got[name] = None
        except UsageError as e:
            got[name] = str(e)
    distributed.barrier()
    got["blind_left"] = sorted(os.listdir("run")) if os.path.isdir("run") else None
    distributed.barrier()
    # A peer that is alive but stops answering: the collective fails after the timeout, no hang.
    if rank == 1:
        deadline = time.time() + 4 * SILENT_PEER_TIMEOUT
        while not os.path.exists(os.path.join(tmp, "got0.json")) and time.time() < deadline:
            time.sleep(0.1)  # silent until rank 0 has given up on it
    else:
        t0 = time.perf_counter()
        try:
            distributed.all_reduce_sum([1.0])
            got["silent_peer"] = "returned"
        except RuntimeError as e:
            got["silent_peer"] = type(e).__name__
        got["silent_peer_s"] = time.perf_counter() - t0
    with open(os.path.join(tmp, f"got{rank}.json"), "w") as f:
        json.dump(got, f)
    distributed.cleanup(synchronize=False)


def test_collective_helpers_agree_across_two_gloo_processes(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    mp.spawn(_helpers_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"got{r}.json").read_text()) for r in range(2)]
    host = socket.gethostname()
    for rank, g in enumerate(got):
        assert g["broadcast"] == {"resume": True, "from": "a.pt"}  # rank 1 passed None: it follows rank 0
        assert g["broadcast_src1"] == 11
        assert g["no_error"] is None
        assert g["one_error"] == "rank 1: loss nan"  # rank 0 saw nothing wrong, and stops with rank 1's message
        assert g["two_errors"] == "rank 0: error of rank 0"
        assert g["shared_left"] == []  # the token file is gone
        assert g["unwritable"] == (f"--out {tmp_path}/a_file/run: rank 0 cannot write into it (Not a directory); "
                                   f"pass a folder it can write to")
        assert g["blind"] == (f"--out run: rank(s) 1 (on {host}) cannot see the files rank 0 writes there; every "
                              f"process must see the same run folder: pass a folder on a file system shared by all "
                              f"machines")
    assert got[0]["blind_left"] == [] and got[1]["blind_left"] is None  # rank 0 created run/, left it empty
    assert got[0]["silent_peer"] == "RuntimeError"  # gloo's timeout error, raised instead of waiting
    assert SILENT_PEER_TIMEOUT - 1 < got[0]["silent_peer_s"] < SILENT_PEER_TIMEOUT + 3


def test_not_distributed_helpers_are_identities(tmp_path):
    assert distributed.init_from_env(("cpu",)) == (0, 1)
    assert not distributed.is_distributed()
    assert distributed.all_reduce_sum([1, 2.5]) == [1.0, 2.5]
    obj = {"a": 1}
    assert distributed.broadcast_object(obj) is obj and distributed.all_gather_objects(obj) == [obj]
    assert distributed.first_error(None) is None and distributed.first_error("x") == "x"
    distributed.check_shared_folder(str(tmp_path / "never_made"))
    assert not (tmp_path / "never_made").exists()
    model = _model()
    assert distributed.wrap(model) is model


@pytest.fixture
def fake_gpu_group(monkeypatch):
    """torch's group start, set_device and TCPStore replaced by recorders: the GPU branch runs on this CPU machine."""
    calls, joined = [], {}

    def init_process_group(backend, **kwargs):
        calls.append(("init_process_group", backend, kwargs))
        joined.update(kwargs)

    store = dist.HashStore()  # stands for torchrun's store

    def tcp_store(*args, **kwargs):
        calls.append(("TCPStore", args, kwargs))
        return store

    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    monkeypatch.setattr(dist, "is_initialized", lambda: bool(joined))
    monkeypatch.setattr(dist, "get_rank", lambda: joined["rank"])
    monkeypatch.setattr(dist, "get_world_size", lambda: joined["world_size"])
    monkeypatch.setattr(dist, "TCPStore", tcp_store)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE",
                "TORCHELASTIC_RESTART_COUNT"):
        monkeypatch.delenv(var, raising=False)
    return types.SimpleNamespace(calls=calls, store=store)


@pytest.mark.parametrize("devices, first", [(("cuda:0", "cuda:1"), "cuda:0"), (("cuda:2", "cuda:3"), "cuda:2"),
                                            (("cuda:3",), "cuda:3"), (("cuda:1", "cuda:1"), "cuda:1"),
                                            (("cpu", "cpu"), None)])
def test_one_process_binds_its_first_gpu(fake_gpu_group, devices, first):
    """--gpus 2,3 must make cuda:2 current: otherwise a context (and NCCL's buffers) also lands on cuda:0."""
    assert distributed.init_from_env(devices) == (0, 1)
    assert fake_gpu_group.calls == ([("set_device", first)] if first else [])


def test_nccl_under_torchrun_binds_the_gpu_then_joins_in_this_restarts_keys(fake_gpu_group, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.7")
    monkeypatch.setenv("MASTER_PORT", "29400")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    timeout = timedelta(seconds=42)
    assert distributed.init_from_env(("cuda:6", "cuda:7"), timeout=timeout) == (3, 4)
    (set_device, cuda), (tcp, tcp_args, tcp_kwargs), (init, backend, kwargs) = fake_gpu_group.calls
    assert (set_device, cuda) == ("set_device", "cuda:6")  # before the group starts: NCCL binds the current GPU
    assert (tcp, tcp_args, tcp_kwargs) == ("TCPStore", ("10.0.0.7", 29400, 4), {"is_master": False,
                                                                             "timeout": timeout})
    assert (init, backend) == ("init_process_group", "nccl")
    assert (kwargs["rank"], kwargs["world_size"], kwargs["timeout"]) == (3, 4, timeout)
    # The group's keys live under this restart's prefix: what the killed group of restart 1 left is unseen.
    fake_gpu_group.store.set("paper_repro/restart_1/0", "address of a dead process")
    group_store = kwargs["store"]
    assert not group_store.check(["0"])
    group_store.set("0", "address of rank 0 now")
    assert fake_gpu_group.store.get("paper_repro/restart_2/0") == b"address of rank 0 now"


def test_gloo_outside_torchrun_uses_torchs_env_rendezvous(fake_gpu_group, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert distributed.init_from_env(("cpu", "cpu")) == (1, 2)
    ((init, backend, kwargs),) = fake_gpu_group.calls  # no set_device, no store of ours
    assert (init, backend, kwargs) == ("init_process_group", "gloo", {"store": None, "rank": 1, "world_size": 2,
                                                                      "timeout": distributed.TIMEOUT})


def _params_on(*devices):
    return types.SimpleNamespace(parameters=lambda: [types.SimpleNamespace(device=torch.device(d)) for d in devices])


@pytest.mark.parametrize("devices, device_ids", [(("cuda:2", "cuda:2"), [torch.device("cuda:2")]),
                                                 (("cuda:0", "cuda:1"), None), (("cpu", "cpu"), None)])
def test_wrap_gives_ddp_the_replicas_gpu_only_when_it_has_one(monkeypatch, devices, device_ids):
    wrapped = []
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "DistributedDataParallel", lambda m, **kw: wrapped.append((m, kw)) or "ddp")
    model = _params_on(*devices)
    assert distributed.wrap(model) == "ddp"
    assert wrapped == [(model, {"device_ids": device_ids})]


def _train_rank(rank, world_size, port, argv):
    os.environ.update(WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    main(parse_args(argv))


def _train_rank_own_plan(rank, world_size, port, argv):
    # --minutes: each process would plan its own length (rank 0: 1 epoch, rank 1: 2); rank 0's must hold on both
    import paper_repro.train as train_module
    train_module.epochs_that_fit = lambda *a, **kw: 1 + rank
    _train_rank(rank, world_size, port, argv)


def test_train_under_two_gloo_processes(tiny_store, tmp_path):
    """What torchrun --nproc-per-node 2 ... --gpus cpu,cpu does: one log, one checkpoint, all ranks' RNGs."""
    run = str(tmp_path / "run")
    argv = ["--data", tiny_store, "--out", run, "--gpus", "cpu,cpu", "--width", "0.125", "--workers", "0",
            "--epochs", "2", "--batch-size", "8", "--checkpoint-every", "4", "--no-progress", "--ten-view-every", "1",
            "--minutes", "600"]
    mp.spawn(_train_rank_own_plan, args=(2, _free_port(), argv), nprocs=2, join=True)
    with open(os.path.join(run, "log.jsonl")) as f:
        lines = f.read().splitlines()
    assert len(lines) == 1
    ckpt = load_checkpoint(os.path.join(run, "checkpoint.pt"))
    assert (ckpt["epoch"], ckpt["step"]) == (1, 0) and ckpt["config"]["world_size"] == 2
    assert len(ckpt["rng"]) == 2 and not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    record = json.loads(lines[0])
    assert record["planned_epochs"] == 1  # --minutes: rank 0's plan on every process (a broadcast each epoch)
    assert ckpt["planned_epochs"] == 1
    assert record["val_images"] == 16 and record["train_images"] == 48  # each image once over the two shards
    # the ten-view test split over the two processes: the same errors as evaluate's over all 16 in one process
    from paper_repro.evaluate import get_args_parser as evaluate_parser
    from paper_repro.evaluate import main as evaluate_main
    result = evaluate_main(evaluate_parser().parse_args(["--data", tiny_store, "--checkpoint",
                                                         os.path.join(run, "checkpoint.pt"), "--workers", "0",
                                                         "--no-progress"]))
    assert (record["val_ten_view_top1_error"], record["val_ten_view_top5_error"]) == (
        result["top1_error"], result["top5_error"])

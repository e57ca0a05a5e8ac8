"""The small shared pieces: --gpus parsing, atomic writes, checkpoints, top-k metrics."""
import os

import pytest
import torch

from paper_repro.core.atomic import atomic_write, atomic_write_json
from paper_repro.core.devices import parse_gpus, set_precision_policy
from paper_repro.core.metrics import topk_errors, topk_predictions
from paper_repro.nets.checkpoint import load_checkpoint, save_checkpoint


@pytest.mark.parametrize(
    "spec, count, expected",
    [("0,1", 2, ("cuda:0", "cuda:1")), ("0,0", 1, ("cuda:0", "cuda:0")), ("0", 1, ("cuda:0",)),
     ("cpu", 0, ("cpu",)), ("cpu,cpu", 0, ("cpu", "cpu")), (" 1 , 0 ", 2, ("cuda:1", "cuda:0"))],
)
def test_parse_gpus(spec, count, expected):
    assert parse_gpus(spec, local_rank=0, cuda_count=count) == expected


def test_parse_gpus_torchrun_shifts_each_process_to_its_own_pair():
    assert parse_gpus("0,1", local_rank=1, cuda_count=4) == ("cuda:2", "cuda:3")
    assert parse_gpus("0,0", local_rank=3, cuda_count=4) == ("cuda:3", "cuda:3")
    assert parse_gpus("1,0", local_rank=1, local_world_size=2, cuda_count=4) == ("cuda:3", "cuda:2")


def test_parse_gpus_never_gives_two_processes_one_gpu():
    # Shifting '0,2' by the number of distinct GPUs gave rank 0 (0, 2) and rank 1 (2, 4): GPU 2 twice.
    with pytest.raises(ValueError) as e:
        parse_gpus("0,2", local_rank=1, local_world_size=2, cuda_count=8, visible_set=False)
    assert str(e.value) == (
        "--gpus '0,2': with 2 processes on this node each process takes its own block of 2 GPUs, named 0..1 "
        "(--gpus 0,1); to use particular GPUs, choose them with CUDA_VISIBLE_DEVICES")
    blocks = [parse_gpus("0,1", local_rank=r, local_world_size=4, cuda_count=8) for r in range(4)]
    assert sorted(d for b in blocks for d in b) == [f"cuda:{i}" for i in range(8)]


def test_parse_gpus_under_a_launcher_that_gives_each_process_its_own_gpus():
    # srun --gpus-per-task=2: each task sees its own two GPUs as cuda:0 and cuda:1, and LOCAL_RANK is set.
    for rank in range(4):
        assert parse_gpus("0,1", local_rank=rank, local_world_size=4, cuda_count=2, visible_set=True) == (
            "cuda:0", "cuda:1")
    with pytest.raises(ValueError) as e:  # the same counts without CUDA_VISIBLE_DEVICES: processes would share
        parse_gpus("0,1", local_rank=1, local_world_size=2, cuda_count=2, visible_set=False)
    assert str(e.value) == (
        "--gpus '0,1': 2 processes on this node need 2 GPUs each, 4 in all, and this process sees 2; start fewer "
        "processes (--nproc-per-node), put both columns on one GPU (--gpus 0,0), or give each process its own "
        "GPUs with CUDA_VISIBLE_DEVICES")


def test_parse_gpus_reads_torchrun_environment(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert parse_gpus("0,0", cuda_count=2) == ("cuda:1", "cuda:1")


def test_precision_policy_on_gpu_and_cpu(monkeypatch):
    saved = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.fp32_precision,
             torch.backends.cudnn.conv.fp32_precision)
    try:
        assert set_precision_policy(("cpu", "cpu")) == {"cudnn_benchmark": False, "tf32": False}
        assert set_precision_policy(("cuda:0", "cuda:1")) == {"cudnn_benchmark": True, "tf32": True}
        assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.fp32_precision == "tf32"
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
        assert set_precision_policy(("cuda:0",), tf32=False) == {"cudnn_benchmark": True, "tf32": False}
        assert torch.backends.cuda.matmul.fp32_precision == torch.backends.cudnn.conv.fp32_precision == "ieee"
    finally:
        torch.backends.cudnn.benchmark = saved[0]
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved[1:]


@pytest.mark.parametrize(
    "spec, count, message",
    [
        ("0,1", 1, "--gpus '0,1': cuda:1 does not exist; this machine has 1 CUDA device (cuda:0); "
                   "pass --gpus 0,0 for both columns on one GPU, or --gpus 0"),
        ("0", 0, "--gpus '0': this machine has no CUDA device; pass --gpus cpu (or cpu,cpu for two columns)"),
        ("0,1,2", 4, "--gpus '0,1,2': expected one or two comma-separated entries, e.g. 0,1 or 0 or cpu"),
        ("cpu,0", 1, "--gpus 'cpu,0': mixing cpu and GPU columns is not supported; pass cpu,cpu or GPU indices"),
        ("a", 1, "--gpus 'a': entries must be GPU indices (0, 1, ...) or 'cpu'"),
    ],
)
def test_parse_gpus_errors(spec, count, message):
    with pytest.raises(ValueError) as e:
        parse_gpus(spec, local_rank=0, cuda_count=count)
    assert str(e.value) == message


def test_atomic_write_keeps_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "f.json"
    atomic_write_json(path, {"a": 1})

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert os.listdir(tmp_path) == ["f.json"]  # no temp file left behind


def test_atomic_write_gives_the_permissions_of_an_ordinary_open(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {})
        with open(tmp_path / "b.json", "w"):
            pass
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == os.stat(tmp_path / "b.json").st_mode & 0o777 == 0o644


def test_checkpoint_round_trip_and_errors(tmp_path):
    obj = {"model": {"w": torch.arange(6.0).view(2, 3)}, "epoch": 3, "rng": torch.get_rng_state()}
    save_checkpoint(tmp_path / "c.pt", obj)
    back = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(back["model"]["w"], obj["model"]["w"]) and back["epoch"] == 3
    with pytest.raises(FileNotFoundError, match="checkpoint .*missing.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError) as e:
        load_checkpoint(tmp_path / "junk.pt")
    assert str(e.value) == (f"checkpoint {tmp_path / 'junk.pt'} is not a readable checkpoint (truncated or corrupt?): "
                            f"it is not a torch.save file (UnpicklingError)")


def test_topk_ties_rank_lower_index_first_and_errors_count():
    scores = torch.tensor([[0.1, 0.3, 0.3, 0.3, 0.0, 0.3, 0.3],
                           [0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.0]])
    pred = topk_predictions(scores, k=5)
    assert pred.tolist() == [[1, 2, 3, 5, 6], [0, 1, 2, 3, 4]]
    labels = torch.tensor([6, 5])
    assert topk_errors(pred, labels) == {1: 2, 5: 1}

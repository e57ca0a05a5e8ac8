"""torchrun --max-restarts: a worker SIGKILLed mid-epoch, while a checkpoint is written, or during validation,
and the restarted group ends bit-identical to a run never killed (two gloo workers on the CPU)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from paper_repro.core import faults
from paper_repro.nets.checkpoint import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 48 train images, a global batch of 16 over 2 workers: 3 steps an epoch, 6 in all; a checkpoint every
# 2 global steps and at each epoch's end, so rank 0 writes its 1st checkpoint after step 2, its 2nd at
# the end of epoch 1, its 3rd after step 4. One validation batch per worker and epoch.
# The plateau schedule: the stopped run starts with --epochs 50 and the released schedule would spread its
# drops over the 50 epochs it was started with, unlike the unkilled 2-epoch run it is compared with.
ARGS = ["--gpus", "cpu", "--width", "0.125", "--workers", "0", "--no-progress", "--epochs", "2", "--batch-size", "16",
        "--checkpoint-every", "2", "--seed", "3", "--auto-resume", "--lr-schedule", "plateau"]
# A run takes about 10 s; a hang (the failure this guards against) would otherwise last torch's 30 minutes.
LIMIT_S = 240


def _torchrun(store, out, fault=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop(faults.ENV, None)
    if fault:
        env[faults.ENV] = fault
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--max-restarts", "2",
           "-m", "paper_repro.train", "--data", store, "--out", out, *ARGS]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        stdout, stderr = proc.communicate(timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        proc.terminate()  # torchrun passes SIGTERM on to its workers (they run in sessions of their own)
        stdout, stderr = proc.communicate(timeout=60)
        pytest.fail(f"torchrun did not finish in {LIMIT_S} s (fault {fault}):\n{stderr[-6000:]}")
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, stdout[-2000:] + stderr[-6000:]
    return stdout + stderr


def _log(run):
    with open(os.path.join(run, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def unkilled(tiny_store, tmp_path_factory):
    """The reference: the same command, never killed."""
    run = str(tmp_path_factory.mktemp("elastic") / "unkilled")
    output = _torchrun(tiny_store, run)
    assert "resuming" not in output
    return run


@pytest.mark.parametrize("fault, resumed_at", [
    ("kill:rank1:step:5", "after batch 1 of epoch 2"),  # mid-epoch 2; the last checkpoint: after global step 4
    ("kill:rank0:checkpoint:3", "after epoch 1"),  # rank 0 dies inside its 3rd save: the 2nd is the last whole one
    ("kill:rank1:val:1", "after batch 2 of epoch 1"),  # during epoch 1's validation, before the end-of-epoch checkpoint
], ids=["mid-epoch", "during-checkpoint", "during-validation"])
def test_killed_worker_restarts_and_ends_bit_identical(tiny_store, tmp_path, unkilled, fault, resumed_at):
    run = str(tmp_path / "killed")
    output = _torchrun(tiny_store, run, fault)
    assert "exitcode: -9" in output  # the fault fired: torchrun saw its worker SIGKILLed, then restarted the group
    assert f"resuming {run} {resumed_at} (epochs done: " in output
    assert "connectFullMesh failed" not in output
    a, b = load_checkpoint(os.path.join(unkilled, "checkpoint.pt")), load_checkpoint(os.path.join(run, "checkpoint.pt"))
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (2, 0)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["optimizer"]["velocity"].keys() == b["optimizer"]["velocity"].keys()
    for k in a["optimizer"]["velocity"]:
        assert torch.equal(a["optimizer"]["velocity"][k], b["optimizer"]["velocity"][k]), k
    for r in range(2):
        assert torch.equal(a["rng"][r]["torch"], b["rng"][r]["torch"])
    la, lb = _log(unkilled), _log(run)
    assert [r["epoch"] for r in la] == [r["epoch"] for r in lb] == [1, 2]
    for ra, rb in zip(la, lb):
        for key in ("train_loss", "train_top1_error", "val_top1_error", "val_top5_error", "val_loss", "lr",
                    "train_images", "val_images"):
            assert ra[key] == rb[key], key
    assert sorted(f for f in os.listdir(run) if f.startswith(".")) == []  # no partial checkpoint left behind


def test_fault_spec_errors_name_the_form():
    assert faults.parse("kill:rank1:step:5") == (1, "step", 5)
    with pytest.raises(ValueError, match=r"^PAPER_REPRO_FAULT='kill:1:step:5': expected kill:rankR:POINT:N with "
                                         r"POINT one of step, val, checkpoint \(e\.g\. kill:rank1:step:5\)$"):
        faults.parse("kill:1:step:5")


def test_sigterm_to_the_launcher_stops_every_rank_at_one_checkpoint(tiny_store, tmp_path, unkilled):
    run = str(tmp_path / "stopped")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop(faults.ENV, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "paper_repro.train",
           "--data", tiny_store, "--out", run, *ARGS, "--epochs", "50"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.time() + LIMIT_S
        while not os.path.exists(os.path.join(run, "checkpoint.pt")):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # what a cluster scheduler does at the end of a job's time
        stdout, stderr = proc.communicate(timeout=LIMIT_S)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode != 0  # stopped, not finished: `torchrun ... && evaluate` does not go on
    assert stderr.count("paper_repro.train: interrupted: ") == 2, stderr[-4000:]  # both ranks, one message each
    stopped = load_checkpoint(os.path.join(run, "checkpoint.pt"))
    assert len(stopped["rng"]) == 2 and not stopped["finished"] and stopped["epoch"] < 50
    # The one checkpoint both ranks joined continues to the same weights as a run never stopped.
    _torchrun(tiny_store, run)
    a, b = load_checkpoint(os.path.join(unkilled, "checkpoint.pt")), load_checkpoint(os.path.join(run, "checkpoint.pt"))
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (2, 0)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k

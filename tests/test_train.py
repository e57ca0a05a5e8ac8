"""python -m paper_repro.train end to end: learning, exact resume after kill -9, SIGTERM, clear errors."""
import json
import math
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data.distributed import DistributedSampler

from paper_repro.data.loader import BatchLoader, epoch_order, shard_order
from paper_repro.data.store import ImageNetStore, check_trainable
from paper_repro.nets.alexnet import AlexNet
from paper_repro.nets.checkpoint import load_checkpoint
from paper_repro.train import main, run_cli
from paper_repro.training.engine import stall_message
from paper_repro.training.optim import PaperSGD
from paper_repro.training.run_state import load_optimizer_state, optimizer_state
from paper_repro.training.settings import CONFIG_DIR, get_args_parser, parse_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--gpus", "cpu,cpu", "--width", "0.125", "--workers", "0", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _env():
    # One thread: no oversubscription on shared cores, and the same kernels in every run (bit-exact compare).
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _train_cmd(store, out, *extra):
    return [sys.executable, "-m", "paper_repro.train", "--data", store, "--out", out, *FAST, *extra]


def _log(run):
    with open(os.path.join(run, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_epoch_order_is_distributed_samplers_and_shards_partition_it():
    order = epoch_order(50, seed=3, epoch=2)
    sampler = DistributedSampler(range(50), num_replicas=1, rank=0, shuffle=True, seed=3)
    sampler.set_epoch(2)
    assert order.tolist() == list(sampler)
    assert sorted(order.tolist()) == list(range(50)) and order.tolist() != epoch_order(50, 3, 3).tolist()
    shards = [shard_order(50, 3, 2, rank, 2) for rank in range(2)]
    assert np.array_equal(np.sort(np.concatenate(shards)), np.arange(50))
    assert np.array_equal(shards[0], order[0::2]) and np.array_equal(shards[1], order[1::2])


def test_batch_loader_order_resume_start_and_workers(tiny_store):
    store = ImageNetStore(tiny_store, "train")
    order = epoch_order(len(store), 0, 0)[:11]
    loader = BatchLoader(store, order, batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and [len(b[1]) for b in batches] == [4, 4, 3]
    assert batches[0][0].dtype == torch.uint8 and batches[0][0].shape == (4, 256, 256, 3)
    for j, i in enumerate(order[4:8]):
        image, label = store[int(i)]
        assert np.array_equal(batches[1][0][j].numpy(), image) and batches[1][1][j] == label
    loader.set_indices(order, start=2)
    rest = list(loader)
    assert len(rest) == 1 and torch.equal(rest[0][0], batches[2][0]) and len(loader) == 3
    with_workers = BatchLoader(store, order, batch_size=4, workers=1, drop_last=True)
    got = list(with_workers)
    assert len(got) == 2 and torch.equal(got[1][0], batches[1][0]) and torch.equal(got[1][1], batches[1][1])


def test_batch_loader_cpu_batches_are_planar_with_the_same_pixels(tiny_store):
    store = ImageNetStore(tiny_store, "val")
    order = np.arange(len(store))[::-1].copy()
    planar = next(iter(BatchLoader(store, order, batch_size=5, workers=1)))[0]  # CPU consumer: the default
    plain = next(iter(BatchLoader(store, order, batch_size=5, planar=False)))[0]
    assert planar.shape == plain.shape == (5, 256, 256, 3) and planar.dtype == torch.uint8
    assert planar.permute(0, 3, 1, 2).is_contiguous() and plain.is_contiguous()
    assert torch.equal(planar, plain)
    for j, i in enumerate(order[:5]):
        assert np.array_equal(planar[j].numpy(), store[int(i)][0])


def test_narrow_net_learns_with_only_width_changed(store_factory, tmp_path):
    store = store_factory(4, 64, 16)
    run = str(tmp_path / "run")
    # Issue 10: --width 0.5 with every other flag at its default once stayed at chance here (32 steps of 32).
    # The init keeps each layer's gain as at width 1 (fan-in scaling) and lr follows the batch (0.01 x 32/128).
    main(parse_args(["--data", store, "--out", run, "--gpus", "cpu,cpu", "--workers", "0", "--no-progress",
                     "--width", "0.5", "--epochs", "4", "--batch-size", "32", "--checkpoint-every", "0"]))
    log = _log(run)
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    assert log[-1]["train_loss"] < log[0]["train_loss"] - 0.1
    assert log[-1]["val_top1_error"] <= 0.25  # chance is 3/4 with 4 classes
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["data"] == store and config["model_config"]["width"] == 0.5 and config["lr"] == 0.0025
    assert config["init_std_per_layer"]["conv1.weight"] == 0.01 and config["model_config"]["bias_init"] == 1.0
    assert config["host_memory"]["keep_freed_memory"] == (platform.libc_ver()[0] == "glibc")  # a CPU run
    ckpt = load_checkpoint(os.path.join(run, "checkpoint.pt"))  # weights_only=True
    assert ckpt["epoch"] == 4 and ckpt["step"] == 0 and ckpt["model_config"] == config["model_config"]
    assert set(ckpt["rng"][0]) == {"torch", "cuda", "numpy", "python"}


def _wait_for(path, proc, timeout=120):
    t0 = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.01)


def test_kill9_mid_epoch_then_resume_is_bit_identical(tiny_store, tmp_path):
    args = ["--epochs", "2", "--batch-size", "8", "--checkpoint-every", "2", "--seed", "5", "--lr", "0.02"]
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    reference = subprocess.Popen(_train_cmd(tiny_store, whole, *args), env=_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(_train_cmd(tiny_store, killed, *args), env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(os.path.join(killed, "checkpoint.pt"), victim)  # the first one: after step 2 of 6
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    left = load_checkpoint(os.path.join(killed, "checkpoint.pt"))
    assert left["epoch"] == 0 and 0 < left["step"] < 6, "the kill must land mid-epoch, after a mid-epoch checkpoint"
    resumed = subprocess.run(_train_cmd(tiny_store, killed, *args, "--resume"), env=_env(), check=True,
                             capture_output=True, text=True)
    assert f"resuming {killed} after batch {left['step']} of epoch 1 (epochs done: 0, steps done: {left['step']}; " \
        in resumed.stdout  # not a restart from scratch
    out, err = reference.communicate()
    assert reference.returncode == 0, err
    a, b = load_checkpoint(os.path.join(whole, "checkpoint.pt")), load_checkpoint(os.path.join(killed, "checkpoint.pt"))
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (2, 0)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["optimizer"]["velocity"]:
        assert torch.equal(a["optimizer"]["velocity"][k], b["optimizer"]["velocity"][k]), k
    la, lb = _log(whole), _log(killed)
    assert [r["epoch"] for r in lb] == [1, 2]
    for ra, rb in zip(la, lb):
        for key in ("train_loss", "train_top1_error", "val_top1_error", "val_top5_error", "lr"):
            assert ra[key] == rb[key], key


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tiny_store, tmp_path):
    run = str(tmp_path / "run")
    proc = subprocess.Popen(_train_cmd(tiny_store, run, "--epochs", "50", "--batch-size", "8",
                                       "--checkpoint-every", "0"),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(os.path.join(run, "config.json"), proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err  # interrupted: `train && evaluate` must not score a half-trained net
    last = err.strip().splitlines()[-1]
    assert last.startswith("paper_repro.train: interrupted: stopped after ") and last.endswith(
        f"; checkpoint {run}/checkpoint.pt; continue with the same command plus --resume")
    ckpt = load_checkpoint(os.path.join(run, "checkpoint.pt"))
    assert ckpt["epoch"] * 6 + ckpt["step"] >= 1 and ckpt["epoch"] < 50 and not ckpt["finished"]


def _error(argv, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(argv)
    assert e.value.code == 2
    return capsys.readouterr().err.strip()


def test_clear_errors(tiny_store, tmp_path, capsys, monkeypatch):
    run = str(tmp_path / "run")
    base = ["--data", tiny_store, "--out", run, "--width", "0.125", "--workers", "0"]
    assert _error(base + ["--gpus", "0,1,2"], capsys) == (
        "paper_repro.train: error: --gpus '0,1,2': expected one or two comma-separated entries, e.g. 0,1 or 0 or cpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert _error(base + ["--gpus", "0,1"], capsys) == (
        "paper_repro.train: error: --gpus '0,1': cuda:1 does not exist; this machine has 1 CUDA device (cuda:0); "
        "pass --gpus 0,0 for both columns on one GPU, or --gpus 0")
    missing = str(tmp_path / "no_store")
    assert _error(["--data", missing, "--out", run, "--gpus", "cpu"], capsys) == (
        f"paper_repro.train: error: image store {missing} does not exist; build it with "
        f"`python data_prep/build_imagenet.py --source DIR --out {missing}`")
    assert _error(base + ["--gpus", "cpu", "--resume"], capsys) == (
        f"paper_repro.train: error: --resume: {run}/checkpoint.pt does not exist, so there is nothing to continue; "
        f"run without --resume to start this run (or --auto-resume to do either)")
    assert _error(base + ["--gpus", "cpu", "--minutes", "-5"], capsys) == (
        "paper_repro.train: error: --minutes -5.0: must be a number of minutes >= 0 (0: no budget)")
    assert _error(base + ["--gpus", "cpu", "--config", "no_such_config"], capsys).startswith(
        "paper_repro.train: error: --config no_such_config: no such file, nor a config named so in")
    assert not os.path.exists(os.path.join(run, "checkpoint.pt"))


def test_configs_resolve_and_flags_override(tmp_path):
    names = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".json"))
    assert "alexnet_paper" in names
    for name in names:
        parse_args(["--config", name, "--data", "S", "--out", str(tmp_path / name)])  # every key is a flag
    args = parse_args(["--config", "alexnet_paper", "--data", "S", "--out", str(tmp_path / "r"), "--lr", "0.02"])
    defaults = parse_args(["--data", "S", "--out", str(tmp_path / "r")])
    assert args.lr == 0.02 and args.batch_size == 128 and args.bias_init == 1.0 and args.lrn == "code"
    assert vars(args).keys() == vars(defaults).keys()
    bad = tmp_path / "bad.json"
    bad.write_text('{"learning_rate": 0.1}')
    with pytest.raises(Exception, match="unknown key\\(s\\) learning_rate"):
        parse_args(["--config", str(bad), "--data", "S", "--out", str(tmp_path / "r")])


def test_help_says_how_torchrun_works():
    text = " ".join(get_args_parser().format_help().split())
    for phrase in ("torchrun", "each process drives its own pair of GPUs", "DistributedDataParallel averages",
                   "DistributedSampler", "only rank 0 writes", "--bias-init", "--colour-noise-scale"):
        assert phrase in text, phrase


def test_nan_loss_stops_with_a_message(tiny_store, tmp_path):
    with pytest.raises(FloatingPointError, match="training loss became (nan|inf|-inf) by batch [0-9]+ of epoch 1: "):
        main(parse_args(["--data", tiny_store, "--out", str(tmp_path / "run"), *FAST, "--epochs", "1",
                         "--batch-size", "8", "--lr", "1e12", "--log-every", "1", "--checkpoint-every", "1"]))


def test_stall_message_names_causes_and_fixes():
    msg = stall_message(math.log(1000) - 0.001, 1000, 5000)
    assert "ln(1000) = 6.9078" in msg and "--bias-init 0.1" in msg and "--lr" in msg and "--lrn" in msg
    assert stall_message(5.5, 1000, 5000) is None


def test_velocity_checkpoint_crosses_layouts():
    """A checkpoint from the two-column layout resumes in the one-device layout with the same next step."""
    torch.manual_seed(0)
    two = AlexNet(num_classes=3, devices=("cpu", "cpu"), width=0.125, dropout=0.0)
    one = AlexNet(num_classes=3, devices=("cpu",), width=0.125, dropout=0.0)
    opt_two = PaperSGD(two.parameters(), lr=0.01)
    x, y = torch.randn(4, 3, 224, 224) * 50, torch.tensor([0, 1, 2, 0])
    for _ in range(2):
        opt_two.zero_grad()
        torch.nn.functional.cross_entropy(two(x), y).backward()
        opt_two.step()
    opt_one = PaperSGD(one.parameters(), lr=0.5)
    one.load_state_dict(two.state_dict())
    load_optimizer_state(one, opt_one, optimizer_state(two, opt_two))
    assert opt_one.param_groups[0]["lr"] == 0.01
    for model, opt in ((two, opt_two), (one, opt_one)):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    a, b = two.state_dict(), one.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    velocity = optimizer_state(one, opt_one)["velocity"]
    assert velocity["conv2.weight"].shape == a["conv2.weight"].shape and velocity["fc8.bias"].abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run_with_bf16_and_channels_last_resumes_on_the_cpu(tiny_store, tmp_path):
    run = str(tmp_path / "run")
    common = ["--data", tiny_store, "--out", run, "--width", "0.25", "--batch-size", "16", "--no-progress",
              "--bias-init", "0.1", "--lr", "0.003"]
    main(parse_args(common + ["--gpus", "0,0", "--workers", "2", "--epochs", "1", "--bf16", "--channels-last"]))
    main(parse_args(common + ["--gpus", "cpu,cpu", "--workers", "0", "--epochs", "2", "--resume"]))
    log = _log(run)
    assert [r["epoch"] for r in log] == [1, 2] and all(math.isfinite(r["train_loss"]) for r in log)
    assert load_checkpoint(os.path.join(run, "checkpoint.pt"))["epoch"] == 2


def test_a_run_says_what_it_does_first_what_it_did_last_and_counts_one_way(tiny_store, tmp_path, capsys):
    from paper_repro.evaluate import get_args_parser as evaluate_parser
    from paper_repro.evaluate import main as evaluate_main
    from paper_repro.report import get_args_parser as report_parser
    run = str(tmp_path / "run")
    argv = ["--data", tiny_store, "--out", run, *FAST, "--batch-size", "8", "--bias-init", "0.1"]
    main(parse_args(argv + ["--epochs", "1"]))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"train {run}: 48 training images of 4 classes (val: 16) from {tiny_store} | 6 steps of 8 "
                        f"images per epoch, 1 epoch at most | devices cpu, cpu (--gpus cpu,cpu) | recipe: released-2012 "
                        f"except --width 0.125, --bias-init 0.1, --batch-size 8, --lr 0.000625, --epochs 1")
    log = _log(run)
    assert lines[1].startswith(f"epoch 1/1: lr 0.000625 train loss {log[0]['train_loss']:.4f} ")
    last = re.fullmatch(rf"train {re.escape(run)}: done after epoch 1 \(epochs done: 1, steps done: 6\) in \d+ s; "
                        rf"val top-1 error {log[0]['val_top1_error']:.4f}, top-5 {log[0]['val_top5_error']:.4f} "
                        rf"\(centre patch, epoch 1\)\. Next, the paper's ten-view test and the report: (.*)", lines[-1])
    assert last and len(lines) == 3, lines
    evaluate_cmd, report_cmd = (shlex.split(c) for c in last.group(1).split(" && "))
    assert evaluate_cmd[:3] == ["python", "-m", "paper_repro.evaluate"]
    assert report_cmd[:3] == ["python", "-m", "paper_repro.report"]
    result = evaluate_main(evaluate_parser().parse_args(evaluate_cmd[3:] + ["--workers", "0", "--no-progress"]))
    report_parser().parse_args(report_cmd[3:])  # runs as printed
    assert report_cmd[report_cmd.index("--eval") + 1] == os.path.join(run, "eval.json")
    # One numbering: the log's last epoch and its steps are the checkpoint's epochs and steps done.
    assert (log[-1]["epoch"], log[-1]["steps"]) == (1, 6)
    (entry,) = result["checkpoints"]
    assert {k: entry[k] for k in ("path", "epochs_done", "steps_done", "position")} == {
        "path": os.path.join(run, "checkpoint.pt"), "epochs_done": 1, "steps_done": 6, "position": "after epoch 1"}
    assert "epoch" not in entry and "step" not in entry  # one numbering: the file's own counters stay in the file
    assert json.load(open(os.path.join(run, "eval.json")))["checkpoints"] == result["checkpoints"]
    capsys.readouterr()
    main(parse_args(argv + ["--epochs", "2", "--resume", "--progress"]))
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[1] == f"resuming {run} after epoch 1 (epochs done: 1, steps done: 6; from {run}/checkpoint.pt)"
    assert lines[-1].startswith(f"train {run}: done after epoch 2 (epochs done: 2, steps done: 12) in ")
    assert " s (this start); val top-1 error " in lines[-1]
    assert [(r["epoch"], r["steps"]) for r in _log(run)] == [(1, 6), (2, 12)]
    assert "epoch 2/2: " in err and "run left=" in err  # the bar: the epoch's time left (tqdm's) and the run's


def test_ten_view_every_logs_evaluates_own_test_and_the_sweep_reads_it(store_factory, tmp_path, capsys,
                                                                        monkeypatch):
    import paper_repro.train as train_module
    from paper_repro.data.store import load_stats
    from paper_repro.evaluate import get_args_parser as evaluate_parser
    from paper_repro.evaluate import main as evaluate_main
    from paper_repro.evaluation.scoring import evaluate, open_store
    from paper_repro.evaluation.sweep import TEN_VIEW, read_run
    from paper_repro.nets.checkpoint import load_model
    store = store_factory(4, 12, 10, seed=5)
    run = str(tmp_path / "run")
    argv = ["--data", store, "--out", run, *FAST, "--batch-size", "8"]
    tested = []  # the probabilities of each test train ran
    monkeypatch.setattr(train_module, "evaluate", lambda *a, **kw: tested.append(evaluate(*a, **kw)) or tested[-1])

    def evaluated():
        return evaluate_main(evaluate_parser().parse_args(["--data", store, "--checkpoint",
                                                           os.path.join(run, "checkpoint.pt"), "--workers", "0",
                                                           "--no-progress"]))

    main(parse_args(argv + ["--epochs", "1", "--ten-view-every", "5"]))  # epoch 1 is the last: tested
    first = evaluated()
    # the same probabilities as evaluate's over the checkpoint (the mean subtracted as the run's --mean-crop
    # says); with the mean at each patch's own place instead they differ
    mean_image, val = load_stats(store)["mean_image"], open_store(store, "val")
    net = load_model(os.path.join(run, "checkpoint.pt"), ("cpu", "cpu"))
    assert net.checkpoint_info["mean_crop"] == "centre"
    torch.testing.assert_close(tested[0], evaluate([net], val, mean_image, views=10, progress=False),
                               rtol=1e-5, atol=1e-6)
    other = evaluate([net], val, mean_image, views=10, progress=False, mean_crop="position")
    assert (other - tested[0]).abs().max() > 1e-4
    log = _log(run)
    assert (log[0]["val_ten_view_top1_error"], log[0]["val_ten_view_top5_error"], log[0]["ten_view_views"]) == (
        first["top1_error"], first["top5_error"], 10)
    assert f"| 10 views top-1 {first['top1_error']:.4f} top-5 {first['top5_error']:.4f} |" in capsys.readouterr().out
    main(parse_args(argv + ["--epochs", "3", "--ten-view-every", "2", "--resume"]))  # a resume may change N
    last = evaluated()
    log = _log(run)
    assert ["val_ten_view_top1_error" in r for r in log] == [True, True, True]  # 1 (then the last), 2 (N), 3 (last)
    assert (log[2]["val_ten_view_top1_error"], log[2]["val_ten_view_top5_error"]) == (
        last["top1_error"], last["top5_error"])
    assert read_run(run)["results"][TEN_VIEW] == (last["top1_error"], last["top5_error"])
    main(parse_args(argv + ["--epochs", "5", "--ten-view-every", "0", "--resume"]))
    assert ["val_ten_view_top1_error" in r for r in _log(run)] == [True, True, True, False, False]
    assert TEN_VIEW not in read_run(run)["results"]  # epoch 3's test is not the run's result at epoch 5


def test_durations_read_as_people_write_them():
    from paper_repro.training.engine import format_duration
    assert [format_duration(s) for s in (0.4, 48, 60, 192.4, 3599, 3600, 7500)] == [
        "0 s", "48 s", "1 min 00 s", "3 min 12 s", "59 min 59 s", "1 h 00 min", "2 h 05 min"]


def test_a_training_split_smaller_than_one_batch_or_of_one_class_is_one_line(tiny_store, tmp_path, capsys):
    run = str(tmp_path / "run")
    base = ["--data", tiny_store, "--out", run, "--width", "0.125", "--workers", "0", "--gpus", "cpu"]
    assert _error(base + ["--batch-size", "49"], capsys) == (
        f"paper_repro.train: error: image store {tiny_store}: its train split has 48 images, fewer than one batch of "
        f"49: add images, or give --batch-size 48 or less")
    assert not os.path.exists(os.path.join(run, "checkpoint.pt"))

    class OneClass:  # a store built before the build refused one class
        root, split, classes = "/stores/one", "train", ["n01"]

        def __len__(self):
            return 500

    with pytest.raises(ValueError) as e:
        check_trainable(OneClass(), 128)
    assert str(e.value) == ("image store /stores/one: its train split has one class (n01); a classifier needs at "
                            "least two: rebuild the store from a source with a folder per class")


class _MadeFromPythonData(TorchDispatchMode):
    """Records every tensor made from Python data (aten.lift_fresh: torch.tensor, new_tensor, as_tensor of a list)."""

    def __init__(self):
        super().__init__()
        self.made = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.made += func in (torch.ops.aten.lift_fresh.default, torch.ops.aten.lift_fresh_copy.default)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("recipe", ["released-2012", "paper-text"])
def test_a_step_and_a_validation_make_no_tensor_from_python_data(recipe):
    # On a GPU a tensor made from Python data is a blocking host-to-device copy: the host waits for the
    # device every step. The patches take the GPU's path (gather) here; the net's LRN runs its CPU branch.
    from paper_repro.data.augment import CentrePatch, TrainPatch, batch_generator
    from paper_repro.training.build import build_model, make_optimizer
    from paper_repro.training.engine import evaluate_centre, train_step
    args = parse_args(["--data", "S", "--out", "R", "--recipe", recipe, "--width", "0.125"])
    model, _ = build_model(args, 10, ("cpu", "cpu"))
    optimizer = make_optimizer(model, args)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 256, 256, 3), dtype=torch.uint8, generator=gen)
    labels = torch.tensor([0, 1, 2, 3])
    mean = torch.rand(256, 256, 3, generator=gen) * 255
    augment = TrainPatch(mean, [1.0, 0.5, 0.1], torch.eye(3), path="gather", mean_crop=args.mean_crop,
                         rescale=args.colour_noise_rescale, crop_chunk=args.crop_chunk)
    centre = CentrePatch(mean, path="gather")
    with _MadeFromPythonData() as mode:
        train_step(model, optimizer, images, labels, augment, batch_generator(0, 0, 0), device="cpu")
        evaluate_centre(model, [(images, labels)], centre, device="cpu", show_progress=False)
    assert mode.made == 0

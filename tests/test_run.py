"""The run's settings and state: one recipe, bad flags, run folders, init per width, seeds, RNGs, resume faults."""
import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from paper_repro.core import recipe
from paper_repro.core.cli import UsageError
from paper_repro.nets.alexnet import AlexNet
from paper_repro.nets.checkpoint import CHECKPOINT, PREVIOUS, load_checkpoint, save_checkpoint
from paper_repro.train import main, run_cli
from paper_repro.training.build import build_model, init_stds
from paper_repro.training.engine import StallCheck
from paper_repro.training.run_state import rng_state, seed_dropout, set_rng_state
from paper_repro.training.settings import parse_args, resolve_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--gpus", "cpu,cpu", "--width", "0.125", "--workers", "0", "--no-progress"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _error(argv, capsys, status=2):
    with pytest.raises(SystemExit) as e:
        run_cli(argv)
    assert e.value.code == status
    return capsys.readouterr().err.strip()


# ----------------------------------------------------------------------------- one recipe

def test_every_recipe_key_is_a_train_flag_whose_default_is_the_papers(tmp_path):
    defaults = vars(parse_args(["--data", "S", "--out", str(tmp_path)]))
    for key, value in recipe.PAPER.items():
        assert key in defaults, key
        assert defaults[key] == value and type(defaults[key]) is type(value), key


def test_the_default_lr_follows_the_batch_size(tmp_path):
    assert parse_args(["--data", "S", "--out", str(tmp_path), "--batch-size", "32"]).lr == 0.0025
    assert parse_args(["--data", "S", "--out", str(tmp_path), "--batch-size", "256"]).lr == 0.02
    assert parse_args(["--data", "S", "--out", str(tmp_path), "--batch-size", "32", "--lr", "0.1"]).lr == 0.1


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_alexnet_defaults_are_the_recipe():
    config = AlexNet(num_classes=recipe.PAPER_CLASSES, devices=("meta",)).config()
    for key, value in config.items():
        if key in recipe.PAPER:
            assert value == recipe.PAPER[key], key


def test_configs_hold_only_what_differs_from_the_recipe():
    folder = os.path.join(ROOT, "paper_repro", "configs")
    defaults = vars(parse_args(["--data", "S", "--out", "R"]))
    for name in os.listdir(folder):
        with open(os.path.join(folder, name)) as f:
            values = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
        same = [k for k, v in values.items() if defaults[k] == v and k != "lr_drop_epochs"]
        assert not same, f"{name} repeats the defaults of {same}"


# ----------------------------------------------------------------------------- bad flags and folders

@pytest.mark.parametrize("flag, value, allowed", [
    ("--lr", "-1", "a number > 0 (the paper: 0.01)"),
    ("--lr", "nan", "a number > 0 (the paper: 0.01)"),
    ("--momentum", "1.5", "a number in [0, 1) (the paper: 0.9)"),
    ("--weight-decay", "-0.1", "a number >= 0 (the paper: 0.0005)"),
    ("--width", "0", "a number > 0 (1.0: the paper)"),
    ("--dropout", "1", "a number in [0, 1) (the paper: 0.5)"),
    ("--init-std", "0", "a number > 0 (the paper: 0.01)"),
    ("--colour-noise-std", "-1", "a number >= 0 (the paper: 0.1)"),
])
def test_every_bad_number_is_one_line_naming_the_flag(flag, value, allowed, capsys, tmp_path):
    err = _error(["--data", "S", "--out", str(tmp_path / "r"), flag, value], capsys)
    assert err == f"paper_repro.train: error: {flag} {float(value)}: must be {allowed}"


@pytest.mark.parametrize("flag, value, message", [
    ("--batch-size", "0", "argument --batch-size: must be a positive integer, got 0"),
    ("--epochs", "-3", "argument --epochs: must be a positive integer, got -3"),
    ("--workers", "-1", "argument --workers: must be >= 0, got -1"),
    ("--lrn", "maybe", "argument --lrn: invalid choice: 'maybe' (choose from code, paper, none)"),
])
def test_argparse_errors_name_the_flag_and_the_allowed_values(flag, value, message, capsys, tmp_path):
    err = _error(["--data", "S", "--out", str(tmp_path / "r"), flag, value], capsys)
    assert err.splitlines()[-1].replace("'code', 'paper', 'none'", "code, paper, none").endswith(message)


def test_lr_drop_epochs_error(capsys, tmp_path):
    err = _error(["--data", "S", "--out", str(tmp_path), "--lr-schedule", "step", "--lr-drop-epochs", "ten"], capsys)
    assert err == ("paper_repro.train: error: --lr-drop-epochs 'ten': expected comma-separated epochs >= 1, "
                   "such as 30,60,80")


def test_a_run_folder_is_never_mixed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"epoch": 10}\n')
    with pytest.raises(UsageError) as e:
        resolve_run(parse_args(["--data", "S", "--out", str(run)]))
    assert str(e.value) == (f"--out {run} already holds log.jsonl but no checkpoint to continue from: a new run "
                            f"would mix its epochs with an old run's; choose another --out or delete those files")
    with pytest.raises(UsageError) as e:
        resolve_run(parse_args(["--data", "S", "--out", str(run), "--auto-resume"]))
    assert "already holds log.jsonl but no checkpoint" in str(e.value)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UsageError) as e:
        resolve_run(parse_args(["--data", "S", "--out", str(a_file)]))
    assert str(e.value) == f"--out {a_file}: exists and is not a folder; choose a folder path for the run"


def test_resume_keeps_the_runs_settings_and_refuses_a_changed_one(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / CHECKPOINT, {"epoch": 1})
    (run / "config.json").write_text(json.dumps({"lr": 0.02, "epochs": 5, "width": 0.5}))
    args, resume = resolve_run(parse_args(["--data", "S", "--out", str(run), "--resume", "--epochs", "7"]))
    assert resume and args.lr == 0.02 and args.width == 0.5 and args.epochs == 7
    with pytest.raises(UsageError, match=r"--lr 0.05 differs from this run's 0.02"):
        resolve_run(parse_args(["--data", "S", "--out", str(run), "--resume", "--lr", "0.05"]))
    with pytest.raises(UsageError, match=r"checkpoint.pt exists: pass --resume to continue that run"):
        resolve_run(parse_args(["--data", "S", "--out", str(run)]))


def test_only_the_previous_checkpoint_left_still_resumes(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / PREVIOUS, {"epoch": 1})
    (run / "config.json").write_text("{}")
    assert resolve_run(parse_args(["--data", "S", "--out", str(run), "--auto-resume"]))[1]


# ----------------------------------------------------------------------------- init, seeds, RNG

@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_init_stds_keep_every_layers_gain_as_at_width_1():
    one = AlexNet(num_classes=10, devices=("meta",))
    recipe = {k: 0.03 if k.split(".")[0] in ("conv3", "conv4", "conv5") else 0.01 for k in init_stds(one, "fan-in")}
    assert init_stds(one, "fan-in") == recipe  # width 1: exactly the recipe's (layers-145.cfg: 0.03 in conv3-5)
    half = AlexNet(num_classes=10, devices=("meta",), width=0.5)
    stds = init_stds(half, "fan-in")
    assert stds["conv1.weight"] == 0.01  # its fan-in (3 x 11 x 11) does not change with width
    for key in ("conv2.weight", "conv3.weight", "fc6.weight", "fc7.weight", "fc8.weight"):
        assert math.isclose(stds[key], recipe[key] * math.sqrt(2)), key
    assert init_stds(half, "none") == recipe


def test_build_model_draws_each_layer_with_its_std(tmp_path):
    args = parse_args(["--data", "S", "--out", str(tmp_path), "--width", "0.25", "--gpus", "cpu,cpu"])
    torch.manual_seed(0)
    model, stds = build_model(args, 10, ("cpu", "cpu"))
    state = model.state_dict()
    for key, std in stds.items():
        assert abs(state[key].std().item() / std - 1) < 0.1, key
    torch.manual_seed(0)
    reference = AlexNet(num_classes=10, devices=("cpu",), width=0.25).state_dict()  # the same draws, unscaled
    assert torch.allclose(state["fc7.weight"], reference["fc7.weight"] * 2)
    assert torch.equal(state["conv1.weight"], reference["conv1.weight"])


class FakeCuda:
    """Records what the seeding and RNG code asks of torch.cuda, as two GPUs would answer."""

    def __init__(self, count=2):
        self.count, self.current, self.seeds, self.states = count, 0, {}, None

    def device(self, index):
        fake = self

        class _Guard:
            def __enter__(self):
                self.old, fake.current = fake.current, index

            def __exit__(self, *exc):
                fake.current = self.old

        return _Guard()

    def manual_seed(self, seed):
        self.seeds[self.current] = seed

    def is_available(self):
        return True

    def device_count(self):
        return self.count

    def get_rng_state_all(self):
        return [torch.tensor([i, self.seeds.get(i, -1)], dtype=torch.int64) for i in range(self.count)]

    def set_rng_state_all(self, states):
        self.states = states


def test_the_two_gpus_of_a_replica_draw_different_dropout_masks():
    cuda = FakeCuda()
    seed_dropout(3, rank=1, devices=("cuda:0", "cuda:1"), cuda=cuda)
    assert set(cuda.seeds) == {0, 1} and cuda.seeds[0] != cuda.seeds[1]
    other = FakeCuda()
    seed_dropout(3, rank=0, devices=("cuda:0", "cuda:1"), cuda=other)
    assert not set(other.seeds.values()) & set(cuda.seeds.values())  # nor do two replicas
    one = FakeCuda()
    seed_dropout(3, rank=0, devices=("cuda:2", "cuda:2"), cuda=one)
    assert list(one.seeds) == [2]
    cpu = FakeCuda()
    seed_dropout(3, rank=0, devices=("cpu", "cpu"), cuda=cpu)
    assert cpu.seeds == {}


def test_rng_state_saves_and_restores_the_cuda_generators():
    cuda = FakeCuda(count=2)
    seed_dropout(0, rank=0, devices=("cuda:0", "cuda:1"), cuda=cuda)
    state = rng_state(cuda=cuda)
    assert len(state["cuda"]) == 2 and state["cuda"][1].tolist() == [1, cuda.seeds[1]]
    torch.manual_seed(123)
    np.random.seed(5)
    expected = (torch.rand(3), np.random.rand(2))
    torch.manual_seed(123)
    np.random.seed(5)
    saved = rng_state(cuda=cuda)
    torch.rand(10)
    np.random.rand(7)
    smaller = FakeCuda(count=1)  # a machine with fewer GPUs restores the ones it has
    set_rng_state(saved, cuda=smaller)
    assert len(smaller.states) == 1
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(2), expected[1])


def test_stall_check_gives_one_verdict_at_the_first_read_after_its_step():
    check = StallCheck(100, after_steps=200)
    assert check(math.log(100), 190) is None  # too early to judge
    assert "is still at ln(100) = 4.6052 after 200 steps" in check(math.log(100) + 0.01, 200)
    assert check(math.log(100), 210) is None  # said once
    learning = StallCheck(100, after_steps=200)
    assert learning(4.1, 200) is None and learning(math.log(100), 400) is None
    assert StallCheck(100, after_steps=0)(math.log(100), 10_000) is None  # 0: never check


# ----------------------------------------------------------------------------- resume faults, end to end

def _train(store, run, *extra):
    main(parse_args(["--data", store, "--out", run, *FAST, "--batch-size", "8", *extra]))


def test_a_corrupt_checkpoint_resumes_from_the_previous_one(tiny_store, tmp_path, capsys):
    run = str(tmp_path / "run")
    _train(tiny_store, run, "--epochs", "1", "--checkpoint-every", "4")
    # checkpoint.pt: end of epoch 1; checkpoint.prev.pt: batch 4 of epoch 1. Cut the newest short.
    path = os.path.join(run, CHECKPOINT)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3])
    capsys.readouterr()
    _train(tiny_store, run, "--epochs", "1", "--resume")
    out, err = capsys.readouterr()
    previous = os.path.join(run, PREVIOUS)
    assert f"resuming {run} after batch 4 of epoch 1 (epochs done: 0, steps done: 4; from {previous})" in out
    assert f"WARNING: checkpoint {path} is not a readable checkpoint (truncated or corrupt?)" in err
    assert "the steps after it are lost and will be trained again" in err
    assert load_checkpoint(path)["epoch"] == 1
    with open(os.path.join(run, "log.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1]


def test_world_size_change_mid_epoch_is_refused_with_what_to_do(tiny_store, tmp_path, capsys):
    run = str(tmp_path / "run")
    _train(tiny_store, run, "--epochs", "1", "--checkpoint-every", "2")
    ckpt = load_checkpoint(os.path.join(run, CHECKPOINT))
    ckpt.update(epoch=0, step=2, rng=ckpt["rng"] * 2)  # as two processes would have left it, mid-epoch
    save_checkpoint(os.path.join(run, CHECKPOINT), ckpt)
    err = _error(["--data", tiny_store, "--out", run, *FAST, "--batch-size", "8", "--resume"], capsys)
    assert err == (
        f"paper_repro.train: error: the checkpoint {os.path.join(run, CHECKPOINT)} stopped after batch 2 of epoch 1 "
        f"with 2 processes; this run has 1. Finish that epoch with 2 processes (the number of processes "
        f"may change at any epoch boundary: every epoch ends with a checkpoint), so that no image is seen twice "
        f"or skipped")


def test_a_full_disk_during_a_checkpoint_stops_the_run_and_keeps_the_last_one(tiny_store, tmp_path, capsys,
                                                                              monkeypatch):
    run = str(tmp_path / "run")
    _train(tiny_store, run, "--epochs", "1")
    real_save = torch.save

    def full(obj, f):
        real_save(obj, f)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    err = _error(["--data", tiny_store, "--out", run, *FAST, "--batch-size", "8", "--epochs", "2", "--resume",
                  "--checkpoint-every", "2"], capsys, status=1)
    assert err.splitlines()[-1] == (
        f"paper_repro.train: error: could not write the checkpoint {os.path.join(run, CHECKPOINT)} (No space left "
        f"on device); the previous checkpoint is intact. Free some space and continue with the same command plus "
        f"--resume")
    assert load_checkpoint(os.path.join(run, CHECKPOINT))["epoch"] == 1
    assert sorted(os.listdir(run)) == ["checkpoint.pt", "config.json", "log.jsonl", "steps.jsonl"]  # no temp file


def test_ctrl_c_exits_non_zero_after_a_checkpoint(tiny_store, tmp_path):
    run = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "paper_repro.train", "--data", tiny_store, "--out", run, *FAST, "--epochs", "50",
           "--batch-size", "8", "--checkpoint-every", "0"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not os.path.exists(os.path.join(run, "config.json")):
            assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("paper_repro.train: interrupted: stopped after ")
    assert not load_checkpoint(os.path.join(run, CHECKPOINT))["finished"]


@pytest.mark.parametrize("values, message", [
    ({"lr_schedule": "cosine"}, "lr_schedule 'cosine': must be one of released, released-2010, plateau, step"),
    ({"log_every": 0}, "log_every 0: must be a positive integer, got 0"),
    ({"input_size": 225}, "input_size 225: must be one of 224, 227"),
])
def test_config_file_values_get_the_flags_checks(values, message, tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps(values))
    with pytest.raises(UsageError) as e:
        parse_args(["--config", str(config), "--data", "S", "--out", str(tmp_path / "r")])
    assert str(e.value) == f"--config {config}: {message}"


def test_a_start_that_died_before_its_first_checkpoint_starts_again(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "steps.jsonl").write_text('{"step": 10, "epoch": 1, "loss": 4.6}\n')
    for flags in ([], ["--auto-resume"]):
        args, resume = resolve_run(parse_args(["--data", "S", "--out", str(run), *flags]))
        assert not resume


def test_boolean_speed_flags_can_be_turned_off_on_resume(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / CHECKPOINT, {"epoch": 1})
    (run / "config.json").write_text(json.dumps({"bf16": True, "channels_last": True, "tf32": True,
                                                 "keep_freed_memory": True}))
    args, _ = resolve_run(parse_args(["--data", "S", "--out", str(run), "--resume", "--no-bf16", "--no-tf32",
                                      "--no-keep-freed-memory"]))
    assert args.bf16 is False and args.tf32 is False and args.channels_last is True
    assert args.keep_freed_memory is False
    # a run saved before the flag existed resumes with its default
    (run / "config.json").write_text(json.dumps({"bf16": True}))
    args, _ = resolve_run(parse_args(["--data", "S", "--out", str(run), "--resume"]))
    assert args.keep_freed_memory is True

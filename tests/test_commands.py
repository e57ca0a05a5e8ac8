"""What every command tells a newcomer: one --gpus rule, the data checked first, --help that says what it means."""
import argparse
import importlib
import importlib.util
import re
import subprocess
import sys

import pytest
import torch

from paper_repro import baseline, evaluate, train
from paper_repro.core import cli
from paper_repro.core.devices import choose_devices, default_spec
from paper_repro.nets.alexnet import AlexNet

# command -> (module with get_args_parser, its layout on a machine without a GPU)
COMMANDS = {"train": ("paper_repro.training.settings", "cpu,cpu"), "evaluate": ("paper_repro.evaluate", "cpu"),
            "report": ("paper_repro.report", "cpu"), "demo": ("paper_repro.demo", "cpu,cpu"),
            "baseline": ("paper_repro.baseline", "cpu")}
NO_GPU = {"cuda_count": 0, "local_rank": 0, "local_world_size": 1, "visible_set": False}


# ----------------------------------------------------------------------------- one rule for --gpus

@pytest.mark.parametrize("count, processes, visible, expected", [
    (0, 1, False, "ON_CPU"), (1, 1, False, "0"), (2, 1, False, "0,1"), (8, 1, False, "0,1"),
    (8, 4, False, "0,1"),  # torchrun, 4 processes on 8 GPUs: each its own pair
    (4, 4, False, "0"),  # 4 processes on 4 GPUs: one each
    (2, 4, True, "0,1"),  # srun --gpus-per-task=2: a process sees only its own two
    (2, 4, False, "0"),  # too few GPUs for the processes: parse_gpus then says what to do
])
def test_without_a_spec_the_layout_follows_the_machine(count, processes, visible, expected):
    for on_cpu in ("cpu,cpu", "cpu"):
        got = default_spec(on_cpu, cuda_count=count, local_world_size=processes, visible_set=visible)
        assert got == (on_cpu if expected == "ON_CPU" else expected)


def test_a_spec_given_is_obeyed_or_refused_and_no_spec_is_said():
    assert choose_devices("cpu", **NO_GPU) == (("cpu",), "--gpus cpu")
    assert choose_devices(None, "cpu,cpu", **NO_GPU) == (
        ("cpu", "cpu"), "--gpus cpu,cpu: not given, and this machine has no CUDA device")
    assert choose_devices(None, "cpu", **NO_GPU) == (("cpu",), "--gpus cpu: not given, and this machine has no "
                                                              "CUDA device")
    two = dict(NO_GPU, cuda_count=2)
    assert choose_devices(None, **two) == (("cuda:0", "cuda:1"), "--gpus 0,1: not given, and this machine has 2 CUDA "
                                                                 "devices")
    assert choose_devices("0,0", **two)[0] == ("cuda:0", "cuda:0")  # as given, though two GPUs are there
    assert choose_devices(None, "cpu", one_device="net", **two)[0] == ("cuda:0",)
    with pytest.raises(ValueError, match=r"^--gpus '0,1': this machine has no CUDA device; pass --gpus cpu"):
        choose_devices("0,1", **NO_GPU)
    with pytest.raises(ValueError, match=r"^--gpus '0,1': torchvision's AlexNet runs on one device; pass one"):
        choose_devices("0,1", one_device="torchvision's AlexNet", **two)


def _run(capsys, prog, fn, *args):
    """Run a command as its __main__ does: (exit status, stdout, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.run(prog, fn, *args)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_a_missing_store_is_the_first_error_not_the_gpus(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # a CPU machine, whatever this one has
    missing = str(tmp_path / "nonexistent")
    build = f"`python data_prep/build_imagenet.py --source DIR --out {missing}`"
    status, out, err = _run(capsys, "paper_repro.train", lambda: train.main(train.parse_args(
        ["--data", missing, "--out", str(tmp_path / "r1"), "--gpus", "0,1"])))
    assert (status, out) == (2, "")
    assert err == f"paper_repro.train: error: image store {missing} does not exist; build it with {build}\n"
    status, out, err = _run(capsys, "paper_repro.baseline", lambda: baseline.main(baseline.get_args_parser().parse_args(
        ["--data", missing, "--out", str(tmp_path / "b"), "--gpus", "0"])))
    assert (status, err) == (2, f"paper_repro.baseline: error: image store {missing} does not exist; build it "
                                f"with {build}\n")
    status, out, err = _run(capsys, evaluate.PROG, evaluate.cli, ["--data", missing, "--checkpoint", "c.pt",
                                                                  "--gpus", "0,1"])
    assert (status, out) == (2, "")
    assert err == (f"python -m paper_repro.evaluate: error: --data {missing}: no such directory; pass the STORE that "
                   f"data_prep/build_imagenet.py wrote\n")


def test_evaluate_without_gpus_runs_on_a_cpu_machine_and_says_so(tiny_store, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    ckpt = str(tmp_path / "c.pt")
    torch.save(AlexNet(num_classes=4, devices=("cpu",), width=0.125).state_dict(), ckpt)
    evaluate.main(evaluate.get_args_parser().parse_args(["--data", tiny_store, "--checkpoint", ckpt, "--views", "1",
                                                         "--workers", "0", "--no-progress"]))
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (f"evaluate: 16 val images of 4 classes from {tiny_store}, 1 view, 1 net | devices cpu "
                     f"(--gpus cpu: not given, and this machine has no CUDA device)")


# ----------------------------------------------------------------------------- --help

def _help(module):
    parser = importlib.import_module(module).get_args_parser()
    return parser, " ".join(parser.format_help().split())


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_states_each_default_once_in_words_and_the_gpus_rule(command):
    module, on_cpu = COMMANDS[command]
    parser, text = _help(module)
    for misleading in ("(default: True)", "(default: False)", "(default: None)"):
        assert misleading not in text, misleading
    gpus = next(a for a in parser._actions if "--gpus" in a.option_strings)
    assert gpus.default is None
    words = " ".join(parser._get_formatter()._expand_help(gpus).split())
    assert f"'{on_cpu}' where it has none" in words or f"train '{on_cpu}'" in words
    sentences = [s for s in re.split(r"(?<=[.;]) ", words) if s]
    assert len(sentences) == len(set(sentences)), "--gpus's help repeats itself"
    for action in parser._actions:
        if action.required:  # shown as required: no brackets in the usage line, no default
            assert f"[{action.option_strings[0]}" not in parser.format_usage()
            assert "default" not in (action.help or "")


def test_train_help_names_the_default_of_every_switch_and_lr_once():
    parser, text = _help("paper_repro.training.settings")
    assert "--no-colour-noise ablation: no PCA colour noise (default: the paper's PCA colour noise is on)" in text
    assert "(default: --progress)" in text and "(default: --no-bf16)" in text and "(default: --tf32)" in text
    options = text[text.index("learning (section 5):"):]
    lr = options[options.index("--lr LR"):options.index("--momentum MOMENTUM")]
    assert lr.count("default") == 1 and "0.01 x batch- size / 128" in lr  # wrapped at the hyphen
    usage = " ".join(parser.format_usage().split())
    assert usage.startswith("usage: python -m paper_repro.train [-h] --data STORE --out RUN [--gpus GPUS]")


def test_train_alone_says_in_one_line_which_flags_are_missing(capsys):
    status, out, err = _run(capsys, "paper_repro.train", train.run_cli, [])
    assert (status, out) == (2, "")
    assert err == ("paper_repro.train: error: --data and --out are required: python -m paper_repro.train "
                   "--data STORE --out RUN [flags] (--help lists them)\n")
    status, out, err = _run(capsys, "paper_repro.train", train.run_cli, ["--out", "r"])
    assert status == 2 and err.startswith("paper_repro.train: error: --data is required: ") and err.count("\n") == 1


def test_a_switch_shows_the_flag_in_effect():
    from paper_repro.core.cli import HelpFormatter
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--thing", action=argparse.BooleanOptionalAction, default=False, help="a thing")
    parser.add_argument("--n", type=int, default=3, help="a number")
    parser.add_argument("--path", default=None, help="a path (default: none)")
    text = " ".join(parser.format_help().split())
    assert "a thing (default: --no-thing)" in text and "a number (default: 3)" in text
    assert "a path (default: none)" in text and "(default: None)" not in text


COMMAND_MODULES = ["paper_repro.train", "paper_repro.evaluate", "paper_repro.report", "paper_repro.demo",
                   "paper_repro.baseline", "paper_repro.sweep", "paper_repro.cifar_fig1", "paper_repro.bench.__main__"]


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_every_command_leaves_its_heap_to_the_os_after_it_returns(module):
    """Each command's __main__ ends with cli.leave(): the interpreter's last collection skips torch's objects."""
    source = importlib.util.find_spec(module).origin
    with open(source) as f:
        main_block = f.read().split('if __name__ == "__main__":\n', 1)[1]
    assert main_block.rstrip().splitlines()[-1].strip() in ("leave()", "cli.leave()")


def test_leave_freezes_every_object_so_far():
    code = ("import gc\nfrom paper_repro.core.cli import leave\nkept = [[] for _ in range(1000)]\n"
            "before = gc.get_freeze_count()\nleave()\nprint(gc.get_freeze_count() - before >= 1000)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "True\n"

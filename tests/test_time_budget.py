"""train --minutes: the epochs that fit a wall-clock budget, the schedule scaled to them, kept across a resume."""
import json
import os

import pytest
import torch

import paper_repro.train as train_module
from paper_repro.nets.checkpoint import load_checkpoint
from paper_repro.train import main
from paper_repro.training.settings import parse_args
from paper_repro.training.time_budget import epochs_that_fit, whole_epoch_seconds

FAST = ["--gpus", "cpu,cpu", "--width", "0.125", "--workers", "0", "--no-progress", "--batch-size", "8"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _log(run):
    with open(os.path.join(run, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_epochs_that_fit_believe_the_slowest_recent_epoch():
    # 600 s budget, 100 used, epochs of 50, 80, 40, 45 s: the slowest of the last three (80) holds 6 more
    assert epochs_that_fit(600, 100, 4, [50, 80, 40, 45], 30) == 4 + 500 // 80
    # the first epoch's 80 s has left the window: 45 s holds 11 more
    assert epochs_that_fit(600, 100, 5, [50, 80, 40, 45, 30], 30) == 5 + 500 // 45
    assert epochs_that_fit(600, 100, 5, [50, 80, 40, 45, 30], 8) == 8  # never past --epochs
    assert epochs_that_fit(600, 100, 4, [50, 80, 40, 45], 30, end_cost_s=181) == 4 + 319 // 80  # a test at the end
    assert epochs_that_fit(600, 590, 4, [50, 80, 40, 45], 30) == 4  # nothing more fits: the run ends now
    assert epochs_that_fit(600, 700, 4, [50, 80, 40, 45], 30) == 4  # past the budget: still not below what is done
    assert epochs_that_fit(600, 0, 0, [], 30) == 30  # nothing measured: no foretelling


def test_a_resumed_epochs_few_steps_foretell_a_whole_epoch():
    assert whole_epoch_seconds(80, 10, 71, 0) == 90
    assert whole_epoch_seconds(20, 10, 71, 61) == pytest.approx(20 * 71 / 10 + 10)  # 10 of 71 steps trained
    assert whole_epoch_seconds(5, 10, 71, 71) == 5 * 71 + 10  # never a division by zero


def _lrs(run):
    return [(r["lr"], r["epoch"]) for r in _log(run)]


def test_a_budget_run_is_the_fixed_run_of_the_length_it_planned(tiny_store, tmp_path, monkeypatch):
    # The plan, not the clock, decides: a budget that holds 3 of 6 epochs trains exactly as --epochs 3 does
    # (the released schedule's changes scaled to 3), and stops there.
    calls = []

    def three(budget_s, used_s, epochs_done, epoch_costs, max_epochs, end_cost_s=0.0):
        calls.append((budget_s, used_s, epochs_done, len(epoch_costs), max_epochs))
        return 3

    monkeypatch.setattr(train_module, "epochs_that_fit", three)
    fixed, budget = str(tmp_path / "fixed"), str(tmp_path / "budget")
    main(parse_args(["--data", tiny_store, "--out", fixed, *FAST, "--epochs", "3"]))
    main(parse_args(["--data", tiny_store, "--out", budget, *FAST, "--epochs", "6", "--minutes", "7.5"]))
    assert [c[0] for c in calls] == [450.0] * 3 and [c[2:] for c in calls] == [(1, 1, 6), (2, 2, 6), (3, 3, 6)]
    assert 0 < calls[0][1] < calls[1][1] < calls[2][1]  # the time used grows
    a, b = load_checkpoint(os.path.join(fixed, "checkpoint.pt")), load_checkpoint(os.path.join(budget, "checkpoint.pt"))
    assert b["epoch"] == 3 and b["planned_epochs"] == 3 and a["planned_epochs"] is None
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert _lrs(fixed) == _lrs(budget) and [r["planned_epochs"] for r in _log(budget)] == [3, 3, 3]
    assert a["schedule"] == b["schedule"] and b["schedule"]["applied"] == 6  # the whole schedule, made by epoch 3
    assert b["seconds_used"] >= calls[2][1]


def test_a_spent_budget_ends_the_run_with_its_schedule_and_a_resume_keeps_it(tiny_store, tmp_path, capsys):
    run = str(tmp_path / "run")
    argv = ["--data", tiny_store, "--out", run, *FAST, "--epochs", "5", "--minutes", "0.0001"]
    main(parse_args(argv + ["--progress"]))  # 6 ms: the first epoch runs, then nothing more fits
    out, err = capsys.readouterr()
    assert "run left=0 s" in err and "run left=1 s" not in err  # the bar's time left is the budget's
    out = out.splitlines()
    assert ", 5 epochs at most, as many as fit in 0.0001 min (--minutes) | " in out[0]
    assert out[1].startswith("epoch 1/1: lr 0.000625 ") and out[1].endswith(" | lr /10")
    assert out[-1].startswith(f"train {run}: done after epoch 1 (the 1 epoch that fits in --minutes 0.0001, the "
                              f"schedule scaled to it) (epochs done: 1, steps done: 6) in ")
    ckpt = load_checkpoint(os.path.join(run, "checkpoint.pt"))
    assert (ckpt["epoch"], ckpt["planned_epochs"], ckpt["schedule"]["applied"]) == (1, 1, 6)
    assert ckpt["schedule"]["conv1_lr"] == 0.0 and not ckpt["schedule"]["colour_noise"]
    main(parse_args(argv + ["--resume"]))
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"train {run}: finished after epoch 1 (epochs done: 1); nothing to do (its --minutes budget held 1 epoch, "
        f"and its schedule ended there)")


def test_a_resumed_budget_counts_the_earlier_starts_time(tiny_store, tmp_path, monkeypatch):
    run = str(tmp_path / "run")
    argv = ["--data", tiny_store, "--out", run, *FAST, "--minutes", "600"]
    main(parse_args(argv + ["--epochs", "1"]))
    first = load_checkpoint(os.path.join(run, "checkpoint.pt"))["seconds_used"]
    assert first > 0
    used = []
    real = train_module.epochs_that_fit
    monkeypatch.setattr(train_module, "epochs_that_fit", lambda *a, **kw: used.append(a[1]) or real(*a, **kw))
    main(parse_args(argv + ["--epochs", "2", "--resume"]))
    assert used[0] > first
    assert load_checkpoint(os.path.join(run, "checkpoint.pt"))["seconds_used"] > used[0]
    assert [r["planned_epochs"] for r in _log(run)] == [1, 2]

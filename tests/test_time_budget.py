"""train --minutes: the epochs that fit a wall-clock budget, the schedule scaled to them, kept across a resume."""
import json
import os
import time

import pytest
import torch

import paper_repro.train as train_module
from paper_repro.nets.checkpoint import load_checkpoint, save_checkpoint
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
    assert epochs_that_fit(600, 590, 4, [50, 80, 40, 45], 30) == 4  # nothing more fits: the run ends now
    assert epochs_that_fit(600, 700, 4, [50, 80, 40, 45], 30) == 4  # past the budget: still not below what is done
    assert epochs_that_fit(600, 0, 0, [], 30) is None  # nothing measured: no foretelling, the plan stays


def test_epochs_that_fit_count_the_ten_view_tests_still_due():
    # a test of 181 s after every 2nd epoch and the last, from epoch 4 (done, its test not yet run) on
    def tests(n):
        return sum(e % 2 == 0 or e == n for e in range(4, n + 1))

    # by hand, 500 s left at 80 s an epoch: n = 7 costs 3 x 80 + tests at 4, 6, 7 = 240 + 543 = 783; n = 6:
    # 160 + (4, 6) 362 = 522; n = 5: 80 + (4, 5) 362 = 442 <= 500, so 5. With 1000 s left: n = 9: 400 + (4, 6,
    # 8, 9) 724 = 1124; n = 8: 320 + (4, 6, 8) 543 = 863 <= 1000, so 8 (10 to 16 cost more still)
    assert epochs_that_fit(600, 100, 4, [50, 80, 40, 45], 30, test_s=181, tests=tests) == 5
    assert epochs_that_fit(480, 100, 4, [50, 80, 40, 45], 30, test_s=181, tests=tests) == 4  # 380 s: not even 5
    assert epochs_that_fit(1100, 100, 4, [50, 80, 40, 45], 30, test_s=181, tests=tests) == 8
    assert epochs_that_fit(1100, 100, 4, [50, 80, 40, 45], 30) == 4 + 1000 // 80  # without tests


def test_a_resumed_epochs_steps_foretell_a_whole_epoch_if_they_are_half_of_it():
    assert whole_epoch_seconds(80, 10, 71, 0) == 90
    assert whole_epoch_seconds(40, 10, 71, 35) == pytest.approx(40 * 71 / 36 + 10)  # 36 of 71 steps trained
    assert whole_epoch_seconds(20, 10, 71, 61) is None  # 10 of 71: start-up costs would be scaled by 7
    assert whole_epoch_seconds(5, 10, 71, 71) is None  # stopped after its last step: nothing trained here


def _lrs(run):
    return [(r["lr"], r["epoch"]) for r in _log(run)]


def test_a_budget_run_is_the_fixed_run_of_the_length_it_planned(tiny_store, tmp_path, monkeypatch):
    # The plan, not the clock, decides: a budget that holds 3 of 6 epochs trains exactly as --epochs 3 does
    # (the released schedule's changes scaled to 3), and stops there.
    calls = []

    def three(budget_s, used_s, epochs_done, epoch_costs, max_epochs, test_s=0.0, tests=None):
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
        f"and its schedule ended there; --minutes 0 lifts the budget)")
    main(parse_args(argv[:-2] + ["--minutes", "0", "--epochs", "2", "--resume"]))  # lifted: --epochs holds
    assert [r["epoch"] for r in _log(run)] == [1, 2] and "planned_epochs" not in _log(run)[1]
    assert load_checkpoint(os.path.join(run, "checkpoint.pt"))["planned_epochs"] is None


def test_a_plateau_schedule_just_ends_at_the_budget(tiny_store, tmp_path, capsys):
    run = str(tmp_path / "run")
    main(parse_args(["--data", tiny_store, "--out", run, *FAST, "--epochs", "5", "--minutes", "0.0001",
                     "--lr-schedule", "plateau"]))
    assert capsys.readouterr().out.splitlines()[-1].startswith(
        f"train {run}: done after epoch 1 (the 1 epoch that fits in --minutes 0.0001) (epochs done: 1, ")
    assert load_checkpoint(os.path.join(run, "checkpoint.pt"))["schedule"]["lr"] == 0.000625  # no drop


def test_a_resumed_budget_counts_the_earlier_starts_time(tiny_store, tmp_path, monkeypatch):
    run = str(tmp_path / "run")
    argv = ["--data", tiny_store, "--out", run, *FAST, "--minutes", "600"]
    main(parse_args(argv + ["--epochs", "2"]))  # two epochs here, one in the resumed start before its plan
    ckpt = load_checkpoint(os.path.join(run, "checkpoint.pt"))
    first, costs = ckpt["seconds_used"], ckpt["epoch_costs"]
    assert first > 0 and len(costs) == 2 and 0 < sum(costs) < first
    calls = []
    real = train_module.epochs_that_fit

    def spy(*a, **kw):
        calls.append((time.perf_counter(), a))
        return real(*a, **kw)

    monkeypatch.setattr(train_module, "epochs_that_fit", spy)
    started = time.perf_counter()
    main(parse_args(argv + ["--epochs", "3", "--resume"]))
    (at, (_, used, done, window, _)), = calls
    assert 0 < used - first <= at - started  # this start's time on top of the earlier start's
    assert done == 3 and window[:2] == costs and len(window) == 3  # the pace of the epochs before the resume too
    assert [r["planned_epochs"] for r in _log(run)] == [2, 2, 3]


def test_a_checkpoint_from_before_the_budget_resumes_under_one(tiny_store, tmp_path):
    run = str(tmp_path / "run")
    argv = ["--data", tiny_store, "--out", run, *FAST]
    main(parse_args(argv + ["--epochs", "1"]))
    path = os.path.join(run, "checkpoint.pt")
    ckpt = load_checkpoint(path)
    for key in ("planned_epochs", "seconds_used", "epoch_costs"):
        del ckpt[key]
    del ckpt["schedule"]["applied"]
    save_checkpoint(path, ckpt)
    main(parse_args(argv + ["--epochs", "2", "--minutes", "0.0001", "--resume"]))  # its time was not counted
    ckpt = load_checkpoint(path)
    assert (ckpt["epoch"], ckpt["planned_epochs"]) == (2, None) and ckpt["seconds_used"] > 0

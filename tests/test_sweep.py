"""python -m paper_repro.sweep: runs grouped by settings, seeds pooled, differences against a reference, errors."""
import json
import math
import os
import subprocess
import sys

import pytest
from conftest import ROOT
from scipy.stats import t as student_t

from paper_repro.core.cli import UsageError
from paper_repro.evaluation.sweep import CENTRE, TEN_VIEW, read_run, settings_key, sweep
from paper_repro.sweep import cli

BASE = {"lr": 0.01, "lrn": "code", "pooling": "overlapping", "dropout": 0.5, "epochs": 3, "batch_size": 32,
        "model_config": {"lrn": "code", "width": 0.25, "num_classes": 10}, "num_classes": 10}


def make_run(root, name, seed, centre, ten=None, ten_epoch=3, epochs_logged=3, split="val", **changes):
    """A run folder by hand: config.json (BASE + changes, its own seed/out/devices), log.jsonl, eval JSON."""
    run = os.path.join(root, name)
    os.makedirs(run)
    config = {**BASE, **changes, "seed": seed, "out": run, "data": f"/stores/{name}", "gpus": "cpu,cpu",
              "devices": ["cpu", "cpu"], "workers": seed, "torch_version": "x"}
    if "lrn" in changes:
        config["model_config"] = {**BASE["model_config"], "lrn": changes["lrn"]}
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(run, "log.jsonl"), "w") as f:
        for e in range(1, epochs_logged + 1):
            t1, t5 = (0.9, 0.5) if e < epochs_logged else centre
            f.write(json.dumps({"epoch": e, "val_top1_error": t1, "val_top5_error": t5, "lr": 0.01}) + "\n")
        f.write('{"epoch": 9, "val_to')  # a line cut by a kill mid-write is left out
    if ten is not None:
        ev = {"top1_error": ten[0], "top5_error": ten[1], "split": split, "views": 10, "images": 500,
              "checkpoints": [{"path": os.path.join(run, "checkpoint.pt"), "epochs_done": ten_epoch, "steps_done": 0}]}
        with open(os.path.join(run, "eval_val.json"), "w") as f:
            json.dump(ev, f)
        with open(os.path.join(run, "eval_centre.json"), "w") as f:  # one view: not the ten-view result
            json.dump({**ev, "views": 1, "top1_error": 0.99}, f)
    return run


@pytest.fixture
def runs(tmp_path):
    """Reference (3 seeds, ten-view), no LRN (the same 3 seeds, ten-view), lr 0.02 (2 other seeds, centre only)."""
    r = str(tmp_path)
    return {
        "ref": [make_run(r, f"ref{s}", s, (0.60 + d, 0.20), ten=(0.50 + d, 0.15 + d))
                for s, d in ((0, 0.0), (1, 0.03), (2, -0.01))],
        "nolrn": [make_run(r, f"nolrn{s}", s, (0.62 + d, 0.21), ten=(0.55 + d, 0.16), lrn="none")
                  for s, d in ((0, 0.01), (1, 0.0), (2, 0.05))],
        "lr": [make_run(r, f"lr{s}", s, (0.70 + d, 0.30 + d), lr=0.02) for s, d in ((5, 0.0), (6, 0.01))],
    }


def sd(xs):
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def test_runs_group_by_settings_and_pool_their_seeds(runs):
    order = runs["nolrn"][:2] + runs["ref"] + runs["lr"] + runs["nolrn"][2:]
    result = sweep(order, reference=runs["ref"][1])
    a, b, c = result["groups"]
    assert a["runs"] == runs["nolrn"][:2] + runs["nolrn"][2:] and a["seeds"] == [0, 1, 2]
    assert b["runs"] == runs["ref"] and result["reference"] == 1 and b["label"] == "reference"
    assert c["runs"] == runs["lr"] and c["seeds"] == [5, 6]
    assert a["label"] == "lrn=none" and c["label"] == "lr=0.02"  # model_config.lrn follows lrn: not named
    assert (a["kind"], b["kind"], c["kind"]) == (TEN_VIEW, TEN_VIEW, CENTRE)
    ten = [0.56, 0.55, 0.60]
    assert a["top1"]["mean"] == pytest.approx(sum(ten) / 3) and a["top1"]["std"] == pytest.approx(sd(ten))
    assert (a["top1"]["min"], a["top1"]["max"], a["top1"]["n"]) == (pytest.approx(0.55), pytest.approx(0.60), 3)
    assert a["top5"]["mean"] == pytest.approx(0.16) and a["top5"]["std"] == pytest.approx(0)
    assert c["top1"]["mean"] == pytest.approx(0.705) and c["top1"]["std"] == pytest.approx(sd([0.70, 0.71]))


def test_differences_paired_by_seed_and_unpaired(runs):
    result = sweep(runs["ref"] + runs["nolrn"] + runs["lr"], reference=runs["ref"][0])
    ref, nolrn, lr = result["groups"]
    d = nolrn["diff_top1"]  # same seeds 0, 1, 2: per-seed differences of the ten-view errors
    per_seed = [0.56 - 0.50, 0.55 - 0.53, 0.60 - 0.49]
    assert d["paired"] and d["n"] == 3 and nolrn["diff_kind"] == TEN_VIEW
    assert d["mean"] == pytest.approx(sum(per_seed) / 3) and d["std"] == pytest.approx(sd(per_seed))
    assert d["se"] == pytest.approx(sd(per_seed) / math.sqrt(3)) and d["df"] == 2
    assert d["ci"] == pytest.approx(4.302653 * d["se"])  # Student's t, 97.5 % point, 2 degrees of freedom (tables)
    assert d["resolved"] is (abs(d["mean"]) > d["ci"]) is False  # 3 seeds do not resolve +6.3 +- 4.5 points
    assert (d["min"], d["max"]) == (pytest.approx(0.02), pytest.approx(0.11))
    e = lr["diff_top1"]  # other seeds and no ten-view: unpaired, on the centre errors both groups have
    centre_ref, centre_lr = [0.60, 0.63, 0.59], [0.70, 0.71]
    assert not e["paired"] and e["n"] == (2, 3) and lr["diff_kind"] == CENTRE
    assert e["mean"] == pytest.approx(0.705 - sum(centre_ref) / 3)
    assert e["std"] == pytest.approx(math.sqrt(sd(centre_lr) ** 2 + sd(centre_ref) ** 2))
    va, vb = sd(centre_lr) ** 2 / 2, sd(centre_ref) ** 2 / 3
    assert e["se"] == pytest.approx(math.sqrt(va + vb))
    assert e["df"] == pytest.approx((va + vb) ** 2 / (va ** 2 / 1 + vb ** 2 / 2))  # Welch-Satterthwaite
    assert e["ci"] == pytest.approx(student_t.ppf(0.975, e["df"]) * e["se"]) and e["resolved"] is True
    assert lr["diff_top5"]["mean"] == pytest.approx(0.305 - 0.20)
    assert "diff_top1" not in ref


def test_the_command_writes_the_table_and_the_figure(runs, tmp_path, capsys):
    out = str(tmp_path / "sweep")
    cli(["--runs", *runs["ref"], *runs["nolrn"], "--reference", runs["ref"][0], "--out", out])
    printed = capsys.readouterr().out
    md = open(os.path.join(out, "sweep.md")).read()
    ten, diff = [0.56, 0.55, 0.60], [0.06, 0.02, 0.11]
    mean, ci = sum(diff) / 3, 4.302653 * sd(diff) / math.sqrt(3)
    row = (f"| B | lrn=none | 0, 1, 2 | 3 | ten-view | {100 * sum(ten) / 3:.2f} ± {100 * sd(ten):.2f} "
           f"(55.00-60.00, n=3) | 16.00 ± 0.00 (16.00-16.00, n=3) | +{100 * mean:.2f} ± {100 * sd(diff):.2f} "
           f"(95 % CI {100 * (mean - ci):+.2f} to {100 * (mean + ci):+.2f}; 3 pairs by seed) |")
    assert row in md and row in printed
    assert "| A | reference | 0, 1, 2 | 3 | ten-view | 50.67 ± 2.08 (49.00-53.00, n=3) |" in md
    assert f"| `{runs['ref'][1]}` | A | 1 | 63.00 (3) | 53.00 (3) |" in md
    assert open(os.path.join(out, "sweep.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert json.load(open(os.path.join(out, "sweep.json")))["groups"][1]["diff_top1"]["paired"] is True


def test_ignored_keys_and_ignore_flag(tmp_path):
    a = make_run(str(tmp_path), "a", 0, (0.6, 0.2), epochs=3)
    b = make_run(str(tmp_path), "b", 1, (0.7, 0.3), epochs=5, epochs_logged=5)
    assert settings_key(json.load(open(os.path.join(a, "config.json")))) == settings_key(
        {**BASE, "seed": 7, "out": "x", "bf16": True, "precision": {"tf32": False}})
    assert len(sweep([a, b])["groups"]) == 2  # a longer schedule is another setting
    one = sweep([a, b], ignore=["epochs"])["groups"]
    assert len(one) == 1 and one[0]["top1"]["mean"] == pytest.approx(0.65)
    # a run from before train --minutes had no budget: it groups with --minutes 0, not with a budget
    c = make_run(str(tmp_path), "c", 2, (0.8, 0.3), minutes=0.0)
    d = make_run(str(tmp_path), "d", 3, (0.9, 0.3), minutes=40.0)
    groups = sweep([a, c, d])["groups"]
    assert sorted(len(g["runs"]) for g in groups) == [1, 2]
    # budget runs are shown with the epochs they trained (their logs'), not their --epochs cap
    e = make_run(str(tmp_path), "e", 4, (0.9, 0.3), minutes=40.0, epochs=30, epochs_logged=24)
    f = make_run(str(tmp_path), "f", 5, (0.9, 0.3), minutes=40.0, epochs=30, epochs_logged=22)
    assert [g["epochs"] for g in sweep([e, f])["groups"]] == ["22-24"]
    assert [g["epochs"] for g in sweep([a, c])["groups"]] == [3]


def test_a_run_that_validates_on_test_is_scored_by_its_test_evaluation(tmp_path):
    cifar = make_run(str(tmp_path), "c", 0, (0.3, 0.02), ten=(0.25, 0.015), split="test", val_split="test")
    assert read_run(cifar)["results"][TEN_VIEW] == (0.25, 0.015)  # a CIFAR-10 run: its val split is test
    other = make_run(str(tmp_path), "o", 0, (0.3, 0.02), ten=(0.25, 0.015), split="test")
    assert TEN_VIEW not in read_run(other)["results"]  # an ImageNet run's test evaluation is not its val error


def test_a_stale_ten_view_result_is_not_used(tmp_path):
    run = make_run(str(tmp_path), "r", 0, (0.6, 0.2), ten=(0.5, 0.1), ten_epoch=2)
    r = read_run(run)
    assert TEN_VIEW not in r["results"] and r["results"][CENTRE] == (0.6, 0.2)
    assert r["warnings"] == [f"{os.path.join(run, 'eval_val.json')}: ten-view errors of epoch 2, but log.jsonl "
                             "reaches epoch 3; using the centre errors of epoch 3 (evaluate the last checkpoint)"]


def test_a_logged_ten_view_test_of_the_last_epoch_is_the_result_a_one_view_test_is_not(tmp_path):
    def with_test(run, views, epoch=3):
        with open(os.path.join(run, "log.jsonl")) as f:
            lines = [json.loads(line) for line in f.read().splitlines()[:3]]
        lines[epoch - 1].update(val_ten_view_top1_error=0.375, val_ten_view_top5_error=0.125, ten_view_views=views)
        with open(os.path.join(run, "log.jsonl"), "w") as f:
            f.write("".join(json.dumps(line) + "\n" for line in lines))
        return read_run(run)

    newer = with_test(make_run(str(tmp_path), "a", 0, (0.6, 0.2), ten=(0.5, 0.1), ten_epoch=2), 10)
    assert newer["results"][TEN_VIEW] == (0.375, 0.125) and newer["epoch"][TEN_VIEW] == 3 and not newer["warnings"]
    same = with_test(make_run(str(tmp_path), "b", 0, (0.6, 0.2), ten=(0.5, 0.1), ten_epoch=3), 10)
    assert same["results"][TEN_VIEW] == (0.5, 0.1)  # evaluate's own file of the same epoch is kept
    one_view = with_test(make_run(str(tmp_path), "c", 0, (0.6, 0.2)), 1)  # a whole-image CIFAR net's test
    assert TEN_VIEW not in one_view["results"]
    earlier = with_test(make_run(str(tmp_path), "d", 0, (0.6, 0.2)), 10, epoch=2)
    assert TEN_VIEW not in earlier["results"]


def test_a_folder_that_is_not_a_run_is_one_clear_line(runs, tmp_path):
    (tmp_path / "notarun").mkdir()
    with pytest.raises(UsageError, match=r"^--runs .*notarun: not a run folder \(no config.json\); pass folders "
                                         r"written by python -m paper_repro.train --out RUN$"):
        sweep(runs["ref"] + [str(tmp_path / "notarun")])
    empty = make_run(str(tmp_path), "fresh", 0, None, epochs_logged=0)
    with pytest.raises(UsageError, match=r"^--runs .*fresh: no results yet"):
        sweep([empty])
    out = subprocess.run([sys.executable, "-m", "paper_repro.sweep", "--runs", runs["ref"][0],
                          str(tmp_path / "notarun"), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == (f"python -m paper_repro.sweep: error: --runs {tmp_path / 'notarun'}: not a run folder "
                          "(no config.json); pass folders written by python -m paper_repro.train --out RUN\n")


def test_baselines_eval_file_counts_and_a_broken_one_is_reported(tmp_path):
    run = make_run(str(tmp_path), "base", 0, (0.7, 0.3), recipe="torchvision reference")
    with open(os.path.join(run, "eval_val_10view.json"), "w") as f:  # what paper_repro.baseline writes
        json.dump({"epochs_done": 3, "images": 500, "top1_error": 0.65, "top5_error": 0.25, "views": 10}, f)
    with open(os.path.join(run, "eval_x.json"), "w") as f:
        f.write("{not json")
    r = read_run(run)
    assert r["results"] == {CENTRE: (0.7, 0.3), TEN_VIEW: (0.65, 0.25)} and r["epoch"][TEN_VIEW] == 3
    assert r["warnings"] == [f"{os.path.join(run, 'eval_x.json')}: not a python -m paper_repro.evaluate --json "
                             "result; skipped"]

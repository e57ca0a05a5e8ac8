"""The report: the paper's rows beside measurements, deviations, curves, Figures 3 and 4, honest data naming."""
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from paper_repro.core.cli import UsageError
from paper_repro.core.cli import run as run_command
from paper_repro.core.recipe import PAPER, PAPER_CLASSES, RECIPE, RECIPE_VALUES, RECIPES
from paper_repro.data.store import ImageNetStore, dataset_identity
from paper_repro.evaluate import get_args_parser as eval_parser
from paper_repro.evaluate import main as eval_main
from paper_repro.evaluation.colour import colour_specificity, compare_columns, kernel_colour_specificity, random_range
from paper_repro.evaluation.figures import plot_step_losses
from paper_repro.evaluation.run_report import (chance_errors, columns_sentence, config_section, results_section,
                                               results_table, shared_sentence)
from paper_repro.nets.alexnet import AlexNet
from paper_repro.report import PROG, cli, get_args_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH = 1 / 16


def test_colour_specificity_against_numpy():
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.normal(size=(4, 1, 11, 11)), 3, axis=1)
    assert colour_specificity(torch.from_numpy(grey)) == pytest.approx(0, abs=1e-12)
    a = rng.normal(size=(4, 1, 11, 11))
    opponent = np.concatenate([a, -a, np.zeros_like(a)], axis=1)  # colours sum to zero at every pixel
    assert colour_specificity(torch.from_numpy(opponent)) == pytest.approx(1, abs=1e-12)
    k = rng.normal(size=(5, 3, 11, 11)) + rng.normal(size=(5, 1, 11, 11))
    want = []
    for w in k:
        m = (w[0] + w[1] + w[2]) / 3
        want.append(sum(((w[c] - m) ** 2).sum() for c in range(3)) / (w ** 2).sum())
    assert colour_specificity(torch.from_numpy(k).float()) == pytest.approx(np.mean(want), rel=1e-5)


def fake_store(tmp_path, name, classes, year=2012, **flags):
    """A folder with only a manifest, enough for naming the data set."""
    root = tmp_path / name
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({"classes": classes, "settings": {"year": year, **flags},
                                                    "splits": {}}))
    return str(root)


def ilsvrc_like(first="n01440764", last="n15075141"):
    return [first] + ["n%08d" % (2000000 + i) for i in range(998)] + [last]


def test_data_set_named_honestly(tiny_store, tmp_path):
    ident = dataset_identity(tiny_store)
    assert not ident["imagenet"] and ident["name"] == "a generated demo data set (4 classes; not ImageNet)"
    fake = fake_store(tmp_path, "random1000", sorted("n%08d" % (3000000 + i) for i in range(1000)))
    assert not dataset_identity(fake)["imagenet"]  # 1000 classes, but not the ILSVRC-2012 wnids
    assert dataset_identity(fake_store(tmp_path, "demo1000", ilsvrc_like(), demo=True))["imagenet"] is False
    assert dataset_identity(fake_store(tmp_path, "real", ilsvrc_like())) == {
        "name": "ILSVRC-2012", "imagenet": True, "year": 2012}
    assert dataset_identity(fake_store(tmp_path, "r2010", ilsvrc_like(), year=2010))["name"] == "ILSVRC-2010"
    assert not dataset_identity(fake_store(tmp_path, "ten", ilsvrc_like()[:10]))["imagenet"]


def test_measured_cells_only_beside_matching_paper_rows(tmp_path):
    real12 = fake_store(tmp_path, "real12", ilsvrc_like())
    real10 = fake_store(tmp_path, "real10", ilsvrc_like(), year=2010)
    demo = fake_store(tmp_path, "demo", ilsvrc_like()[:10])

    def ev(data, split, nets, t1, t5, views=10, classes=1000):
        return {"data": data, "split": split, "views": views, "top1_error": t1, "top5_error": t5, "images": 50,
                "store_classes": classes,
                "checkpoints": [{"path": f"/runs/r{i}/checkpoint.pt"} for i in range(nets)]}

    lines = results_table([ev(real12, "val", 1, 0.41, 0.19), ev(real12, "val", 5, 0.382, 0.165),
                           ev(real10, "test", 1, 0.376, 0.171, views=1), ev(demo, "val", 1, 0.1, 0.0, classes=10)],
                          [], None, None)
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert rows[0][:9] == ["ILSVRC-2010", "test", "1 CNN", "37.5", "17.0", "37.60", "17.10", "1",
                           "r0/checkpoint.pt (1 net)"]
    assert rows[1][:8] == ["ILSVRC-2012", "val", "1 CNN", "40.7", "18.2", "41.00", "19.00", "10"]
    assert rows[2][:7] == ["ILSVRC-2012", "val", "5 CNNs", "38.1", "16.4", "38.20", "16.50"]
    assert rows[2][8].endswith("(5 nets)")
    assert rows[3][:7] == ["ILSVRC-2012", "test", "5 CNNs", "", "16.4", "", ""]  # nothing measured there
    assert rows[4][0] == "an image folder store of 10 classes (not ILSVRC: ILSVRC has 1000 classes)"
    assert rows[4][3:7] == ["(no paper figure)", "", "10.00", "0.00"]
    assert len(rows) == 5


def make_run(run, store, epochs=3, drop_after=2, **config):
    """A run folder written by hand in train.py's documented format."""
    torch.manual_seed(0)
    net = AlexNet(num_classes=4, devices=("cpu",), width=WIDTH)
    os.makedirs(run)
    cfg = {"data": store, "model_config": net.config(), "batch_size": 16, "lr": 0.01, "momentum": 0.9,
           "weight_decay": 0.0005, "lr_schedule": "plateau", "lr_max_drops": 3, "epochs": 90,
           "colour_noise": True, "colour_noise_scale": "sqrt", "colour_noise_std": 0.1, "bf16": True,
           "channels_last": False, **net.config(), **config}
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump(cfg, f)
    with open(os.path.join(run, "log.jsonl"), "w") as f:
        for e in range(1, epochs + 1):
            lr = 0.01 if e <= drop_after else 0.001
            f.write(json.dumps({"epoch": e, "lr": lr, "train_loss": 1.4 - 0.1 * e, "train_top1_error": 0.8 - 0.1 * e,
                                "val_top1_error": 0.7 - 0.1 * e, "val_top5_error": 0.0, "images_per_s": 10.0,
                                "seconds": 1.0, "lr_dropped": e == drop_after}) + "\n")
    torch.save({"model": net.state_dict(), "model_config": net.config(), "epoch": epochs, "step": 0},
               os.path.join(run, "checkpoint.pt"))
    return net


def check_report(out, net=None):
    """report.md exists, every figure it links exists and is a PNG; return the markdown."""
    md = open(os.path.join(out, "report.md")).read()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    figures = ["conv1_kernels.png", "curves.png", "neighbours.png"]
    assert sorted(links) in (figures, sorted(figures + ["steps.png"]))  # steps.png: a run that wrote steps.jsonl
    for link in links:
        with open(os.path.join(out, link), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(os.path.join(out, link)) > 5000
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    for value in ("| 37.5 | 17.0 |", "| 40.7 | 18.2 |", "| 38.1 | 16.4 |", "|  | 16.4 |"):
        assert value in md
    # a demo set is never called ImageNet: the word appears only negated
    assert "ImageNet" not in md.replace("not ImageNet", "").replace("not identified as ImageNet", "")
    if net is not None:  # Figure 3's measure is printed for each half of conv1
        w = net.state_dict()["conv1.weight"]
        half = w.shape[0] // 2
        assert f"| GPU 1 (column 0) | {colour_specificity(w[:half]):.3f} |" in md
        assert f"| GPU 2 (column 1) | {colour_specificity(w[half:]):.3f} |" in md
    return md


def test_report_from_a_hand_built_run(tiny_store, tmp_path):
    run, out = str(tmp_path / "run"), str(tmp_path / "report")
    net = make_run(run, tiny_store)
    ev = str(tmp_path / "eval.json")
    eval_main(eval_parser().parse_args(["--data", tiny_store, "--split", "val", "--checkpoint",
                                        os.path.join(run, "checkpoint.pt"), "--gpus", "cpu", "--json", ev,
                                        "--workers", "0", "--no-progress"]))
    main(get_args_parser().parse_args(["--run", run, "--eval", ev, "--out", out, "--gpus", "cpu", "--pool", "100",
                                       "--queries", "3", "--no-progress"]))
    md = check_report(out, net)
    res = json.load(open(ev))
    assert (f"| a generated demo data set (4 classes; not ImageNet) | val | 1 CNN | (no paper figure) |  | "
            f"{100 * res['top1_error']:.2f} | 0.00 | 10 | run/checkpoint.pt | 16 |") in md
    assert "| ILSVRC-2012 | val | 1 CNN | 40.7 | 18.2 |  |  |  |  |  |" in md  # no measured cells there
    assert "learning rate 0.01 -> 0.001; dropped (/10) after epoch 2 (dashed red line)." in md
    assert "| net width multiplier | 1 | 1 | 0.0625 | **DEVIATION** |" in md
    assert "| batch size | 128 | 128 | 16 | **DEVIATION** |" in md
    assert "| bf16 autocast (paper: fp32) | off | off | on | **DEVIATION** |" in md
    assert "| momentum | 0.9 | 0.9 | 0.9 | as both |" in md
    assert "Searched: all 48 training images." in md


def test_report_from_a_tiny_real_run(tiny_store, tmp_path):
    run, out, ev = str(tmp_path / "run"), str(tmp_path / "report"), str(tmp_path / "eval.json")

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]

    cli("paper_repro.train", "--data", tiny_store, "--out", run, "--gpus", "cpu", "--epochs", "2",
        "--batch-size", "16", "--width", str(WIDTH), "--workers", "0", "--no-progress",
        "--lr-schedule", "step", "--lr-drop-epochs", "1")
    cli("paper_repro.evaluate", "--data", tiny_store, "--split", "val", "--checkpoint",
        os.path.join(run, "checkpoint.pt"), "--gpus", "cpu", "--views", "1", "--json", ev, "--workers", "0",
        "--no-progress")
    cli("paper_repro.report", "--run", run, "--eval", ev, "--out", out, "--gpus", "cpu", "--no-progress",
        "--pool", "16", "--queries", "3")
    md = check_report(out)
    assert "dropped (/10) after epoch 1 (dashed red line)." in md
    assert "| learning-rate schedule | `released` | `plateau` | `step` | **DEVIATION** |" in md
    assert "Recipe: `released-2012`, the authors' released 2012 code" in md
    assert "| same-map normalisation after conv2's (cnorm2) | on | off | on | as released-2012 |" in md
    assert "| 1 | run/checkpoint.pt | 16 |" in md  # the 1-view evaluation of the run's checkpoint
    assert "Searched: 16 of the 48 training images" in md
    assert "3 validation images" in md
    steps = [json.loads(line) for line in open(os.path.join(run, "steps.jsonl"))]
    assert [s["step"] for s in steps] == [3, 6] and steps[0]["epoch"] == 1 and steps[1]["epoch"] == 2  # epoch ends
    assert "The training loss at every read-back (2 of them, up to step 6); the dotted line is ln(4)" in md
    assert os.path.getsize(os.path.join(out, "steps.png")) > 1000


# ----------------------------------------------------------------------------- the recipe, one place

def changed(value):
    """A value unlike the paper's, of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    return value + "-other"


def deviation_lines(config):
    md = config_section(config)
    return md[2], [line for line in md if "**DEVIATION**" in line]


def test_every_recipe_key_is_one_deviation_line():
    for recipe in RECIPES:
        paper = {**RECIPE_VALUES[recipe], "num_classes": PAPER_CLASSES, "recipe": recipe}
        summary, lines = deviation_lines(paper)
        assert summary.startswith(f"Recipe: `{recipe}`, ") and lines == []
        assert summary.endswith("0 settings differ from both the released code and the paper's text."), summary
    paper = {**PAPER, "num_classes": PAPER_CLASSES, "recipe": "released-2012"}
    for key in [*RECIPE, "num_classes"]:
        what = RECIPE[key][2] if key in RECIPE else "classes"
        text = RECIPE_VALUES["paper-text"].get(key, PAPER_CLASSES)
        if key in RECIPE and text != paper[key]:
            # the paper's text: no deviation, and the row says which recipe the value is
            md = config_section({**paper, key: text})
            assert not [line for line in md if "**DEVIATION**" in line], key
            assert any(line.startswith(f"| {what} | ") and line.endswith("| as paper-text |") for line in md), key
            if isinstance(text, bool):
                continue  # a switch has no third value
        value = changed(paper[key]) if not isinstance(paper[key], str) else paper[key] + "-other"
        summary, lines = deviation_lines({**paper, key: value})
        assert len(lines) == 1 and lines[0].startswith(f"| {what} | "), (key, lines)
        assert "1 setting differs from both the released code and the paper's text: " + what in summary, (key, summary)
    # a value recorded only in model_config counts too (older runs wrote the net's settings there)
    nested = {k: v for k, v in paper.items() if k != "init_std"}
    _, lines = deviation_lines({**nested, "model_config": {"init_std": 0.02}})
    assert lines == ["| std of the N(0, std) weight init (conv1, conv2, fc6-fc8) | 0.01 | 0.01 | 0.02 | **DEVIATION** |"]


def test_a_run_from_before_the_recipe_keys_reads_as_what_it_ran():
    # config.json of a run written before the released recipe existed: no recipe, no new keys
    old = {k: v for k, v in RECIPE_VALUES["paper-text"].items() if k in ("lr_schedule", "epochs", "init_std")}
    md = config_section(old)
    assert md[2].startswith("Recipe: `before-released-source`, the paper's text as this project read it")
    assert "| dropout's scaling (test: outputs x0.5 at test time) | `test` | `test` | `inverted` | **DEVIATION** |" in md


# ----------------------------------------------------------------------------- chance level

def test_chance_level_is_stated_beside_the_results():
    for classes in (1000, 10, 4):
        t1, t5 = chance_errors(classes)
        assert (t1, t5) == (pytest.approx((classes - 1) / classes), pytest.approx(max(0, classes - 5) / classes))
    assert ("Chance level with 10 classes (a random guess): top-1 error 90.0 %, top-5 error 50.0 %. A measured "
            "error near these says the net has learnt nothing.") in results_section([], [], None, 10)
    assert ("Chance level with 1000 classes (a random guess): top-1 error 99.9 %, top-5 error 99.5 %. A measured "
            "error near these says the net has learnt nothing.") in results_section([], [], None, 1000)


# ----------------------------------------------------------------------------- Figure 3: what a difference means

def kernels(count, grey, colour, seed):
    """count x 3 x 11 x 11 kernels: a shared grey part plus independent per-channel noise, in given amounts."""
    g = torch.Generator().manual_seed(seed)
    return grey * torch.randn(count, 1, 11, 11, generator=g).repeat(1, 3, 1, 1) + \
        colour * torch.randn(count, 3, 11, 11, generator=g)


def test_random_range_matches_the_beta_distribution():
    # For i.i.d. N(0, 1) weights, a kernel's chromatic energy is chi2(2n) and its grey energy an independent
    # chi2(n) (n = 121 pixels), so its measure is Beta(n, n/2): an independent way to the same range.
    rng = np.random.default_rng(1)
    means = rng.beta(121, 60.5, size=(20000, 12)).mean(axis=1)
    lo, hi = random_range(12, (3, 11, 11))
    assert lo == pytest.approx(np.quantile(means, 0.005), abs=0.003)
    assert hi == pytest.approx(np.quantile(means, 0.995), abs=0.003)


def test_difference_threshold_is_the_exact_permutation_bound_for_few_kernels():
    a, b = kernels(3, 1.0, 0.4, seed=1), kernels(3, 1.0, 0.9, seed=2)
    values = np.concatenate([kernel_colour_specificity(a).numpy(), kernel_colour_specificity(b).numpy()])
    diffs = [abs(values[list(s)].mean() - np.delete(values, list(s)).mean())
             for s in itertools.combinations(range(6), 3)]
    # Each of the 20 splits has 5 % of the mass and the largest |difference| comes from two of them (a
    # split and its mirror), so the 99th percentile of the shuffles is the largest difference itself.
    assert compare_columns(a, b)["threshold"] == pytest.approx(max(diffs), rel=1e-12)


def test_figure3_sentence_says_when_a_difference_means_nothing():
    random_a, random_b = kernels(12, 0.0, 1.0, seed=3), kernels(12, 0.0, 1.0, seed=4)
    c = compare_columns(random_a, random_b)
    lo, hi = random_range(12, (3, 11, 11))
    assert c["verdict"] == "random" and c["places"] == ["inside", "inside"]
    text = columns_sentence(random_a, random_b)
    assert text.startswith(f"Both columns sit at the level of random weights: {c['a']:.3f} and {c['b']:.3f} lie "
                           f"inside {lo:.3f}-{hi:.3f}, the range that holds 99% of the measure for a column of 12 "
                           "random N(0, 1) kernels of 3x11x11 (2000 simulated columns, seed 0). The difference "
                           "between them means nothing")
    # both columns well below the random level, drawn alike: a difference within noise
    grey_a, grey_b = kernels(12, 1.0, 0.5, seed=5), kernels(12, 1.0, 0.5, seed=6)
    c = compare_columns(grey_a, grey_b)
    assert c["verdict"] == "noise" and c["places"] == ["below", "below"]
    assert abs(c["a"] - c["b"]) <= c["threshold"]
    text = columns_sentence(grey_a, grey_b)
    assert text.startswith(f"Column 0 measures {c['a']:.3f} and column 1 {c['b']:.3f}: the difference "
                           f"({abs(c['a'] - c['b']):.3f}) is within noise and means nothing. A difference counts only "
                           f"above {c['threshold']:.3f}, the 99th percentile of the difference when the 24 kernels are "
                           "shuffled at random between two columns of 12 and 12 (2000 shuffles, seed 0)")
    assert "less colour-specific" not in text
    # one column colour-agnostic, the other colour-specific: the paper's kind of difference
    agnostic, specific = kernels(12, 1.0, 0.2, seed=7), kernels(12, 0.05, 1.0, seed=8)
    c = compare_columns(agnostic, specific)
    assert c["verdict"] == "different" and c["places"][0] == "below" and c["p"] < 0.01
    text = columns_sentence(agnostic, specific)
    assert text.startswith(f"Here column 0 is less colour-specific than column 1 ({c['a']:.3f} vs {c['b']:.3f}): "
                           f"the difference exceeds {c['threshold']:.3f}")
    assert f"Random weights measure {lo:.3f}-{hi:.3f}, the range that holds 99% " in text
    assert "column 0 is below it and column 1 is " in text and "means nothing" not in text


# ----------------------------------------------------------------------------- real data sets, errors

def test_tiny_imagenet_store_is_named_and_its_classes_worded(tiny_store, tmp_path):
    store = str(tmp_path / "tiny")
    shutil.copytree(tiny_store, store)
    with open(os.path.join(store, "manifest.json")) as f:
        manifest = json.load(f)
    words = ["goldfish, Carassius auratus", "European fire salamander, Salamandra salamandra", "bullfrog",
             "tailed frog"]
    settings = {k: v for k, v in manifest["settings"].items() if k != "demo"}
    manifest.update(class_words=words, settings={**settings, "source_format": "tiny-imagenet"})
    with open(os.path.join(store, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    run, out = str(tmp_path / "run"), str(tmp_path / "report")
    make_run(run, store)
    main(get_args_parser().parse_args(["--run", run, "--out", out, "--gpus", "cpu", "--pool", "12", "--queries", "2",
                                       "--no-progress"]))
    md = open(os.path.join(out, "report.md")).read()
    assert "**Tiny ImageNet (4 classes of 64x64 photographs; not ILSVRC, the paper's data)**" in md
    assert "It is not the paper's data (ILSVRC-2010 or ILSVRC-2012)" in md
    classes, labels = manifest["classes"], ImageNetStore(store, "val").labels
    names = [w.split(",")[0] for w in words]  # the first of each class's words, its id beside it
    assert (f" Query classes: val 0: {names[labels[0]]} ({classes[labels[0]]}); val 15: {names[labels[15]]} "
            f"({classes[labels[15]]}).") in md
    assert " Classes: goldfish, European fire salamander, bullfrog, tailed frog." in md
    assert "ILSVRC-2012 | val | 1 CNN | 40.7 | 18.2 |  |  |" in md  # still no measured cells beside the paper


def test_bad_input_is_one_line_and_exit_status_2(tiny_store, tmp_path, capsys):
    run = str(tmp_path / "run")
    make_run(run, tiny_store)
    out = str(tmp_path / "out")
    log, config = os.path.join(run, "log.jsonl"), os.path.join(run, "config.json")
    cases = {
        ("--run", str(tmp_path / "nowhere")): f"--run {tmp_path / 'nowhere'}: no config.json; pass a folder written "
                                              "by python -m paper_repro.train",
        ("--run", run, "--queries", "0"): "--queries 0: must be an integer >= 1",
        ("--run", run, "--workers", "-1"): "--workers -1: must be an integer >= 0",
        ("--run", run, "--eval", log): f"--eval {log}: not JSON",
        ("--run", run, "--eval", config): f"--eval {config}: not a python -m paper_repro.evaluate result (no "
                                          "top1_error, top5_error, split, views, checkpoints)",
    }
    for argv, message in cases.items():
        with pytest.raises(UsageError) as e:
            cli([*argv, "--out", out, "--gpus", "cpu", "--no-progress"])
        assert str(e.value).startswith(message)
    with open(os.path.join(run, "checkpoint.pt"), "wb") as f:
        f.write(b"not a checkpoint at all")
    with pytest.raises(SystemExit) as e:  # the command's own path: cli.run prints one line and exits 2
        run_command(PROG, cli, ["--run", run, "--out", out, "--gpus", "cpu"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith(f"python -m paper_repro.report: error: checkpoint {os.path.join(run, 'checkpoint.pt')} "
                          "is not a readable checkpoint (truncated or corrupt?)")
    assert err.count("\n") == 1 and "weights_only=False" not in err
    assert not os.path.exists(out)


def test_help_names_every_option_and_its_default():
    for parser in (get_args_parser(), eval_parser()):
        for action in parser._actions:
            if action.dest == "help":
                continue
            text = action.help % {**vars(action), "prog": parser.prog} if action.help else ""
            assert "default" in text or "(required)" in text, (parser.prog, action.option_strings, text)
            if isinstance(action.default, (int, float, str)) and not isinstance(action.default, bool):
                assert f"default: {action.default}" in text or f"= {action.default}" in text, text


def _folder_store(tiny_store, tmp_path, **manifest_changes):
    """The tiny store as a plain-folder ImageNet subset would be: no demo flag, class_words = the wnids."""
    store = str(tmp_path / "folders")
    shutil.copytree(tiny_store, store)
    with open(os.path.join(store, "manifest.json")) as f:
        manifest = json.load(f)
    settings = {k: v for k, v in manifest["settings"].items() if k != "demo"}
    manifest.update(class_words=list(manifest["classes"]), settings={**settings, "source_format": "folders"},
                    **manifest_changes)
    with open(os.path.join(store, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return store, manifest["classes"], ImageNetStore(store, "val").labels


def test_figure4_names_classes_in_words_where_the_store_has_them_else_its_ids_once(tiny_store, tmp_path, capsys):
    store, classes, labels = _folder_store(tiny_store, tmp_path)
    run = str(tmp_path / "run")
    make_run(run, store, drop_after=99)
    argv = ["--run", run, "--gpus", "cpu", "--pool", "12", "--queries", "2", "--no-progress"]
    main(get_args_parser().parse_args(argv + ["--out", str(tmp_path / "ids")]))
    assert capsys.readouterr().out.splitlines() == [
        f"report {run}: 3 epochs logged, 0 evaluations | Figure 4 on cpu (--gpus cpu) | into {tmp_path / 'ids'}",
        f"wrote {tmp_path / 'ids' / 'report.md'}"]
    md = open(tmp_path / "ids" / "report.md").read()
    assert f" Query classes: val 0: {classes[labels[0]]}; val 15: {classes[labels[15]]}." in md
    assert f"({classes[labels[0]]})" not in md  # never "n0... (n0...)"
    assert "learning rate 0.01 -> 0.01; no drop. Validation errors" in md and "dashed red" not in md
    names = ["tench", "goldfish", "great white shark", "tiger shark"]  # what the build records from the ILSVRC table
    store_named, classes, labels = _folder_store(tiny_store, tmp_path / "named", class_names=names)
    main(get_args_parser().parse_args(argv + ["--data", store_named, "--out", str(tmp_path / "words")]))
    md = open(tmp_path / "words" / "report.md").read()
    assert (f" Query classes: val 0: {names[labels[0]]} ({classes[labels[0]]}); val 15: {names[labels[15]]} "
            f"({classes[labels[15]]}).") in md


def test_one_neighbour_shares_several_share():
    assert shared_sentence(1, 30) == "1 of 30 neighbours shares the query's class."
    assert shared_sentence(0, 30) == "0 of 30 neighbours share the query's class."
    assert shared_sentence(12, 30) == "12 of 30 neighbours share the query's class."


def test_the_loss_per_step_ends_at_the_runs_last_step(tmp_path):
    steps = [{"step": s, "loss": 4.6 - s / 100} for s in range(10, 149, 10)] + [{"step": 148, "loss": 3.1}]
    short = plot_step_losses({"run": steps}, math.log(100), str(tmp_path / "a.png"), stall_step=200)
    plain = plot_step_losses({"run": steps}, math.log(100), str(tmp_path / "b.png"))
    assert short == plain and short[1] < 160  # matplotlib's 5 % margin past step 148, not out to the stall check
    reached = plot_step_losses({"run": steps}, math.log(100), str(tmp_path / "c.png"), stall_step=100)
    assert reached == plain  # a marker inside the run changes nothing on the axis


def test_ten_view_tests_in_the_log_are_a_table_row_and_points_on_the_curves(tmp_path, monkeypatch):
    from paper_repro.evaluation import figures
    log = [{"epoch": 1, "lr": 0.01, "val_top1_error": 0.5, "val_top5_error": 0.25},
           {"epoch": 2, "lr": 0.01, "val_top1_error": 0.4375, "val_top5_error": 0.125,
            "val_ten_view_top1_error": 0.375, "val_ten_view_top5_error": 0.0625, "ten_view_views": 10},
           {"epoch": 3, "lr": 0.01, "val_top1_error": 0.3125, "val_top5_error": 0.125}]
    rows = [r for r in results_table([], log, None, 4) if "training log" in r]
    assert len(rows) == 2
    assert rows[0].endswith("| 31.25 | 12.50 | 1 | training log, epoch 3 |  |")
    assert rows[1].endswith("| 37.50 | 6.25 | 10 | training log, epoch 2 (ten-view test) |  |")
    saved = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.append(fig))
    figures.plot_curves(log, str(tmp_path / "curves.png"))
    (fig,) = saved
    lines = {(ax.get_title(), line.get_label()): (list(line.get_xdata()), list(line.get_ydata()))
             for ax in fig.axes for line in ax.get_lines()}
    assert lines[("top-1 error (%)", "val (ten views)")] == ([2], [37.5])
    assert lines[("top-5 error (%)", "val (ten views)")] == ([2], [6.25])
    assert lines[("top-1 error (%)", "val (centre patch)")] == ([1, 2, 3], [50.0, 43.75, 31.25])
    assert ("top-1 error (%)", "train") not in lines  # no training errors in this log: no line
    from paper_repro.evaluation.run_report import _curves_section
    caption = "centre-patch (1 view) errors, and at the epochs marked \"ten views\" also the paper's ten-view test"
    assert caption in "\n".join(_curves_section(log, str(tmp_path)))
    assert caption not in "\n".join(_curves_section(log[:1], str(tmp_path)))


def test_a_budget_runs_curves_say_what_its_budget_planned(tmp_path):
    from paper_repro.evaluation.run_report import _curves_section
    log = [{"epoch": e, "lr": 0.01, "val_top1_error": 0.5, "val_top5_error": 0.25, "planned_epochs": p}
           for e, p in ((1, 30), (2, 21), (3, 23), (4, 22))]
    text = "\n".join(_curves_section(log, str(tmp_path)))
    assert ("A `train --minutes` budget set the run's length after every epoch from the time left: planned 21-30 "
            "epochs, 22 at the end.") in text
    assert "--minutes" not in "\n".join(_curves_section([{k: v for k, v in e.items() if k != "planned_epochs"}
                                                          for e in log], str(tmp_path)))

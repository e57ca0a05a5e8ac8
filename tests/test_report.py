"""The report: the paper's rows beside measurements, deviations, curves, Figures 3 and 4, honest data naming."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from paper_repro.evaluate import get_args_parser as eval_parser
from paper_repro.evaluate import main as eval_main
from paper_repro.report import colour_specificity, dataset_identity, get_args_parser, main, results_table

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
    assert rows[4][0] == "a 10-class data set (not ImageNet: ILSVRC has 1000 classes)"
    assert rows[4][3:7] == ["(no paper figure)", "", "10.00", "0.00"]
    assert len(rows) == 5


def make_run(run, store, epochs=3, drop_after=2, **config):
    """A run folder written by hand in train.py's documented format."""
    from paper_repro.model import AlexNet

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
    assert sorted(links) == ["conv1_kernels.png", "curves.png", "neighbours.png"]
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
    assert "drops after epoch: 2 (dashed red lines)" in md
    assert "| net width multiplier | 1 | 0.0625 | **DEVIATION** |" in md
    assert "| batch size | 128 | 16 | **DEVIATION** |" in md
    assert "| bf16 autocast (paper: fp32) | off | on | **DEVIATION** |" in md
    assert "| momentum | 0.9 | 0.9 | as the paper |" in md
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
    assert "drops after epoch: 1 (dashed red lines)" in md
    assert "| learning-rate schedule | `plateau` | `step` | **DEVIATION** |" in md
    assert "| 1 | run/checkpoint.pt | 16 |" in md  # the 1-view evaluation of the run's checkpoint
    assert "Searched: 16 of the 48 training images" in md
    assert "3 validation images" in md

"""The CIFAR-10 commands end to end: train with each config, evaluate with its own views, exact resume, Figure 1."""
import json
import os

import numpy as np
import pytest
import torch
from test_cifar_data import make_cifar

from data_prep.build_imagenet import build
from paper_repro import cifar_fig1
from paper_repro import evaluate as evaluate_cmd
from paper_repro.core.cli import UsageError
from paper_repro.nets.checkpoint import load_checkpoint
from paper_repro.nets.cifar_tutorial import TutorialAlexNet
from paper_repro.train import main
from paper_repro.training.build import make_transforms
from paper_repro.training.settings import parse_args

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ["--workers", "0", "--no-progress", "--batch-size", "16"]


@pytest.fixture(scope="module")
def cifar_store(tmp_path_factory):
    """A CIFAR-10 store from 5 x 16 training and 24 test images in the official pickle format."""
    base = tmp_path_factory.mktemp("cifar")
    source, _ = make_cifar(base / "src", per_batch=16, test=24)
    build(source, str(base / "store"), workers=1, progress=False)
    return str(base / "store")


def _train(store, run, *extra):
    return main(parse_args(["--data", store, "--out", str(run), *FAST, *extra]))


def _log(run):
    with open(os.path.join(run, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("config, net, views", [
    ("cifar10_conv_local", "cifar_conv_local", 10), ("cifar10_conv_local_rnorm", "cifar_conv_local", 10),
    ("cifar10_fig1_tanh", "cifar_fig1", 1), ("cifar10_tutorial", "cifar_tutorial", 10),
    ("cifar10_tutorial_adam", "cifar_tutorial", 1)])
def test_each_config_trains_and_evaluates_with_its_own_views(cifar_store, tmp_path, config, net, views):
    run = tmp_path / "run"
    record = _train(cifar_store, run, "--config", config, "--epochs", "1")
    assert 0 <= record["train_top1_error"] <= 1 and record["val_images"] == 24 and record["train_images"] == 80
    with open(run / "config.json") as f:
        saved = json.load(f)
    assert saved["model_config"]["net"] == net and saved["val_split"] == "test"
    out = tmp_path / "eval.json"
    result = evaluate_cmd.cli(["--data", cifar_store, "--split", "test", "--checkpoint", str(run / "checkpoint.pt"),
                               "--gpus", "cpu", "--json", str(out), "--workers", "0", "--no-progress"])
    with open(out) as f:
        written = json.load(f)
    assert written["views"] == views and written["top1_error"] == result["top1_error"]
    assert written["images"] == 24 and written["dataset"].startswith("CIFAR-10")


def test_per_layer_run_resumes_exactly_across_an_epsw_drop(cifar_store, tmp_path):
    args = ["--config", "cifar10_conv_local", "--lr-drop-epochs", "1", "--seed", "3", "--lr", "0.01"]
    _train(cifar_store, tmp_path / "whole", *args, "--epochs", "2")
    _train(cifar_store, tmp_path / "split", *args, "--epochs", "1")
    _train(cifar_store, tmp_path / "split", *args, "--epochs", "2", "--resume")
    a, b = (load_checkpoint(tmp_path / r / "checkpoint.pt") for r in ("whole", "split"))
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    groups = {(g["layer"], g["kind"]): g["lr"] for g in a["optimizer"]["param_groups"]}
    assert groups[("layers.local3", "weight")] == pytest.approx(0.001)
    assert groups[("layers.local3", "bias")] == pytest.approx(0.02)  # epsB = 2 lr, not lowered
    assert [r["lr"] for r in _log(tmp_path / "whole")] == [0.01, pytest.approx(0.001)]
    keys = ("epoch", "lr", "train_loss", "train_top1_error", "val_top1_error", "val_loss", "steps")
    assert [[r[k] for k in keys] for r in _log(tmp_path / "whole")] == [[r[k] for k in keys]
                                                                         for r in _log(tmp_path / "split")]


def test_an_adam_run_resumes_exactly_and_keeps_its_optimizer(cifar_store, tmp_path):
    args = ["--config", "cifar10_tutorial_adam", "--seed", "4", "--width", "0.25"]
    _train(cifar_store, tmp_path / "whole", *args, "--epochs", "2")
    _train(cifar_store, tmp_path / "split", *args, "--epochs", "1")
    _train(cifar_store, tmp_path / "split", *args, "--epochs", "2", "--resume")
    a, b = (load_checkpoint(tmp_path / r / "checkpoint.pt") for r in ("whole", "split"))
    assert a["optimizer"]["step"] == b["optimizer"]["step"] == 10  # 80 images, batch 16, 2 epochs
    for part in ("model", ):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), k
    for moment in ("exp_avg", "exp_avg_sq"):
        assert a["optimizer"][moment].keys() == a["model"].keys()
        for k in a["optimizer"][moment]:
            assert torch.equal(a["optimizer"][moment][k], b["optimizer"][moment][k]), (moment, k)
    assert a["optimizer"]["exp_avg_sq"]["layers.fc8.weight"].abs().sum() > 0  # the moments were saved, not zeros
    keys = ("epoch", "lr", "train_loss", "train_top1_error", "val_top1_error", "val_loss", "steps")
    assert [[r[k] for k in keys] for r in _log(tmp_path / "whole")] == [[r[k] for k in keys]
                                                                         for r in _log(tmp_path / "split")]
    with pytest.raises(UsageError, match="--optimizer paper-sgd differs from this run's adam"):
        _train(cifar_store, tmp_path / "split", *args, "--epochs", "3", "--resume", "--optimizer", "paper-sgd")


def test_a_cifar_net_needs_a_cifar_store_and_the_val_split_is_named(cifar_store, tiny_store, tmp_path):
    with pytest.raises(UsageError, match="has no 'val' split \\(it has: train, test\\)"):
        _train(cifar_store, tmp_path / "a", "--net", "cifar_conv_local", "--gpus", "cpu")
    with pytest.raises(UsageError, match="--net cifar_fig1: input_size must be between 12 and 32"):
        _train(cifar_store, tmp_path / "b", "--config", "cifar10_fig1_relu", "--cifar-input", "convnet-crops",
               "--cifar-input-size", "40")
    settings = parse_args(["--data", "S", "--out", "R", "--config", "cifar10_tutorial"])
    with pytest.raises(UsageError, match="--net cifar_tutorial takes 28x28 inputs; the store's images are 16x16"):
        make_transforms(settings, {"mean_image": np.zeros((16, 16, 3), np.float32)}, TutorialAlexNet())


def _write_log(run, errors):
    os.makedirs(run, exist_ok=True)
    with open(os.path.join(run, "log.jsonl"), "w") as f:
        for epoch, e in enumerate(errors, 1):
            f.write(json.dumps({"epoch": epoch, "train_top1_error": e}) + "\n")


def test_fig1_reads_epochs_to_25_percent_and_the_ratio(tmp_path, capsys):
    _write_log(tmp_path / "relu", [0.6, 0.4, 0.26, 0.25, 0.2])
    _write_log(tmp_path / "tanh", [0.8, 0.7, 0.5, 0.4, 0.35, 0.3, 0.27, 0.26, 0.249, 0.2])
    result = cifar_fig1.main(["--relu", str(tmp_path / "relu"), "--tanh", str(tmp_path / "tanh"),
                              "--plot", str(tmp_path / "fig1.png"), "--json", str(tmp_path / "fig1.json")])
    assert (result["relu"]["epochs_to_target"], result["tanh"]["epochs_to_target"], result["ratio"]) == (4, 9, 2.25)
    out = capsys.readouterr().out
    assert "ReLU: 25 % training error after epoch 4" in out and "tanh: 25 % training error after epoch 9" in out
    assert "ratio tanh / ReLU: 2.25 (the paper: about 6)" in out
    assert os.path.getsize(tmp_path / "fig1.png") > 1000
    _write_log(tmp_path / "slow", [0.9, 0.8])
    result = cifar_fig1.main(["--relu", str(tmp_path / "relu"), "--tanh", str(tmp_path / "slow")])
    assert result["tanh"]["epochs_to_target"] is None and result["ratio"] is None
    assert "tanh: did not reach 25 % training error in 2 epochs (lowest 0.800)" in capsys.readouterr().out
    assert np.isfinite(result["relu"]["lowest"])


def test_a_run_stops_at_its_training_error_target(cifar_store, tmp_path, capsys):
    run = tmp_path / "run"
    record = _train(cifar_store, run, "--config", "cifar10_fig1_relu", "--epochs", "3", "--stop-at-train-error", "0.99")
    assert [r["epoch"] for r in _log(run)] == [1] and record["reached_target"] and record["stopped"]
    out = capsys.readouterr().out
    assert " | stop: training error at most 0.99\n" in out
    assert f"train {run}: done after epoch 1 (training error at most 0.99) (epochs done: 1, " in out
    assert load_checkpoint(run / "checkpoint.pt")["finished"]
    with pytest.raises(UsageError, match=r"^--stop-at-train-error 25.0: must be a fraction in \(0, 1\), such as 0.25$"):
        _train(cifar_store, tmp_path / "b", "--config", "cifar10_fig1_relu", "--stop-at-train-error", "25")


def test_fig1_picks_each_units_fastest_learning_rate(tmp_path, capsys):
    for name, lr, errors in (("r1", 0.001, [0.6, 0.4, 0.3, 0.26, 0.24]), ("r2", 0.002, [0.5, 0.3, 0.24, 0.2]),
                             ("r4", 0.004, [0.5, 0.35, 0.245, 0.21]), ("t1", 0.001, [0.8, 0.6, 0.5]),
                             ("t2", 0.002, [0.7, 0.5, 0.26, 0.25])):
        _write_log(tmp_path / name, errors)
        with open(tmp_path / name / "config.json", "w") as f:
            json.dump({"lr": lr}, f)
    runs = {name: str(tmp_path / name) for name in ("r1", "r2", "r4", "t1", "t2")}
    result = cifar_fig1.main(["--relu", runs["r1"], runs["r4"], runs["r2"], "--tanh", runs["t1"], runs["t2"],
                              "--json", str(tmp_path / "fig1.json")])
    out = capsys.readouterr().out
    # r4 and r2 both reach 25 % after epoch 3: the tie goes to the lower lowest error (r2's 0.2)
    assert result["relu"]["chosen"] == runs["r2"] and result["relu"]["lr"] == 0.002
    assert result["tanh"]["chosen"] == runs["t2"] and result["ratio"] == 4 / 3
    assert f"ReLU lr 0.001: 25 % after epoch 5  ({runs['r1']})\n" in out
    assert f"ReLU lr 0.002: 25 % after epoch 3  ({runs['r2']})  <- fastest\n" in out
    assert f"tanh lr 0.001: not 25 % in 3 epochs (lowest 0.500)  ({runs['t1']})\n" in out
    assert "ReLU: 25 % training error after epoch 3 (lr 0.002)\ntanh: 25 % training error after epoch 4 (lr 0.002)" in out
    with open(tmp_path / "fig1.json") as f:
        assert [r["epochs_to_target"] for r in json.load(f)["relu"]["runs"]] == [5, 3, 3]


def test_the_readmes_cifar_fig1_commands_parse():
    import re
    import shlex
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")) as f:
        lines = [m for m in re.findall(r"^python -m paper_repro\.cifar_fig1 (.*?)(?:\s+#.*)?$", f.read(), flags=re.M)]
    assert lines
    for line in lines:
        cifar_fig1.get_args_parser().parse_args(shlex.split(line))

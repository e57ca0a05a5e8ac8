"""python -m paper_repro.baseline: torchvision's AlexNet and its reference recipe on a store, scored by the ten views."""
import json
import os

import pytest
import torch

from paper_repro.baseline import Normalised, budget_exceeded, get_args_parser, main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_normalised_is_torchvisions_net_behind_its_reference_normalisation():
    torch.manual_seed(0)
    net = Normalised(7).eval()
    x = torch.rand(2, 3, 224, 224) * 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(net(x), net.net((x / 255 - mean) / std), rtol=1e-5, atol=1e-5)
    assert net.config() == {"num_classes": 7, "input_size": 224}


def test_one_epoch_logs_and_scores_with_ten_views_and_resumes(tiny_store, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # the rule's CPU default, whatever this machine has
    run = str(tmp_path / "tv")
    args = ["--data", tiny_store, "--out", run, "--epochs", "1", "--batch-size", "16", "--workers", "0",
            "--log-every", "1", "--no-progress"]
    result = main(get_args_parser().parse_args(args))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"baseline {run}: torchvision's AlexNet, its reference recipe, on 48 training images of 4 "
                        f"classes (val: 16) from {tiny_store} | 3 steps of 16 images per epoch, 1 epoch | device cpu "
                        f"(--gpus cpu: not given, and this machine has no CUDA device)")
    assert lines[-1].startswith(f"baseline {run}: done after epoch 1 (epochs done: 1) in ")
    assert lines[-1].endswith(f" s; ten-view val top-1 error {100 * result['top1_error']:.2f} %, top-5 "
                              f"{100 * result['top5_error']:.2f} % -> {run}/eval_val_10view.json")
    assert result["views"] == 10 and result["images"] == 16 and result["epochs_done"] == 1
    assert 0 <= result["top1_error"] <= 1 and 0 <= result["top5_error"] <= result["top1_error"]
    with open(os.path.join(run, "log.jsonl")) as f:
        log = [json.loads(line) for line in f]
    assert [r["epoch"] for r in log] == [1] and log[0]["lr"] == 0.01 and log[0]["train_images"] == 48
    with open(os.path.join(run, "steps.jsonl")) as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2, 3]
    again = main(get_args_parser().parse_args(args))  # a finished run: nothing more to train, same score
    assert again == result
    with open(os.path.join(run, "log.jsonl")) as f:
        assert len(f.readlines()) == 1


def test_budget_counts_the_next_epoch_and_ten_centre_passes():
    # 100 s gone, epochs of 50 s, a centre pass of 3 s: the next epoch and the ten-view test end at 180 s
    assert budget_exceeded(100, 50, 3, 180 / 60 - 1e-6)
    assert not budget_exceeded(100, 50, 3, 180 / 60 + 1e-6)


def test_minutes_stops_at_an_epoch_boundary_and_a_rerun_continues(tiny_store, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    run = str(tmp_path / "tv")
    args = ["--data", tiny_store, "--out", run, "--epochs", "3", "--batch-size", "16", "--workers", "0",
            "--no-progress", "--minutes", "0.0001"]
    result = main(get_args_parser().parse_args(args))
    out = capsys.readouterr().out
    assert (f"baseline {run}: --minutes 0.0001: another epoch and the ten-view test would end past the budget; "
            f"stopping after epoch 1\n") in out
    assert result["epochs_done"] == 1 and result["stopped_by_clock"]
    again = main(get_args_parser().parse_args(args[:-2]))  # no budget: the rest of the schedule
    assert again["epochs_done"] == 3 and not again["stopped_by_clock"]
    with open(os.path.join(run, "log.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2, 3]

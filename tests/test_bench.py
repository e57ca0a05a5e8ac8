"""python -m paper_repro.bench: the train stage runs the training code, and its counts are right."""
import argparse
import statistics

import pytest
import torch

import paper_repro.bench.train_step as bench_train_mod
from paper_repro.bench import common
from paper_repro.bench.command import PROG, get_args_parser, main
from paper_repro.bench.lrn import bench_lrn
from paper_repro.bench.op_count import OpCounter
from paper_repro.bench.train_step import bench_train
from paper_repro.core import cli
from paper_repro.data.augment import TrainPatch
from paper_repro.nets.alexnet import AlexNet
from paper_repro.nets.lrn import LocalResponseNorm
from paper_repro.training.build import build_model
from paper_repro.training.engine import train_step
from paper_repro.training.optim import PaperSGD

TINY = ["--batch-size", "2", "--width", "0.125", "--steps", "1", "--repeats", "1", "--warmup", "0", "--peak-size", "64"]


def test_op_counter_counts_kernels_not_views():
    a, b = torch.ones(4, 4), torch.ones(4, 4)
    with OpCounter() as counter:
        c = a + b          # computes and allocates
        c.mul_(2)          # computes in place
        c.view(16).t       # views: no kernel
        torch.empty(3)     # allocates
        c[1:].sum()        # a slice (view), then a reduction
    assert dict(counter.ops) == {"aten.add.Tensor": 1, "aten.mul_.Tensor": 1, "aten.empty.memory_format": 1,
                                 "aten.sum.default": 1}
    assert counter.total() == 4
    # add reads a and b and writes c; mul_ reads and writes c; empty touches nothing; sum reads 12, writes 1.
    assert counter.bytes == 4 * (3 * 16 + 2 * 16 + 12 + 1)


def test_op_counter_sees_the_backward_pass():
    x = torch.ones(3, requires_grad=True)
    with OpCounter() as counter:
        (x * 2).sum().backward()
    assert counter.ops["aten.mul.Tensor"] >= 2  # the forward's multiply and the backward's


def test_train_stage_runs_the_training_code(monkeypatch, capsys):
    seen = {"built": 0, "steps": [], "policy": []}
    real_build, real_step, real_policy = bench_train_mod.build_model, bench_train_mod.train_step, bench_train_mod.set_precision_policy

    def build(settings, num_classes, devices):
        seen["built"] += 1
        seen["settings"] = settings
        return real_build(settings, num_classes, devices)

    def step(model, optimizer, images, labels, augment, generator, **kw):
        seen["steps"].append((type(model).__module__, type(optimizer), type(augment), images.dtype, kw))
        return real_step(model, optimizer, images, labels, augment, generator, **kw)

    def policy(devices, tf32=True):
        seen["policy"].append((tuple(devices), tf32))
        return real_policy(devices, tf32=tf32)

    monkeypatch.setattr(bench_train_mod, "build_model", build)
    monkeypatch.setattr(bench_train_mod, "train_step", step)
    monkeypatch.setattr(bench_train_mod, "set_precision_policy", policy)
    # process-wide, so recorded rather than set in the test process (tests/test_host_memory.py runs it)
    monkeypatch.setattr(bench_train_mod, "keep_freed_memory", lambda devices, enabled: seen["policy"].append((devices, enabled))
                        or {"keep_freed_memory": enabled})
    assert real_build is build_model and real_step is train_step
    args = get_args_parser().parse_args(["train", "--gpus", "cpu,cpu", *TINY])
    result = main(args)
    assert seen["built"] == 1 and seen["policy"] == [(("cpu", "cpu"), True), (("cpu", "cpu"), True)]
    assert result["precision_policy"]["host_memory"] == {"keep_freed_memory": True}
    settings = seen["settings"]  # train's own parser: every other setting is the paper's recipe
    assert (settings.width, settings.batch_size, settings.lrn, settings.init_std) == (0.125, 2, "code", 0.01)
    # each net: one timed step (1 round x 1 step, no warm-up) and the counted one
    assert sorted(s[0] for s in seen["steps"]) == ["paper_repro.nets.alexnet"] * 2 + ["torchvision.models.alexnet"] * 2
    assert {s[1] for s in seen["steps"]} == {PaperSGD} and {s[2] for s in seen["steps"]} == {TrainPatch}
    assert {s[3] for s in seen["steps"]} == {torch.uint8}  # the augmentation runs inside the step
    assert all(s[4] == {"device": "cpu", "bf16": False} for s in seen["steps"])
    assert '"link_bytes_per_step"' in capsys.readouterr().out
    assert result["ops_per_step"] == result["ours"]["ops_per_step"] > result["torchvision_alexnet"]["ops_per_step"] > 0


@pytest.mark.parametrize("flags,want", [([], ("released-2012", "code", True)),
                                         (["--recipe", "paper-text", "--lrn", "none"], ("paper-text", "none", False))])
def test_train_stage_passes_recipe_and_lrn_to_the_training_flags(monkeypatch, flags, want):
    seen = {}

    class Built(Exception):
        pass

    def build(settings, num_classes, devices):
        seen["settings"] = settings
        raise Built

    monkeypatch.setattr(bench_train_mod, "build_model", build)
    with pytest.raises(Built):
        main(get_args_parser().parse_args(["train", "--gpus", "cpu", *TINY, *flags]))
    settings = seen["settings"]
    assert (settings.recipe, settings.lrn, settings.cnorm2) == want  # cnorm2: the released recipe's, not the text's


def expected_link_bytes(n, width, side=224):
    """Bytes across the links in one training step of the two-column net, from its canonical shapes."""
    shapes = AlexNet(devices=("meta",), width=width).canonical_shapes()
    forward = {"input": n * 3 * side * side * 4,
               "conv3": 2 * n * (shapes["conv2.weight"][0] // 2) * 13 * 13 * 4,
               "fc6": 2 * n * (shapes["fc6.weight"][1] // 2) * 4,
               "fc7": 2 * n * (shapes["fc6.weight"][0] // 2) * 4,
               "fc8": n * (shapes["fc7.weight"][0] // 2) * 4}
    backward = {**forward, "input": 0}  # the image needs no gradient
    return forward, backward


def test_train_stage_reports_the_link_bytes_of_one_step():
    args = get_args_parser().parse_args(["train", "--gpus", "cpu,cpu", *TINY])
    result = bench_train(args)
    forward, backward = expected_link_bytes(2, 0.125, side=227)  # a CPU run's patches carry conv1's padding
    assert result["link_bytes_per_link"] == {"forward": forward, "backward": backward}
    assert result["link_bytes_per_step"] == sum(forward.values()) + sum(backward.values())
    one = bench_train(get_args_parser().parse_args(["train", "--gpus", "cpu", *TINY]))
    assert one["link_bytes_per_step"] == 0  # one device: grouped convolutions, no link


def test_train_stage_profile_names_each_nets_operators_and_our_fused_functions():
    flags = ["train", "--gpus", "cpu", *TINY]
    assert "profile" not in bench_train(get_args_parser().parse_args(flags))["ours"]  # only when asked
    result = bench_train(get_args_parser().parse_args([*flags, "--profile", "2"]))
    setup_flags = ["--gpus", "cpu", "--batch-size", "2", "--width", "0.125"]  # TINY's net
    _, _, _, model, _, _ = bench_train_mod.training_setup(setup_flags, bench_train_mod.NUM_CLASSES,
                                                          common.synthetic_stats())
    lrn_layers = sum(isinstance(m, LocalResponseNorm) for m in model.modules())
    assert lrn_layers >= 1
    for name, lrn_calls in (("ours", lrn_layers), ("torchvision_alexnet", 0)):
        profile = result[name]["profile"]
        assert profile["steps"] == 2 and profile["clock"] == "cpu"
        calls = {row["name"]: row["calls_per_step"] for row in profile["total"]}
        assert calls["aten::conv2d"] == 5  # five convolutions a step, one device
        assert calls.get("_LRNFunction", 0) == lrn_calls  # torchvision's AlexNet has no response normalisation
        own = [row["self_us_per_step"] for row in profile["self"]]
        assert own == sorted(own, reverse=True) and 0 < own[0] <= profile["self_us_per_step_all"]


def test_matmul_peak_is_2n3_flops_over_the_best_time(monkeypatch):
    ticks = iter([0.0, 0.5, 10.0, 10.25, 20.0, 21.0])  # three timed products: 0.5 s, 0.25 s, 1 s
    cpu = iter([0.0, 1.0, 5.0, 5.5, 9.0, 9.75])  # and their CPU time: 1 s, 0.5 s, 0.75 s
    monkeypatch.setattr(common.time, "perf_counter", lambda: next(ticks))
    monkeypatch.setattr(common.time, "process_time", lambda: next(cpu))
    assert common.matmul_peak_tflops("cpu", n=32, repeats=3) == (2 * 32 ** 3 / 0.25 / 1e12, 2 * 32 ** 3 / 0.5 / 1e12)


def test_train_stage_reads_each_nets_flop_rate_against_the_measured_peak(monkeypatch):
    peaks = iter([(2.0, 5.0), (3.0, 4.0)])
    monkeypatch.setattr(bench_train_mod, "matmul_peak_tflops", lambda device, n, dtype: next(peaks))
    result = bench_train(get_args_parser().parse_args(["train", "--gpus", "cpu", *TINY]))
    assert result["matmul_peak_tflop_per_s"] == 3.0 and result["matmul_peak_tflop_per_cpu_s"] == 5.0
    assert result["matmul_peak_measured"] == {"size": 64, "dtype": "float32", "threads": torch.get_num_threads(),
                                              "tflop_per_s_before_after": [2.0, 3.0],
                                              "tflop_per_cpu_s_before_after": [5.0, 4.0]}
    for name in ("ours", "torchvision_alexnet"):
        row = result[name]
        assert row["fraction_of_measured_matmul_peak"] == row["train_tflop_per_s"] / 3.0
        assert row["fraction_of_matmul_peak_cpu_time"] == row["train_tflop_per_cpu_s"] / 5.0
        assert row["train_tflop_per_cpu_s"] == pytest.approx(
            3 * row["forward_gflop_per_image"] * 1e9 * 2 / statistics.median(row["cpu_seconds_per_step"]) / 1e12)
        assert row["train_tflop_per_s"] == pytest.approx(
            3 * row["forward_gflop_per_image"] * 1e9 * 2 / statistics.median(row["seconds_per_step"]) / 1e12)


def test_every_flag_has_help_and_its_default():
    parser = get_args_parser()
    assert parser.prog == "python -m paper_repro.bench"
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(subparsers.choices) == ["eval", "loader", "local", "lrn", "train"]  # prep: data_prep/bench_prep.py
    for name, sub in subparsers.choices.items():
        assert sub.prog == f"python -m paper_repro.bench {name}"
        flags = [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]
        assert all(a.help for a in flags), name
        shown = " ".join(sub.format_help().split())  # --help as printed, line breaks undone
        for action in flags:
            if not action.required:
                said = sub._get_formatter()._get_help_string(action) % {"default": action.default}
                assert "default:" in said and " ".join(said.split()) in shown, (name, action.dest)
    assert "--batch-size BATCH_SIZE images per step (the paper's 128) (default: 128)" in " ".join(
        subparsers.choices["train"].format_help().split())


def test_lrn_stage_reports_each_layout_and_dtype():
    args = get_args_parser().parse_args(["lrn", "--shape", "2,12,5,5", "--repeats", "1"])
    result = bench_lrn(args)
    for key in ("nchw_float32", "nchw_bfloat16", "channels_last_float32", "channels_last_bfloat16"):
        row = result[key]
        assert row["ops"] == sum(row["op_counts"].values()) > 0 and row["passes"] > 2 and row["seconds_min"] > 0


def test_bad_device_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.run(PROG, main, get_args_parser().parse_args(["train", "--gpus", "x"]))
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("python -m paper_repro.bench: error: --gpus 'x'")

"""The released 2012 recipe: per-layer groups through cuda-convnet's update, its schedule, cnorm2, its data path."""
import json
import os
from unittest import mock

import numpy as np
import pytest
import torch

from paper_repro.core.recipe import LEGACY_RECIPE, RECIPE, RECIPE_VALUES, RECIPES
from paper_repro.data.augment import TrainPatch, batch_generator
from paper_repro.data.views import TenViews
from paper_repro.nets.alexnet import AlexNet
from paper_repro.nets.checkpoint import load_model
from paper_repro.nets.lrn import same_map_norm
from paper_repro.train import main
from paper_repro.training.build import make_optimizer, make_schedule, make_transforms
from paper_repro.training.param_groups import apply_learning_rates, layer_of, param_groups
from paper_repro.training.schedule import ReleasedSchedule, released_events
from paper_repro.training.settings import parse_args

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
SMALL = dict(num_classes=5, width=0.0625)


# ----------------------------------------------------------------------------- the optimiser's groups


def test_layer_of_names_one_layer_for_both_columns():
    assert layer_of("columns.0.conv1.weight") == layer_of("columns.1.conv1.weight") == "conv1"
    assert layer_of("module.columns.1.fc7.bias") == "fc7" and layer_of("fc8.weight") == "fc8"


@pytest.mark.parametrize("devices", [("cpu",), ("cpu", "cpu")], ids=["one-device", "two-column"])
def test_groups_are_per_layer_and_kind_with_the_codes_bias_rate_and_decay(devices):
    net = AlexNet(devices=devices, **SMALL)
    groups = param_groups(net, 0.0005, bias_lr_mult=2.0, bias_decay=False)
    assert [(g["layer"], g["kind"]) for g in groups] == [
        (layer, kind) for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
        for kind in ("weight", "bias")]
    for g in groups:
        assert (g["lr_mult"], g["weight_decay"]) == ((2.0, 0.0) if g["kind"] == "bias" else (1.0, 0.0005))
        assert len(g["params"]) == (2 if len(devices) == 2 and g["layer"] != "fc8" else 1)
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in net.parameters())


def cuda_convnet_updates(w, grads, lrs, mom=0.9, wc=0.0005):
    """Independent: cuda-convnet's rule per step, inc = mom*inc - eps*grad - wc*eps*w; w += inc (skipped at eps 0)."""
    w, inc = w.clone(), torch.zeros_like(w)
    for g, eps in zip(grads, lrs):
        if eps == 0:
            continue  # weights.cu: a layer whose rate is 0 is not updated at all
        inc = mom * inc - eps * g - wc * eps * w
        w = w + inc
    return w


def test_a_run_of_steps_is_cuda_convnets_update_with_biases_at_twice_the_rate_and_no_decay():
    torch.manual_seed(0)
    net = AlexNet(devices=("cpu",), **SMALL)
    args = parse_args(["--data", "S", "--out", "R", "--epochs", "91"])  # the released recipe's defaults
    opt = make_optimizer(net, args)
    schedule = make_schedule(args)
    start = {k: v.detach().clone() for k, v in net.named_parameters()}
    grads = {k: [torch.randn_like(v) for _ in range(6)] for k, v in start.items()}
    lrs = {k: [] for k in start}
    for step in range(6):
        if step == 3:  # after epoch 25 the weights' rate drops; the biases' stays (layer-params-145.cfg)
            for epoch in range(1, 26):
                schedule.step(0.5, epoch)
        apply_learning_rates(opt, schedule, args.lr, args.bias_lr_fixed)
        for k, p in net.named_parameters():
            p.grad = grads[k][step].clone()
            lrs[k].append(0.01 * (0.1 if step >= 3 else 1) if k.endswith("weight") else 0.02)
        opt.step()
    for k, p in net.named_parameters():
        wc = 0.0005 if k.endswith("weight") else 0.0
        want = cuda_convnet_updates(start[k], grads[k], lrs[k], wc=wc)
        torch.testing.assert_close(p.detach(), want, rtol=1e-5, atol=1e-7, msg=k)


def test_a_frozen_layer_is_left_alone_velocity_and_all():
    torch.manual_seed(1)
    net = AlexNet(devices=("cpu",), **SMALL)
    opt = make_optimizer(net, parse_args(["--data", "S", "--out", "R"]))
    schedule = ReleasedSchedule(0.01, 91)
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    opt.step()  # every layer now has a velocity
    for epoch in range(1, 73):
        schedule.step(0.5, epoch)  # after 72: conv1 frozen
    apply_learning_rates(opt, schedule, 0.01, bias_lr_fixed=True)
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    opt.step()
    for k, p in net.named_parameters():
        if k.startswith("conv1."):
            assert torch.equal(p.detach(), before[k]), k  # no leftover momentum, no decay: untouched
        else:
            assert not torch.equal(p.detach(), before[k]), k
    assert {g["lr"] for g in opt.param_groups if g["layer"] == "conv1"} == {0.0}


# ----------------------------------------------------------------------------- the schedule


def test_released_schedule_at_its_own_length_is_the_files_table():
    s = ReleasedSchedule(0.01, 91)
    seen = {}
    for epoch in range(1, 92):
        if s.step(0.5, epoch):
            seen[epoch] = (s.layer_lr("conv1"), s.layer_lr("fc6"), s.colour_noise)
    assert list(seen) == [25, 51, 67, 72, 79]
    assert seen[25] == pytest.approx((1e-3, 1e-3, True)) and seen[51] == pytest.approx((1e-4, 1e-4, True))
    assert seen[67] == pytest.approx((1e-5, 1e-4, False))  # conv1 /10 and colour noise off
    assert seen[72] == pytest.approx((0.0, 1e-4, False)) and seen[79] == pytest.approx((0.0, 1e-5, False))


def test_released_schedule_scales_to_a_short_run_and_resumes_exactly():
    events = released_events("2012", 20)
    assert [e for e, _, _ in events] == [5, 11, 15, 15, 16, 17]
    a, b = ReleasedSchedule(0.01, 20), ReleasedSchedule(0.01, 20)
    for epoch in range(1, 13):
        a.step(0.5, epoch)
        b.step(0.5, epoch)
    c = ReleasedSchedule(1.0, 5)
    c.load_state_dict(json.loads(json.dumps(b.state_dict())))
    for epoch in range(13, 21):
        assert a.step(0.5, epoch) == c.step(0.5, epoch)
        assert (a.lr, a.conv1_lr, a.colour_noise) == (c.lr, c.conv1_lr, c.colour_noise)


def _history(schedule, epochs, replans=None):
    """(lr, conv1 lr, colour noise) after each epoch; replans: {epoch: new length} before that epoch's step."""
    out = []
    for epoch in range(1, epochs + 1):
        if replans and epoch in replans:
            schedule.replan(replans[epoch])
        schedule.step(0.5, epoch)
        out.append((schedule.lr, schedule.conv1_lr, schedule.colour_noise))
    return out


def test_a_replanned_schedule_makes_each_change_once_in_order_and_none_is_skipped():
    # replanned to 20 after the first epoch, before any change is due: the fixed 20-epoch schedule exactly
    assert _history(ReleasedSchedule(0.01, 30), 20, {1: 20}) == _history(ReleasedSchedule(0.01, 20), 20)
    # shortened after epoch 12 of 30 (the first /10 made at 8) to 13: everything pending is made at epoch 13
    s = ReleasedSchedule(0.01, 30)
    history = _history(s, 13, {13: 13})
    assert released_events("2012", 30)[:2] == [(8, "all", "/10"), (17, "all", "/10")]
    assert history[6] == (0.01, 0.01, True) and history[7] == pytest.approx((1e-3, 1e-3, True))
    assert history[11] == pytest.approx((1e-3, 1e-3, True))
    # at 13: the second /10 (all), conv1 /10, colour noise off, conv1 frozen, the others /10
    assert history[12] == pytest.approx((1e-5, 0.0, False)) and s.applied == 6
    # lengthened: a change not yet made moves later, one made stays made
    s = ReleasedSchedule(0.01, 20)
    history = _history(s, 12, {6: 40})
    assert history[4] == pytest.approx((1e-3, 1e-3, True))  # 5 of 20
    assert [e for e, _, _ in s.events][1] == 22 and history[11] == pytest.approx((1e-3, 1e-3, True))
    restored = ReleasedSchedule(1.0, 5)
    restored.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert (restored.epochs, restored.applied, restored.events) == (40, 1, s.events)


def test_a_released_schedule_saved_before_replan_existed_resumes_with_its_changes_made():
    s = ReleasedSchedule(0.01, 20)
    _history(s, 12)
    old = s.state_dict()
    del old["applied"]
    restored = ReleasedSchedule(1.0, 5)
    restored.load_state_dict(old)
    assert restored.applied == 2  # the changes after 5 and 11
    assert _history(restored, 20)[12:] == _history(s, 20)[12:]


# ----------------------------------------------------------------------------- cnorm2


def same_map_by_loops(x, size=5, scale=0.001, power=0.75):
    """Independent: every pixel's window clipped to the image by explicit bounds, the divisor size^2 regardless."""
    n, c, h, w = x.shape
    r = size // 2
    out = torch.empty_like(x)
    for i in range(h):
        for j in range(w):
            win = x[:, :, max(0, i - r):min(h, i + r + 1), max(0, j - r):min(w, j + r + 1)]
            s = (win * win).sum(dim=(2, 3))
            out[:, :, i, j] = x[:, :, i, j] / (1 + scale / size ** 2 * s) ** power
    return out


def test_cnorm2_is_cuda_convnets_same_map_normalisation_clipped_at_the_edges():
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 300
    torch.testing.assert_close(same_map_norm(x), same_map_by_loops(x), rtol=1e-12, atol=1e-12)
    got = same_map_norm(x.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), same_map_by_loops(x.to(torch.bfloat16).double()), rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="size must be odd"):
        same_map_norm(x, size=4)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_cnorm2_gradient_is_the_numerical_one_and_once_differentiable(layout):
    # Big enough that the batch is worked through in chunks on the CPU (CPU_CHUNK_BYTES), values big
    # enough that the denominator's own gradient matters (scale 0.001 / 25 against sums of 1e5).
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(3, 4, 9, 8, dtype=torch.float64, generator=g) * 300).contiguous(memory_format=layout)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: same_map_norm(t, scale=0.5), (x,), eps=1e-4, atol=1e-7)
    with mock.patch("paper_repro.nets.lrn.CPU_CHUNK_BYTES", 4 * 9 * 8 * 8):  # one image per chunk
        chunked = torch.autograd.grad(same_map_norm(x).square().sum(), x)[0]
    whole = torch.autograd.grad(same_map_by_loops(x).square().sum(), x)[0]
    torch.testing.assert_close(chunked, whole, rtol=1e-10, atol=1e-12)
    with pytest.raises(RuntimeError, match="same_map_norm is differentiable once"):
        torch.autograd.grad(same_map_norm(x).sum(), x, create_graph=True)


def test_neither_switch_adds_a_parameter_and_old_checkpoints_say_their_recipe():
    code = AlexNet(devices=("cpu", "cpu"), **SMALL)
    text = AlexNet(devices=("cpu", "cpu"), lrn1_input="post-relu", cnorm2=False, dropout_scaling="inverted", **SMALL)
    assert {k: v.shape for k, v in code.state_dict().items()} == {k: v.shape for k, v in text.state_dict().items()}
    old = load_model(os.path.join(FIXTURES, "checkpoint_82459cd.pt"))
    assert old.checkpoint_info["recipe"] == LEGACY_RECIPE
    assert (old.lrn1_input, old.use_cnorm2, old.dropout_scaling) == ("post-relu", False, "inverted")
    assert old.init_std_conv3_5 == old.init_std == 0.01


# ----------------------------------------------------------------------------- the data path


def batch_and_stats(n=6, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g)
    mean = torch.rand(size, size, 3, generator=g) * 255
    eigvec, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    return images, mean, np.array([400.0, 40.0, 4.0]), eigvec.numpy()


@pytest.mark.parametrize("path", ["gather", "slices"])
def test_centre_mean_and_the_noise_rescale_as_convdata(path):
    images, mean, eigval, eigvec = batch_and_stats()
    size = 24
    aug = TrainPatch(mean, eigval, eigvec, size=size, path=path, mean_crop="centre", rescale=True)
    got = aug(images, batch_generator(0, 0, 0))
    oy, ox, flip, a = aug.draw(len(images), batch_generator(0, 0, 0))
    shift = a.double() @ (torch.as_tensor(eigvec) * torch.as_tensor(eigval).sqrt()).T
    centre = mean.double().numpy()[4:4 + size, 4:4 + size]  # (32 - 24) / 2
    for n in range(len(images)):
        patch = images[n].double().numpy()[oy[n]:oy[n] + size, ox[n]:ox[n] + size]
        if flip[n]:
            patch = patch[:, ::-1]
        want = (patch - centre + shift[n].numpy()) / 1.1  # convdata.py: (crop - mean's centre + noise) / 1.1
        np.testing.assert_allclose(got[n].permute(1, 2, 0).double().numpy(), want, rtol=1e-5, atol=1e-3)
    aug.noise_on = False  # the released schedule's end: no noise, no rescale
    plain = aug(images, batch_generator(0, 0, 0))
    for n in range(len(images)):
        patch = images[n].double().numpy()[oy[n]:oy[n] + size, ox[n]:ox[n] + size]
        patch = patch[:, ::-1] if flip[n] else patch
        np.testing.assert_allclose(plain[n].permute(1, 2, 0).double().numpy(), patch - centre, rtol=0, atol=1e-4)


def test_a_cpu_runs_patches_carry_conv1s_padding_and_give_the_same_step():
    images, mean, eigval, eigvec = batch_and_stats(n=4, size=256)
    stats = {"mean_image": mean.numpy(), "pca_eigval": eigval, "pca_eigvec": eigvec}
    args = parse_args(["--data", "S", "--out", "R"])
    net = AlexNet(devices=("cpu", "cpu"), **SMALL)
    augment, centre = make_transforms(args, stats, net)
    assert (augment.pad, augment.channels_last, centre.pad, centre.channels_last) == (3, True, 3, True)
    # every thread cuts the patches only where no loader worker decodes beside them
    assert [make_transforms(args, stats, net, w)[0].all_threads for w in (None, 2, 0)] == [False, False, True]
    x, v = augment(images, batch_generator(0, 0, 0)), centre(images)
    assert x.shape == v.shape == (4, 3, 227, 227) and x.is_contiguous(memory_format=torch.channels_last)
    plain = TrainPatch(mean, eigval, eigvec, colour_noise=augment.colour_noise, mean_crop=args.mean_crop,
                       rescale=args.colour_noise_rescale, crop_chunk=args.crop_chunk)(images, batch_generator(0, 0, 0))
    net.eval()
    torch.testing.assert_close(net(x), net(plain), rtol=0, atol=1e-5)
    meta = AlexNet(devices=("meta", "meta"), **SMALL)  # not a CPU run: the patches as the flags say
    augment, centre = make_transforms(args, stats, meta)
    assert (augment.pad, augment.channels_last, centre.pad) == (0, args.channels_last, 0)


def test_crop_chunks_share_offset_and_flip_and_chunk_1_draws_as_before():
    images, mean, eigval, eigvec = batch_and_stats(n=70)
    chunked = TrainPatch(mean, eigval, eigvec, size=24, crop_chunk=32)
    oy, ox, flip, a = chunked.draw(70, batch_generator(0, 0, 5))
    for lo, hi in ((0, 32), (32, 64), (64, 70)):
        assert len({(int(y), int(x), bool(f)) for y, x, f in zip(oy[lo:hi], ox[lo:hi], flip[lo:hi])}) == 1
    assert len({(int(y), int(x)) for y, x in zip(oy[::32], ox[::32])}) > 1
    assert len(set(a[:, 0].tolist())) == 70  # colour noise stays per image
    g = batch_generator(0, 0, 5)  # chunk 1: the draws of the per-image code, from the same stream
    want = (torch.randint(0, 9, (70,), generator=g), torch.randint(0, 9, (70,), generator=g))
    single = TrainPatch(mean, eigval, eigvec, size=24).draw(70, batch_generator(0, 0, 5))
    assert torch.equal(single[0], want[0]) and torch.equal(single[1], want[1])


def test_ten_views_with_the_centre_mean():
    images, mean, _, _ = batch_and_stats(n=2)
    size = 24
    gather = TenViews(mean, size, path="gather", mean_crop="centre")(images)
    slices = TenViews(mean, size, path="slices", mean_crop="centre")(images)
    assert torch.equal(gather, slices)
    position = TenViews(mean, size, path="slices")(images)
    centre = mean[4:4 + size, 4:4 + size].permute(2, 0, 1)
    # the top-left view (second in VIEW_NAMES): its crop minus the mean's centre, not the mean's top-left
    torch.testing.assert_close(gather[1], images[0, :size, :size].permute(2, 0, 1).float() - centre)
    assert not torch.equal(gather[1], position[1]) and torch.equal(gather[0], position[0])


# ----------------------------------------------------------------------------- settings and a run


def test_recipe_sets_every_default_and_a_flag_overrides_one(tmp_path):
    for recipe in RECIPES:
        args = parse_args(["--data", "S", "--out", str(tmp_path), "--recipe", recipe, "--batch-size", "128"])
        for key, value in RECIPE_VALUES[recipe].items():
            assert getattr(args, key) == value, (recipe, key)
    args = parse_args(["--data", "S", "--out", str(tmp_path), "--recipe", "paper-text", "--cnorm2"])
    assert args.cnorm2 is True and args.lrn1_input == "post-relu"
    assert set(RECIPE) <= set(vars(args))  # every recipe key is a flag


def test_a_short_released_run_follows_the_scaled_schedule_and_records_its_recipe(tiny_store, tmp_path, one_thread):
    run = str(tmp_path / "run")
    main(parse_args(["--data", tiny_store, "--out", run, "--gpus", "cpu", "--epochs", "4", "--width", "0.0625",
                     "--batch-size", "16", "--workers", "0", "--no-progress"]))
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["recipe"] == "released-2012" and config["lr_schedule"] == "released"
    assert config["model_config"]["cnorm2"] is True and config["model_config"]["lrn1_input"] == "pre-relu"
    log = [json.loads(line) for line in open(os.path.join(run, "log.jsonl"))]
    # 4 epochs: the file's 25, 51, 67, 72, 79 scale to 1, 2, 3, 3, 3
    assert [r["lr"] for r in log] == pytest.approx([0.01 * 16 / 128 * f for f in (1, 0.1, 0.01, 0.001)])
    ckpt = torch.load(os.path.join(run, "checkpoint.pt"), weights_only=True)
    assert ckpt["schedule"]["conv1_lr"] == 0.0 and ckpt["schedule"]["colour_noise"] is False


def test_report_sets_the_released_runs_beside_the_paper_and_marks_this_runs_ablation():
    from paper_repro.evaluation.released_runs import released_section
    md = released_section({"lrn": "none"})
    # 148 against 145 on 2012 val: 42.034 - 40.664 and 19.362 - 18.210 (layer-params-148.cfg, -145.cfg)
    assert ("| 148 | ILSVRC-2012 val | 42.03 | 19.36 | +1.37 / +1.15 (vs 145) | section 3.3, without normalisation: "
            "+1.4 / +1.2 | this run's setting (`lrn` none) |") in md
    assert any(line.startswith("| 145-half | ILSVRC-2010 test | 39.17 | 18.23 | +1.70 / +1.23 (vs 145-2010) |")
               for line in md)
    assert not any("this run's setting" in line for line in released_section({"lrn": "code"}))


def test_a_run_from_before_the_released_recipe_resumes_as_it_started(store_factory, tmp_path, one_thread):
    # The fixture checkpoint's own run (82459cd, paper's text as then read: inverted dropout, plateau), resumed today.
    run = tmp_path / "old_run"
    run.mkdir()
    ckpt = torch.load(os.path.join(FIXTURES, "checkpoint_82459cd.pt"), weights_only=True)
    (run / "config.json").write_text(json.dumps(ckpt["config"]))
    (run / "checkpoint.pt").write_bytes(open(os.path.join(FIXTURES, "checkpoint_82459cd.pt"), "rb").read())
    store = store_factory(3, 4, 2)
    main(parse_args(["--data", store, "--out", str(run), "--epochs", "2", "--resume", "--no-progress", "--gpus", "cpu"]))
    config = json.load(open(run / "config.json"))
    assert config["recipe"] == LEGACY_RECIPE and config["lr_schedule"] == "plateau"
    assert (config["dropout_scaling"], config["cnorm2"], config["lrn1_input"]) == ("inverted", False, "post-relu")
    assert (config["bias_lr_mult"], config["bias_decay"], config["mean_crop"]) == (1.0, True, "position")
    assert config["model_config"]["dropout_scaling"] == "inverted" and config["model_config"]["init_std_conv3_5"] == 0.01
    log = [json.loads(line) for line in open(run / "log.jsonl")]
    assert [r["epoch"] for r in log] == [2]

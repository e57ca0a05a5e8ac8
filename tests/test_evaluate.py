"""The paper's test: ten views, softmax averaging, ensembles, checkpoints, predictions and errors."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from paper_repro import evaluate as evaluate_module
from paper_repro.core.cli import run as run_command
from paper_repro.data.store import ImageNetStore, load_stats
from paper_repro.data.views import VIEW_NAMES, TenViews
from paper_repro.evaluate import PROG, cli, get_args_parser, main
from paper_repro.evaluation.scoring import evaluate, forward_in_pieces
from paper_repro.nets.alexnet import AlexNet
from paper_repro.nets.checkpoint import load_model

WIDTH = 1 / 16  # 6 conv1 kernels: fast on the CPU, still the paper's two-column wiring


def numpy_views(images, mean, size):
    """The ten patches written out by hand: corners and centre by slicing, reflections by [:, ::-1]."""
    far = 256 - size
    mid = far // 2
    where = {"centre": (mid, mid), "top-left": (0, 0), "top-right": (0, far),
             "bottom-left": (far, 0), "bottom-right": (far, far)}
    out = []
    for img in images.astype(np.float64):
        for name in VIEW_NAMES:
            r, c = where[name.replace("-flip", "")]
            patch = img[r:r + size, c:c + size] - mean[r:r + size, c:c + size]
            if name.endswith("-flip"):
                patch = patch[:, ::-1]
            out.append(patch.transpose(2, 0, 1))
    return np.stack(out)


@pytest.mark.parametrize("size", [224, 227])
def test_ten_views_match_slicing(size):
    rng = np.random.default_rng(size)
    images = rng.integers(0, 256, size=(3, 256, 256, 3), dtype=np.uint8)
    mean = rng.uniform(0, 255, size=(256, 256, 3)).astype(np.float32)
    got = TenViews(mean, size, views=10)(torch.from_numpy(images))
    assert got.dtype == torch.float32 and got.shape == (30, 3, size, size)
    want = numpy_views(images, mean.astype(np.float64), size)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-4)


def test_one_view_is_the_centre():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(2, 256, 256, 3), dtype=np.uint8)
    mean = rng.uniform(0, 255, size=(256, 256, 3)).astype(np.float32)
    got = TenViews(mean, 224, views=1)(torch.from_numpy(images)).numpy()
    want = (images[:, 16:240, 16:240].astype(np.float64) - mean[16:240, 16:240]).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_views_reject_bad_input():
    cut = TenViews(np.zeros((256, 256, 3), np.float32), 224)
    want = r"expected a uint8 batch N x 256 x 256 x 3, got torch.float32 \(1, 256, 256, 3\)"
    with pytest.raises(ValueError, match=want):
        cut(torch.zeros(1, 256, 256, 3))
    with pytest.raises(ValueError, match="views must be 10"):
        TenViews(np.zeros((256, 256, 3), np.float32), 224, views=5)


def test_views_into_a_reused_buffer_and_from_planar_batches():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(2, 256, 256, 3), dtype=np.uint8)
    mean = rng.uniform(0, 255, size=(256, 256, 3)).astype(np.float32)
    cut = TenViews(mean, 224)
    want = numpy_views(images, mean.astype(np.float64), 224)
    buffer = torch.full((20, 3, 224, 224), float("nan"))
    planar = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)  # BatchLoader's CPU layout
    got = cut(planar, out=buffer)
    assert got.data_ptr() == buffer.data_ptr()
    np.testing.assert_allclose(buffer.numpy(), want, rtol=0, atol=1e-4)
    assert torch.equal(cut(torch.from_numpy(images)), buffer)
    with pytest.raises(ValueError, match=r"out must be a contiguous float32 CPU tensor of shape \(20, 3, 224, 224\)"):
        cut(planar, out=torch.empty(10, 3, 224, 224))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ten_views_on_cuda_match_cpu():
    rng = np.random.default_rng(2)
    images = torch.from_numpy(rng.integers(0, 256, size=(4, 256, 256, 3), dtype=np.uint8))
    mean = rng.uniform(0, 255, size=(256, 256, 3)).astype(np.float32)
    cut = TenViews(mean, 224)
    got = cut(images.cuda())
    assert got.is_cuda
    torch.testing.assert_close(got.cpu(), cut(images), rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------- nets and checkpoints



def make_net(num_classes, seed, **kw):
    """A narrow net with random weights scaled so that its softmax outputs differ visibly between images."""
    torch.manual_seed(seed)
    net = AlexNet(num_classes=num_classes, devices=("cpu",), width=WIDTH, **kw)
    state = net.state_dict()
    g = torch.Generator().manual_seed(seed)
    for k, v in state.items():
        fan_in = int(np.prod(v.shape[1:])) if v.ndim > 1 else 1
        state[k] = torch.randn(v.shape, generator=g) * (2 / fan_in) ** 0.5 * (0.1 if v.ndim == 1 else 1)
    state["fc8.weight"] *= 0.02
    net.load_state_dict(state)
    return net.eval()


def save_training_checkpoint(net, path):
    torch.save({"model": net.state_dict(), "model_config": net.config(), "epoch": 3, "step": 0,
                "optimizer": {}, "config": {}}, path)
    return str(path)


def save_bare(net, path):
    torch.save(net.state_dict(), path)
    return str(path)


def run_main(argv):
    return main(get_args_parser().parse_args(argv))


def test_bare_state_dict_and_training_checkpoint_give_the_same_net(tmp_path):
    net = make_net(5, seed=0)
    x = torch.randn(2, 3, 224, 224) * 50
    want = net(x)
    bare = load_model(save_bare(net, tmp_path / "bare.pt"), ("cpu",))
    full = load_model(save_training_checkpoint(net, tmp_path / "ckpt.pt"), ("cpu",))
    assert bare.config() == net.config() and full.config() == net.config()
    assert not bare.training and not full.training
    torch.testing.assert_close(bare(x), want, rtol=0, atol=0)
    torch.testing.assert_close(full(x), want, rtol=0, atol=0)
    assert full.checkpoint_info["epoch"] == 3
    two = load_model(str(tmp_path / "ckpt.pt"), ("cpu", "cpu"))  # the two-column layout, same function
    assert two.devices == ("cpu", "cpu")
    torch.testing.assert_close(two(x), want, rtol=1e-5, atol=1e-5)
    # the training checkpoint's own input size and variant are kept; a bare one-column state_dict is recognised
    n227 = make_net(5, seed=1, input_size=227)
    assert load_model(save_training_checkpoint(n227, tmp_path / "c227.pt")).config()["input_size"] == 227
    one = make_net(5, seed=2, variant="one-column-half")
    got = load_model(save_bare(one, tmp_path / "one.pt"))
    assert got.config()["variant"] == "one-column-half" and got.config()["width"] == WIDTH
    torch.testing.assert_close(got(x), one(x), rtol=0, atol=0)


def manual_probs(net, store, mean, views):
    """Softmax averaged over views, with the views cut by numpy slicing (independent of TenViews)."""
    images = np.stack([store[i][0] for i in range(len(store))])
    x = torch.from_numpy(numpy_views(images, mean.astype(np.float64), 224)).float()
    if views == 1:
        x = x[::10]
    with torch.no_grad():
        return F.softmax(net(x), dim=1).view(len(store), views, -1).mean(1)


def test_ten_view_softmax_average_and_ensemble(tiny_store):
    store = ImageNetStore(tiny_store, "val")
    mean = load_stats(tiny_store)["mean_image"]
    a, b = make_net(4, seed=3), make_net(4, seed=4)
    pa = evaluate([a], store, mean, views=10, batch_size=5, progress=False)
    pb = evaluate([b], store, mean, views=10, batch_size=7, progress=False)
    pab = evaluate([a, b], store, mean, views=10, batch_size=16, progress=False)
    assert pa.shape == (len(store), 4)
    torch.testing.assert_close(pa, manual_probs(a, store, mean, 10), rtol=0, atol=1e-5)
    torch.testing.assert_close(pab, (pa + pb) / 2, rtol=0, atol=1e-6)
    assert (pa - pb).abs().max() > 0.05  # the two nets really differ, so the average means something
    p1 = evaluate([a], store, mean, views=1, batch_size=16, progress=False)
    torch.testing.assert_close(p1, manual_probs(a, store, mean, 1), rtol=0, atol=1e-5)
    assert (p1 - pa).abs().max() > 1e-3


@pytest.fixture(scope="module")
def store6(store_factory):
    """Six classes, so that a top-5 list is not the whole label set."""
    return store_factory(6, 2, 3, seed=1)


def test_top5_ties_rank_the_lower_class_first(store6, tmp_path):
    net = make_net(6, seed=5)
    state = net.state_dict()
    state["fc8.weight"].zero_()
    state["fc8.bias"].copy_(torch.tensor([1.0, 2.0, 2.0, 0.0, 2.0, 1.0]))
    ckpt = str(tmp_path / "x.pt")
    torch.save(state, ckpt)
    out, pred = tmp_path / "out.json", tmp_path / "pred.npy"
    res = run_main(["--data", store6, "--split", "val", "--checkpoint", ckpt, "--gpus", "cpu", "--views", "10",
                    "--json", str(out), "--predictions", str(pred), "--workers", "0", "--no-progress"])
    p = np.load(pred)
    labels = ImageNetStore(store6, "val").labels
    assert p.dtype == np.int64 and p.shape == (len(labels), 5)
    assert (p == np.array([1, 2, 4, 0, 5])).all()
    assert res["top1_error"] == np.mean(labels != 1)
    assert res["top5_error"] == np.mean(labels == 3)


def test_json_follows_from_predictions_and_labels(store6, tmp_path):
    a = save_training_checkpoint(make_net(6, seed=6), tmp_path / "a.pt")
    b = save_bare(make_net(6, seed=7), tmp_path / "b.pt")
    out, pred = tmp_path / "res" / "out.json", tmp_path / "res" / "pred.npy"
    run_main(["--data", store6, "--split", "val", "--checkpoint", a, "--checkpoint", b, "--gpus", "cpu",
              "--json", str(out), "--predictions", str(pred), "--batch-size", "4", "--workers", "0",
              "--no-progress"])
    res = json.loads(out.read_text())
    p = np.load(pred)
    labels = ImageNetStore(store6, "val").labels
    assert p.shape == (len(labels), 5) and res["images"] == len(labels) == 18
    assert res["top1_error"] == np.mean(p[:, 0] != labels)
    assert res["top5_error"] == np.mean(~(p == labels[:, None]).any(1))
    assert res["top1_wrong"] == int(np.sum(p[:, 0] != labels))
    assert (res["split"], res["views"], res["store_classes"]) == ("val", 10, 6)
    assert [c["path"] for c in res["checkpoints"]] == [os.path.abspath(a), os.path.abspath(b)]
    assert "not ImageNet" in res["dataset"]
    assert res["images_per_s"] > 0 and res["seconds"] > 0
    # every row is a ranking of distinct labels
    assert all(len(set(row)) == 5 for row in p.tolist())
    assert not [f for f in os.listdir(tmp_path / "res") if f.endswith(".tmp")]


# ----------------------------------------------------------------------------- clear errors

def test_checkpoint_that_does_not_match_the_net(tmp_path):
    net = make_net(4, seed=8)
    state = net.state_dict()
    state["conv1.weight"] = torch.zeros(6, 4, 11, 11)
    torch.save(state, tmp_path / "bad.pt")
    desc = ("AlexNet(bias_init=1.0, cnorm2=True, dropout=0.5, dropout_scaling=test, init_std=0.01, "
            "init_std_conv3_5=0.03, input_size=224, lrn=code, lrn1_input=pre-relu, num_classes=4, "
            "pooling=overlapping, variant=two-column, width=0.0625)")
    with pytest.raises(ValueError) as e:
        load_model(str(tmp_path / "bad.pt"))
    assert str(e.value) == (f"checkpoint {tmp_path / 'bad.pt'} does not match the net {desc}: conv1.weight has "
                            "shape (6, 4, 11, 11) in the checkpoint but (6, 3, 11, 11) in the net")
    # a training checkpoint whose model_config says another width
    torch.save({"model": net.state_dict(), "model_config": {**net.config(), "width": 0.125}}, tmp_path / "w.pt")
    with pytest.raises(ValueError) as e:
        load_model(str(tmp_path / "w.pt"))
    assert str(e.value).endswith("conv1.weight has shape (6, 3, 11, 11) in the checkpoint but (12, 3, 11, 11) "
                                 "in the net")
    state = net.state_dict()
    del state["fc8.bias"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(ValueError) as e:
        load_model(str(tmp_path / "missing.pt"))
    assert str(e.value) == (f"checkpoint {tmp_path / 'missing.pt'} does not match the net {desc}: it lacks "
                            "fc8.bias (1 missing, 0 unexpected keys)")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="is neither a training checkpoint"):
        load_model(str(tmp_path / "list.pt"))


def test_missing_split_empty_split_and_class_count(tiny_store, tmp_path):
    ckpt = save_bare(make_net(4, seed=9), tmp_path / "c.pt")
    base = ["--checkpoint", ckpt, "--gpus", "cpu", "--json", str(tmp_path / "o.json"), "--workers", "0"]
    with pytest.raises(ValueError) as e:
        run_main(["--data", tiny_store, "--split", "test"] + base)
    assert str(e.value) == (f"cannot evaluate --split test: image store {tiny_store} has no 'test' split "
                            "(it has: train, val)")
    # a store whose val split holds no images
    empty = str(tmp_path / "empty")
    shutil.copytree(tiny_store, empty)
    with open(os.path.join(empty, "manifest.json")) as f:
        manifest = json.load(f)
    manifest["splits"]["val"]["count"] = 0
    with open(os.path.join(empty, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    np.save(os.path.join(empty, "val", "index.npy"), np.zeros((0, 4), np.int64))
    open(os.path.join(empty, "val", "filenames.txt"), "w").close()
    with pytest.raises(ValueError) as e:
        run_main(["--data", empty, "--split", "val"] + base)
    assert str(e.value).startswith(f"cannot evaluate --split val: split 'val' of image store {empty} is empty "
                                   "(0 images)")
    with pytest.raises(ValueError) as e:  # a UsageError (exit status 2) since main words it for the user
        run_main(["--data", str(tmp_path / "nowhere"), "--split", "val"] + base)
    assert str(e.value) == (f"--data {tmp_path / 'nowhere'}: no such directory; pass the STORE that "
                            "data_prep/build_imagenet.py wrote")
    five = save_bare(make_net(5, seed=10), tmp_path / "five.pt")
    with pytest.raises(ValueError) as e:
        run_main(["--data", tiny_store, "--split", "val", "--checkpoint", five, "--gpus", "cpu", "--json",
                  str(tmp_path / "o.json")])
    assert str(e.value) == (f"checkpoint {os.path.abspath(five)} predicts 5 classes but --data {tiny_store} "
                            "has 4; evaluate on the store the net was trained for")
    assert not os.path.exists(tmp_path / "o.json")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_evaluate_on_cuda_matches_cpu(tiny_store, tmp_path):
    store = ImageNetStore(tiny_store, "val")
    mean = load_stats(tiny_store)["mean_image"]
    ckpt = save_training_checkpoint(make_net(4, seed=11), tmp_path / "c.pt")
    cpu = evaluate([load_model(ckpt, ("cpu",))], store, mean, progress=False)
    gpu = evaluate([load_model(ckpt, ("cuda:0", "cuda:0"))], store, mean, batch_size=8, progress=False)
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-4)


# ----------------------------------------------------------------------------- the command

def test_errors_are_printed_and_the_json_is_optional(store6, tmp_path, capsys):
    ckpt = save_bare(make_net(6, seed=12), tmp_path / "c.pt")
    pred = tmp_path / "pred.npy"
    res = run_main(["--data", store6, "--checkpoint", ckpt, "--gpus", "cpu", "--predictions", str(pred),
                    "--workers", "0", "--no-progress"])
    p, labels = np.load(pred), ImageNetStore(store6, "val").labels
    top1, top5 = np.mean(p[:, 0] != labels), np.mean(~(p == labels[:, None]).any(1))
    assert capsys.readouterr().out == (f"evaluate: 18 val images of 6 classes from {store6}, 10 views, 1 net | devices "
                                       "cpu (--gpus cpu)\n"
                                       f"val: top-1 error {100 * top1:.2f} %, top-5 error {100 * top5:.2f} % over "
                                       "18 images, 10 view(s), 1 net(s)\n")
    assert (res["top1_error"], res["top5_error"]) == (top1, top5)
    assert sorted(os.listdir(tmp_path)) == ["c.pt", "pred.npy"]  # no JSON unless --json asks for one


def test_precision_policy_is_set_and_recorded(tiny_store, tmp_path, monkeypatch):
    calls = []

    def policy(devices, tf32):
        calls.append((devices, tf32))
        return {"cudnn_benchmark": "recorded", "tf32": tf32}

    monkeypatch.setattr(evaluate_module, "set_precision_policy", policy)
    ckpt = save_bare(make_net(4, seed=13), tmp_path / "c.pt")
    base = ["--data", tiny_store, "--checkpoint", ckpt, "--gpus", "cpu", "--views", "1", "--workers", "0",
            "--no-progress", "--json"]
    run_main(base + [str(tmp_path / "a.json")])
    run_main(base + [str(tmp_path / "b.json"), "--no-tf32"])
    assert calls == [(("cpu",), True), (("cpu",), False)]
    assert json.loads((tmp_path / "a.json").read_text())["precision"] == {"cudnn_benchmark": "recorded", "tf32": True}
    assert json.loads((tmp_path / "b.json").read_text())["precision"] == {"cudnn_benchmark": "recorded", "tf32": False}


def test_no_read_back_from_the_device_per_batch(tiny_store, monkeypatch):
    store = ImageNetStore(tiny_store, "val")
    mean = load_stats(tiny_store)["mean_image"]
    net = make_net(4, seed=14)
    want = evaluate([net], store, mean, views=1, batch_size=16, progress=False)
    reads = []
    for name in ("cpu", "item", "tolist", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            if self.dtype.is_floating_point:  # what the net computes; the decoder's uint8 pixels are not read back
                reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    got = evaluate([net], store, mean, views=1, batch_size=2, progress=False)  # 8 batches
    monkeypatch.undo()
    assert reads == ["cpu"]  # the probabilities come back once, at the end
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def command(argv, capsys):
    """Run the command as python -m paper_repro.evaluate does: (exit status, stderr)."""
    with pytest.raises(SystemExit) as e:
        run_command(PROG, cli, argv)
    return e.value.code, capsys.readouterr().err


def test_bad_input_is_one_line_naming_the_flag(tiny_store, tmp_path, capsys):
    ckpt = save_bare(make_net(4, seed=15), tmp_path / "c.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(4096))
    base = ["--data", tiny_store, "--gpus", "cpu", "--workers", "0", "--no-progress"]
    cases = [
        (["--checkpoint", str(garbage)],
         f"error: checkpoint {garbage} is not a readable checkpoint (truncated or corrupt?)"),
        (["--checkpoint", ckpt, "--batch-size", "0"], "error: --batch-size 0: must be an integer >= 1"),
        (["--checkpoint", ckpt, "--workers", "-2"], "error: --workers -2: must be an integer >= 0"),
        (["--checkpoint", ckpt, "--json", str(tmp_path)], f"error: --json {tmp_path}: is a folder; pass a file name"),
    ]
    for argv, message in cases:
        status, err = command(base + argv, capsys)
        assert status == 2 and err.startswith(f"{PROG}: {message}"), (argv, err)
        assert err.count("\n") == 1 and "weights_only=False" not in err and "Traceback" not in err
    # argparse's own checks: exit status 2, the flag and its allowed values on the error line
    status, err = command(base + ["--checkpoint", ckpt, "--views", "5"], capsys)
    assert status == 2
    assert err.splitlines()[-1] == f"{PROG}: error: argument --views: invalid choice: 5 (choose from 10, 1)"
    if not torch.cuda.is_available():
        status, err = command(["--data", tiny_store, "--checkpoint", ckpt, "--gpus", "0"], capsys)
        assert status == 2 and err == (f"{PROG}: error: --gpus '0': this machine has no CUDA device; pass --gpus cpu "
                                       "(or cpu,cpu for two columns)\n")


def test_forward_in_pieces_gives_the_whole_batchs_logits_piece_by_piece():
    torch.manual_seed(0)
    net = AlexNet(num_classes=5, width=0.125, devices=("cpu",)).eval()
    sizes = []
    net.register_forward_pre_hook(lambda module, inputs: sizes.append(len(inputs[0])))
    x = torch.rand(7, 3, 224, 224) * 255
    with torch.inference_mode():
        whole = net(x)
        got = forward_in_pieces(net, x, 3)
        assert torch.equal(forward_in_pieces(net, x, None), whole)
    assert sizes == [7, 3, 3, 1, 7]
    torch.testing.assert_close(got, whole, rtol=0, atol=1e-5)


def test_a_cpu_evaluation_keeps_freed_memory_and_records_it(tiny_store, tmp_path, monkeypatch):
    calls = []

    def policy(devices):
        calls.append(tuple(devices))
        return {"keep_freed_memory": True, "why": "recorded"}

    monkeypatch.setattr(evaluate_module, "keep_freed_memory", policy)  # process-wide: recorded, not set, here
    ckpt = save_bare(make_net(4, seed=14), tmp_path / "c.pt")
    run_main(["--data", tiny_store, "--checkpoint", ckpt, "--gpus", "cpu", "--views", "1", "--workers", "0",
              "--no-progress", "--json", str(tmp_path / "a.json")])
    assert calls == [("cpu",)]
    assert json.loads((tmp_path / "a.json").read_text())["host_memory"] == {"keep_freed_memory": True, "why": "recorded"}

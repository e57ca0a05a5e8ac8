"""The CIFAR-10 nets: the locally connected layer, cuda-convnet's normalisation and pools, the nets' tables."""
import math

import pytest
import torch
import torch.nn.functional as F

from paper_repro.nets.cifar import ConvLocalNet, Fig1Net, ScaledTanh, avg_pool, cross_map_norm, max_pool
from paper_repro.nets.cifar_tutorial import TutorialAlexNet
from paper_repro.nets.local import LocallyConnected2d, UnfoldLocal2d, _LocalFunction, local_output_size
from paper_repro.training.build import make_optimizer
from paper_repro.training.param_groups import apply_learning_rates
from paper_repro.training.schedule import StepSchedule
from paper_repro.training.settings import parse_args


def naive_local(x, weight, bias, padding, stride):
    """A locally connected layer by loops over output positions: cuda-convnet's definition, written out."""
    ho, wo, f, k, _, c = weight.shape
    n, _, h, w = x.shape
    xp = torch.zeros(n, c, max(h + padding, (ho - 1) * stride + k), max(w + padding, (wo - 1) * stride + k),
                     dtype=x.dtype)
    xp[:, :, padding:padding + h, padding:padding + w] = x  # zeros outside the image, ceil windows included
    out = torch.empty(n, f, ho, wo, dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * stride:i * stride + k, j * stride:j * stride + k]  # n, c, k, k
            filt = weight[i, j].permute(0, 3, 1, 2)  # f, c, k, k
            out[:, :, i, j] = torch.einsum("nckl,fckl->nf", patch, filt) + bias[:, i, j]
    return out


@pytest.mark.parametrize("c,f,size,k,pad,stride", [(5, 4, 6, 3, 1, 1), (3, 2, 6, 3, 0, 2), (2, 3, 7, 2, 1, 3)])
def test_local_layer_equals_the_loop_and_the_unfold_layer_forward_and_backward(c, f, size, k, pad, stride):
    torch.manual_seed(0)
    fast = LocallyConnected2d(c, f, size, k, padding=pad, stride=stride).double()
    plain = UnfoldLocal2d(c, f, size, k, padding=pad, stride=stride).double()
    with torch.no_grad():
        fast.bias.normal_()
    plain.load_state_dict(fast.state_dict())
    assert fast.out_size == local_output_size(size, k, pad, stride) == 1 + math.ceil((2 * pad + size - k) / stride)
    x = torch.randn(4, c, size, size, dtype=torch.float64)
    g = torch.randn(4, f, fast.out_size, fast.out_size, dtype=torch.float64)
    results = []
    for fn in (fast, plain, lambda x: naive_local(x, fast.weight, fast.bias, pad, stride)):
        xi = x.clone().requires_grad_(True)
        fast.zero_grad()
        plain.zero_grad()
        y = fn(xi)
        y.backward(g)
        params = plain if fn is plain else fast
        results.append((y.detach(), xi.grad, params.weight.grad.clone(), params.bias.grad.clone()))
    for got in results[:2]:
        for a, b in zip(got, results[2]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_local_layer_passes_gradcheck():
    torch.manual_seed(1)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 3, 3, 2, 2, 2, dtype=torch.float64, requires_grad=True)  # out 3x3: k 2, pad 1, stride 2
    b = torch.randn(3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: _LocalFunction.apply(x, w, b, 1, 2), (x, w, b))


def kfcnorm(x, size, scale, pow_):
    """A literal port of cuda-convnet's kFCNorm (conv_util.cu r561 l.1068-1086): window start -size/2 + f, clipped."""
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    for f in range(c):
        start = -(size // 2) + f
        lo, hi = max(0, start), min(c, start + size)
        denom = 1 + (scale / size) * (x[:, lo:hi] ** 2).sum(1)
        out[:, f] = x[:, f] * denom ** -pow_
    return out


def test_cross_map_norm_is_cuda_convnets_cmrnorm():
    torch.manual_seed(2)
    x = (torch.randn(3, 64, 5, 5, dtype=torch.float64) * 30).relu()
    norm = cross_map_norm()
    assert (norm.size, norm.alpha, norm.beta, norm.k, norm.convention) == (9, 0.001, 0.75, 1.0, "code")
    torch.testing.assert_close(norm(x), kfcnorm(x, 9, 0.001, 0.75), rtol=1e-12, atol=1e-12)


def test_pools_match_cuda_convnet_sizes_and_the_clipped_average():
    x = torch.randn(2, 3, 24, 24, dtype=torch.float64)
    assert max_pool()(x).shape[-1] == 12 and max_pool()(max_pool()(x)).shape[-1] == 6
    y = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    got = avg_pool()(y)
    assert got.shape[-1] == 4  # ceil((8 - 3) / 2) + 1
    # AvgPooler: sum over the window's pixels inside the image / how many there are (the last window has 2 columns)
    torch.testing.assert_close(got[0, 0, 3, 3], y[0, 0, 6:8, 6:8].mean())
    torch.testing.assert_close(got[0, 0, 1, 2], y[0, 0, 2:5, 4:7].mean())


def test_the_released_nets_have_the_tables_parameter_counts_and_order():
    n13, n11, both = ConvLocalNet(layers="13pct"), ConvLocalNet(layers="11pct"), ConvLocalNet(layers="13pct-rnorm")
    count = [sum(p.numel() for p in n.parameters()) for n in (n13, n11, both)]
    assert count == [1_116_490, 2_112_970, 1_116_490]
    assert [name for name, _ in n11.layers.named_children()] == [
        "conv1", "act1", "pool1", "rnorm1", "conv2", "act2", "rnorm2", "pool2", "local3", "act3", "local4", "act4",
        "flatten", "fc10"]
    assert "rnorm1" not in dict(n13.layers.named_children())
    tables = {name: [(layer, s["weight_decay"]) for layer, s in n.layer_settings().items()]
              for name, n in (("13", n13), ("11", n11))}
    assert tables["13"] == [("layers.conv1", 0.0), ("layers.conv2", 0.0), ("layers.local3", 0.004),
                            ("layers.local4", 0.004), ("layers.fc10", 0.004)]
    assert tables["11"][-1] == ("layers.fc10", 0.01)
    assert {(s["lr_mult"], s["bias_lr_mult"], s["bias_weight_decay"]) for s in n13.layer_settings().values()} == {
        (1.0, 2.0, 0.0)}
    stds = {name: float(getattr(n13.layers, name).weight.detach().std())
            for name in ("conv1", "conv2", "local3", "fc10")}
    assert stds["conv1"] == pytest.approx(1e-4, rel=0.05) and stds["local3"] == pytest.approx(0.04, rel=0.01)
    assert all(float(p.detach().abs().max()) == 0 for n, p in n13.named_parameters() if n.endswith("bias"))
    assert n13(torch.randn(2, 3, 24, 24)).shape == (2, 10)


def test_fig1_nets_relu_tanh_and_no_weight_decay():
    relu, tanh = Fig1Net(activation_kind="relu"), Fig1Net(activation_kind="tanh", tanh_a=1.7, tanh_b=0.5)
    assert sum(p.numel() for p in relu.parameters()) == 145_578  # layers-80sec.cfg: 2432+25632+51264+65600+650
    assert not any(isinstance(m, torch.nn.ReLU) for m in tanh.modules())
    assert sum(isinstance(m, ScaledTanh) for m in tanh.modules()) == 4
    x = torch.linspace(-3, 3, 7)
    torch.testing.assert_close(ScaledTanh(1.7, 0.5)(x), 1.7 * torch.tanh(0.5 * x))
    assert {s["weight_decay"] for s in relu.layer_settings().values()} == {0.0}
    local = Fig1Net(arch="conv-local", input_size=24, input="convnet-crops")
    assert {s["weight_decay"] for s in local.layer_settings().values()} == {0.0}
    assert sum(p.numel() for p in local.parameters()) == 1_116_490
    assert relu(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_per_layer_groups_follow_the_params_file_and_only_epsw_drops():
    torch.manual_seed(3)
    net = ConvLocalNet(layers="11pct")
    args = parse_args(["--data", "S", "--out", "R", "--config", "cifar10_conv_local_rnorm"])
    opt = make_optimizer(net, args)
    apply_learning_rates(opt, StepSchedule(0.001, [1]), 0.001, args.bias_lr_fixed)
    groups = {(g["layer"], g["kind"]): g for g in opt.param_groups}
    assert groups[("layers.fc10", "weight")]["weight_decay"] == 0.01
    assert groups[("layers.fc10", "bias")]["weight_decay"] == 0.0
    assert groups[("layers.conv1", "weight")]["lr"] == 0.001 and groups[("layers.conv1", "bias")]["lr"] == 0.002
    schedule = StepSchedule(0.001, [1])
    schedule.step(0.5, 1)  # the schedule's first drop: epsW / 10, epsB unchanged
    apply_learning_rates(opt, schedule, 0.001, args.bias_lr_fixed)
    assert groups[("layers.local3", "weight")]["lr"] == pytest.approx(0.0001)
    assert groups[("layers.local3", "bias")]["lr"] == 0.002
    # One step of PaperSGD per group is cuda-convnet's: inc = mom inc - eps grad - wc eps w; w += inc.
    w0 = net.layers.fc10.weight.detach().clone()
    b0 = net.layers.fc10.bias.detach().clone()
    loss = F.cross_entropy(net(torch.randn(4, 3, 24, 24) * 50), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    gw, gb = net.layers.fc10.weight.grad.clone(), net.layers.fc10.bias.grad.clone()
    opt.step()
    torch.testing.assert_close(net.layers.fc10.weight.detach(), w0 - 0.0001 * gw - 0.01 * 0.0001 * w0)
    torch.testing.assert_close(net.layers.fc10.bias.detach(), b0 - 0.002 * gb)


def test_tutorial_net_shapes_init_and_batch_norm():
    torch.manual_seed(4)
    net = TutorialAlexNet()
    assert net(torch.randn(2, 3, 28, 28)).shape == (2, 10)
    assert float(net.layers.conv2.bias.detach().min()) == 1.0 and float(net.layers.conv3.bias.detach().abs().max()) == 0
    assert net.layers.fc6.in_features == 128 * 2 * 2 and net.layers.fc6.out_features == 1024
    bn = TutorialAlexNet(batch_norm=True, input_size=32)
    names = [n for n, _ in bn.layers.named_children()]
    assert "bn1" in names and "norm1" not in names and bn(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert not hasattr(net, "layer_settings")  # the run's flags apply to every layer
    with pytest.raises(ValueError, match="expects N x 3 x 28 x 28"):
        net(torch.randn(2, 3, 32, 32))


def test_inputs_lists_agree():
    from paper_repro.data.cifar_views import INPUTS as DATA_INPUTS
    from paper_repro.nets.cifar import INPUTS as NET_INPUTS
    assert DATA_INPUTS == NET_INPUTS


def test_bench_local_times_both_nets_on_the_same_weights():
    from paper_repro.bench.command import get_args_parser
    from paper_repro.bench.local import bench_local
    args = get_args_parser().parse_args(["local", "--batch-size", "4", "--steps", "1", "--repeats", "2", "--threads", "1"])
    result = bench_local(args)
    assert result["local3_max_abs_difference"] < 1e-4  # the same layer: float rounding only
    for part in ("layers", "step"):
        ours, plain = result[part]["ours"], result[part]["plain"]
        assert len(ours["rounds"]) == len(plain["rounds"]) == 2
        assert result[part]["speedup"] == plain["seconds_per_batch_median"] / ours["seconds_per_batch_median"]
        assert ours["epoch_seconds"] == pytest.approx(50_000 / 4 * ours["seconds_per_batch_median"])

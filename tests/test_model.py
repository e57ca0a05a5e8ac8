"""The faithful two-column AlexNet (issue 2), checked on the CPU against an independent computation."""
import io
import json

import pytest
import torch
import torch.nn.functional as F

import paper_repro.nets.alexnet as model_mod
import paper_repro.nets.lrn as lrn_mod
from paper_repro.core.recipe import PAPER
from paper_repro.nets.alexnet import LAYERS, AlexNet
from paper_repro.nets.links import LINKS
from paper_repro.nets.lrn import local_response_norm

ONE, TWO = ("cpu",), ("cpu", "cpu")
CANONICAL_WIDTH1 = {
    "conv1.weight": (96, 3, 11, 11), "conv1.bias": (96,),
    "conv2.weight": (256, 48, 5, 5), "conv2.bias": (256,),
    "conv3.weight": (384, 256, 3, 3), "conv3.bias": (384,),
    "conv4.weight": (384, 192, 3, 3), "conv4.bias": (384,),
    "conv5.weight": (256, 192, 3, 3), "conv5.bias": (256,),
    "fc6.weight": (4096, 9216), "fc6.bias": (4096,),
    "fc7.weight": (4096, 4096), "fc7.bias": (4096,),
    "fc8.weight": (1000, 4096), "fc8.bias": (1000,),
}
# width=0.125 keeps whole-net tests fast: per column 6, 16, 24, 24, 16 kernels and 256, 256 FC units.
SMALL = dict(num_classes=10, width=0.125)


# ---------------------------------------------------------------- an independent reference


def lrn_formula(x, groups, alpha):
    """b_i = a_i / (2 + alpha * sum_{j=i-2}^{i+2} a_j^2)^0.75, the window clipped to i's group, by explicit loops."""
    c = x.shape[1] // groups
    out = []
    for g in range(groups):
        for i in range(c):
            lo, hi = g * c + max(0, i - 2), g * c + min(c, i + 3)
            s = sum(x[:, j] ** 2 for j in range(lo, hi))
            out.append(x[:, g * c + i] / (2 + alpha * s) ** 0.75)
    return torch.stack(out, 1)


def same_map_formula(x, size=5, scale=0.001, power=0.75):
    """x / (1 + scale/size^2 * sum of x^2 over the size x size window, zeros beyond the border)^power, by offsets."""
    r = size // 2
    sq = F.pad(x * x, (r, r, r, r))
    h, w = x.shape[2:]
    s = sum(sq[:, :, dy:dy + h, dx:dx + w] for dy in range(size) for dx in range(size))
    return x / (1 + scale / size ** 2 * s) ** power


def reference(sd, x, groups=2, lrn="code", pool=(3, 2), input_size=224, lrn1_input="pre-relu", cnorm2=True):
    """The net from a canonical state_dict with torch.nn.functional only; returns (logits, post-ReLU fc7).

    The released code's order in layer 1 (layers-145.cfg): conv1 -> cmrnorm -> max-pool -> ReLU; its
    cnorm2 after conv2's cmrnorm. The paper's text: ReLU before the normalisation, no cnorm2.
    """
    alpha = {"code": 1e-4 / 5, "paper": 1e-4}.get(lrn)

    def norm(h):
        return h if lrn == "none" else lrn_formula(h, groups, alpha)

    if input_size == 224:
        x = F.pad(x, (0, 3, 0, 3))
    h = F.conv2d(x, sd["conv1.weight"], sd["conv1.bias"], stride=4)
    if lrn1_input == "pre-relu" and lrn != "none":
        h = F.relu(F.max_pool2d(norm(h), *pool))
    else:
        h = F.max_pool2d(norm(F.relu(h)), *pool)
    h = norm(F.relu(F.conv2d(h, sd["conv2.weight"], sd["conv2.bias"], padding=2, groups=groups)))
    if cnorm2 and lrn != "none":
        h = same_map_formula(h)
    h = F.max_pool2d(h, *pool)
    h = F.relu(F.conv2d(h, sd["conv3.weight"], sd["conv3.bias"], padding=1))
    h = F.relu(F.conv2d(h, sd["conv4.weight"], sd["conv4.bias"], padding=1, groups=groups))
    h = F.max_pool2d(F.relu(F.conv2d(h, sd["conv5.weight"], sd["conv5.bias"], padding=1, groups=groups)), *pool)
    h = F.relu(F.linear(h.reshape(h.shape[0], -1), sd["fc6.weight"], sd["fc6.bias"]))
    h7 = F.relu(F.linear(h, sd["fc7.weight"], sd["fc7.bias"]))
    return F.linear(h7, sd["fc8.weight"], sd["fc8.bias"]), h7


def canonical_grads(model):
    """The gradients of `model`'s parameters in the canonical layout (column halves concatenated on devices[0])."""
    if not model.two_column:
        return {name: p.grad for name, p in model.named_parameters()}
    grads = {}
    for name in LAYERS:
        for p in ("weight", "bias"):
            if name == "fc8":
                grads[f"fc8.{p}"] = getattr(model.fc8, p).grad
            else:  # the columns may sit on two devices: bring both halves to devices[0] first
                grads[f"{name}.{p}"] = torch.cat([getattr(getattr(c, name), p).grad.to(model.devices[0])
                                                  for c in model.columns])
    return grads


def exercising_state(model, seed=0):
    """A canonical state where the signal survives all layers and ReLU, LRN and every bias really matter."""
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    for key, value in sd.items():
        if key.endswith(".bias"):
            sd[key] = torch.randn(value.shape, generator=g, dtype=value.dtype) * 0.5
        else:  # He-like scale instead of the paper's 0.01, so the output depends on the image
            sd[key] = value * (2 / value[0].numel()) ** 0.5 / 0.01
    sd["conv1.weight"] = sd["conv1.weight"] * 3  # large conv1 maps: the LRN denominator is far from k
    return sd


def images(n=2, size=224, seed=0, dtype=torch.float32):
    """Mean-subtracted-looking RGB on the 0-255 scale."""
    return (torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 60).to(dtype)


# ---------------------------------------------------------------- width 1: counts, shapes, init


@pytest.fixture(scope="module")
def full_nets():
    """The paper's net at width 1 in both layouts, built from the same seed."""
    torch.manual_seed(0)
    one = AlexNet(devices=ONE)
    torch.manual_seed(0)
    two = AlexNet(devices=TWO)
    return one, two


def test_width1_parameter_count_and_canonical_state_dict(full_nets):
    for net in full_nets:
        assert sum(p.numel() for p in net.parameters()) == 60_965_224
        sd = net.state_dict()
        assert list(sd) == list(CANONICAL_WIDTH1)  # exactly the 16 Caffe keys, in order
        assert {k: tuple(v.shape) for k, v in sd.items()} == CANONICAL_WIDTH1
        assert net.canonical_shapes() == CANONICAL_WIDTH1
    one, two = full_nets
    assert two.two_column and not one.two_column
    assert [tuple(two.columns[0].conv2.weight.shape), tuple(two.columns[1].fc6.weight.shape)] == [
        (128, 48, 5, 5), (2048, 9216)]


def test_same_seed_same_canonical_init_in_both_layouts(full_nets):
    a, b = (net.state_dict() for net in full_nets)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_init_statistics(full_nets):
    sd = full_nets[1].state_dict()
    for name in LAYERS:
        w, b = sd[f"{name}.weight"], sd[f"{name}.bias"]
        n = w.numel()
        # N(0, 0.01): the sample mean and std within 5 standard errors.
        assert abs(w.mean().item()) < 5 * 0.01 / n ** 0.5, name
        std = 0.03 if name in ("conv3", "conv4", "conv5") else 0.01  # layers-145.cfg: initW 0.03 in conv3-5
        assert abs(w.std().item() / std - 1) < 5 / (2 * n) ** 0.5, name
        want = 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert torch.equal(b, torch.full_like(b, want)), name


def test_bias_init_option():
    net = AlexNet(devices=TWO, bias_init=0.1, **SMALL)
    sd = net.state_dict()
    for name in LAYERS:
        b = sd[f"{name}.bias"]
        want = 0.1 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert torch.equal(b, torch.full_like(b, want)), name


def output_sizes(net, x):
    """Forward `x` and return {layer: output shape} for conv1..pool5 of column 0 (or the whole net)."""
    m = net.columns[0] if net.two_column else net
    shapes, hooks = {}, []
    for name in ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"):
        hooks.append(getattr(m, name).register_forward_hook(
            lambda mod, inp, out, name=name: shapes.__setitem__(name, tuple(out.shape))))
    with torch.no_grad():
        logits = net(x)
    for h in hooks:
        h.remove()
    return shapes, tuple(logits.shape)


@pytest.mark.parametrize("layout", [ONE, TWO], ids=["one-device", "two-column"])
def test_width1_layer_output_sizes(full_nets, layout):
    net = full_nets[0] if layout == ONE else full_nets[1]
    shapes, logits = output_sizes(net.eval(), images(1))
    k = 2 if net.two_column else 1  # a column holds half the kernels
    assert shapes == {
        "conv1": (1, 96 // k, 55, 55), "pool1": (1, 96 // k, 27, 27),
        "conv2": (1, 256 // k, 27, 27), "pool2": (1, 256 // k, 13, 13),
        "conv3": (1, 384 // k, 13, 13), "conv4": (1, 384 // k, 13, 13),
        "conv5": (1, 256 // k, 13, 13), "pool5": (1, 256 // k, 6, 6),
    }
    assert logits == (1, 1000)


# ---------------------------------------------------------------- variants and width


def test_one_column_half_variant_count_and_shapes():
    net = AlexNet(devices=TWO, variant="one-column-half")  # one GPU's net: runs on devices[0] only
    assert net.devices == ("cpu",) and not net.two_column
    expected = (48 * 3 * 11 * 11 + 48          # conv1: half of 96
                + 128 * 48 * 5 * 5 + 128       # conv2: half of 256, sees all 48
                + 192 * 128 * 3 * 3 + 192      # conv3: half of 384
                + 192 * 192 * 3 * 3 + 192      # conv4: half of 384
                + 256 * 192 * 3 * 3 + 256      # conv5: NOT halved
                + 4096 * 256 * 6 * 6 + 4096    # fc6: not halved
                + 4096 * 4096 + 4096           # fc7
                + 1000 * 4096 + 1000)          # fc8: 59,798,312 in all
    assert sum(p.numel() for p in net.parameters()) == expected
    assert net.canonical_shapes()["conv5.weight"] == (256, 192, 3, 3)
    assert net.canonical_shapes()["conv2.weight"] == (128, 48, 5, 5)  # no groups: one column sees all maps


@pytest.mark.parametrize("options", [dict(), dict(lrn="none"), dict(lrn="paper"), dict(input_size=227),
                                     dict(pooling="non-overlapping")],
                         ids=["default", "no-lrn", "paper-lrn", "227", "non-overlapping-pool"])
def test_variant_shapes_and_counts_at_quarter_width(options):
    size = options.get("input_size", 224)
    expected = (24 * 3 * 11 * 11 + 24      # per column 12 = round(48 / 4)
                + 64 * 12 * 5 * 5 + 64     # 32 per column, grouped
                + 96 * 64 * 3 * 3 + 96     # 48 per column, sees both columns
                + 96 * 48 * 3 * 3 + 96
                + 64 * 48 * 3 * 3 + 64
                + 1024 * 64 * 6 * 6 + 1024  # non-overlapping 2/2 pooling also ends at 6 x 6
                + 1024 * 1024 + 1024
                + 10 * 1024 + 10)
    for devices in (ONE, TWO):
        net = AlexNet(devices=devices, num_classes=10, width=0.25, **options).eval()
        assert sum(p.numel() for p in net.parameters()) == expected
        shapes, logits = output_sizes(net, images(1, size))
        assert [shapes[k][2] for k in shapes] == [55, 27, 27, 13, 13, 13, 13, 6]
        assert logits == (1, 10)


def test_width_rounding():
    shapes = AlexNet(devices=ONE, width=0.3).canonical_shapes()
    # per column: round(48 * .3) = 14, round(128 * .3) = 38, round(192 * .3) = 58, round(2048 * .3) = 614
    assert [shapes[f"{n}.weight"] for n in LAYERS] == [
        (28, 3, 11, 11), (76, 14, 5, 5), (116, 76, 3, 3), (116, 58, 3, 3), (76, 58, 3, 3),
        (1228, 76 * 36), (1228, 1228), (1000, 1228)]
    assert AlexNet(devices=ONE, width=0.001, num_classes=3).canonical_shapes()["conv2.weight"] == (2, 1, 5, 5)


def test_config_rebuilds_the_net():
    net = AlexNet(devices=TWO, num_classes=7, width=0.125, input_size=227, lrn="paper",
                  pooling="non-overlapping", bias_init=0.1, dropout=0.3, init_std=0.02, init_std_conv3_5=0.04,
                  lrn1_input="post-relu", cnorm2=False, dropout_scaling="inverted")
    config = json.loads(json.dumps(net.config()))
    assert config == {"num_classes": 7, "width": 0.125, "input_size": 227, "lrn": "paper",
                      "pooling": "non-overlapping", "variant": "two-column", "bias_init": 0.1, "dropout": 0.3,
                      "init_std": 0.02, "init_std_conv3_5": 0.04, "lrn1_input": "post-relu", "cnorm2": False,
                      "dropout_scaling": "inverted"}
    again = AlexNet(devices=ONE, **config)
    assert again.config() == config and again.canonical_shapes() == net.canonical_shapes()


def test_defaults_are_the_papers_recipe():
    config = AlexNet(devices=("meta",)).config()
    assert {k: v for k, v in config.items() if k != "num_classes"} == {k: PAPER[k] for k in config if k in PAPER}
    assert set(config) - set(PAPER) == {"num_classes"}


def test_init_std_sets_the_weights_std_from_the_same_draws():
    torch.manual_seed(3)
    paper = AlexNet(devices=TWO, **SMALL).state_dict()
    torch.manual_seed(3)
    wide = AlexNet(devices=TWO, init_std=0.05, init_std_conv3_5=0.06, **SMALL).state_dict()
    for key in paper:
        if key.endswith(".weight"):  # the same standard normal draws, scaled by the std
            factor = 2 if key.split(".")[0] in ("conv3", "conv4", "conv5") else 5  # 0.06 / 0.03, 0.05 / 0.01
            torch.testing.assert_close(wide[key], paper[key] * factor, rtol=1e-6, atol=0)
        else:
            assert torch.equal(wide[key], paper[key]), key
    fc6 = wide["fc6.weight"]
    assert abs(fc6.std().item() / 0.05 - 1) < 5 / (2 * fc6.numel()) ** 0.5


# ---------------------------------------------------------------- the function itself


CONFIGS = {
    "default": dict(),
    "paper-text-order": dict(lrn1_input="post-relu", cnorm2=False),
    "paper-lrn-227": dict(lrn="paper", input_size=227),
    "no-lrn-2x2-pool": dict(lrn="none", pooling="non-overlapping"),
    "one-column-half": dict(variant="one-column-half"),
}


@pytest.mark.parametrize("layout", [ONE, TWO], ids=["one-device", "two-column"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_and_gradients_match_independent_grouped_computation(layout, name):
    options = CONFIGS[name]
    net = AlexNet(devices=layout, dropout=0.0, **SMALL, **options).double().train()
    net.load_state_dict(exercising_state(net), strict=True)
    size = options.get("input_size", 224)
    x = images(2, size, dtype=torch.float64).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    sd = {k: v.detach().clone().requires_grad_(True) for k, v in net.state_dict().items()}
    groups = 1 if options.get("variant") == "one-column-half" else 2
    pool = (2, 2) if options.get("pooling") == "non-overlapping" else (3, 2)
    want, want_fc7 = reference(sd, x_ref, groups, options.get("lrn", "code"), pool, size,
                               options.get("lrn1_input", "pre-relu"), options.get("cnorm2", True))

    got = net(x)
    assert got.shape == (2, 10) and got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(net.fc7_features(x), want_fc7, rtol=1e-9, atol=1e-9)
    assert (want[0] - want[1]).abs().max() > 1  # the output depends on the image

    r = torch.randn(2, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (got * r).sum().backward()
    (want * r).sum().backward()
    grads = canonical_grads(net)
    for key, value in sd.items():
        torch.testing.assert_close(grads[key], value.grad, rtol=1e-7, atol=1e-12, msg=key)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-7, atol=1e-12)


def test_lrn_actually_changes_the_output():
    x = images(2)
    net = AlexNet(devices=ONE, **SMALL).eval()
    sd = exercising_state(net)
    outs = []
    for lrn in ("code", "paper", "none"):
        other = AlexNet(devices=ONE, lrn=lrn, **SMALL).eval()
        other.load_state_dict(sd)
        with torch.no_grad():
            outs.append(other(x))
    assert (outs[0] - outs[1]).abs().max() > 1 and (outs[0] - outs[2]).abs().max() > 1


@pytest.mark.parametrize("source,target", [(TWO, ONE), (ONE, TWO)], ids=["two-to-one", "one-to-two"])
def test_checkpoint_crosses_layouts(source, target):
    torch.manual_seed(1)
    a = AlexNet(devices=source, **SMALL).eval()
    a.load_state_dict(exercising_state(a))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(2)
    b = AlexNet(devices=target, **SMALL).eval()
    x = images(2)
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))
        result = b.load_state_dict(torch.load(buf, weights_only=True), strict=True)
        assert not result.missing_keys and not result.unexpected_keys
        # the weights are equal (below); only the summation order differs between the layouts' kernels
        # (an AMD EPYC VM's oneDNN: 1.3e-5 relative on a logit of 18)
        torch.testing.assert_close(b(x), a(x), rtol=1e-4, atol=1e-5)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_loading_another_width_fails_with_the_same_message_in_both_layouts():
    other = AlexNet(devices=ONE, num_classes=10, width=0.25).state_dict()
    messages = []
    for layout in (ONE, TWO):
        with pytest.raises(RuntimeError) as info:
            AlexNet(devices=layout, **SMALL).load_state_dict(other)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert ("size mismatch for conv1.weight: copying a param with shape torch.Size([24, 3, 11, 11]) from "
            "checkpoint, the shape in current model is torch.Size([12, 3, 11, 11]).") in messages[0]
    assert "Missing key" not in messages[0]


def test_missing_keys_have_canonical_names_in_both_layouts():
    messages = []
    for layout in (ONE, TWO):
        net = AlexNet(devices=layout, **SMALL)
        sd = net.state_dict()
        del sd["conv2.weight"], sd["fc8.bias"]
        assert net.load_state_dict(sd, strict=False).missing_keys == ["conv2.weight", "fc8.bias"]
        with pytest.raises(RuntimeError) as info:
            net.load_state_dict(sd)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert 'Missing key(s) in state_dict: "conv2.weight", "fc8.bias".' in messages[0]


def test_transfers_happen_only_at_conv3_and_the_fc_layers(monkeypatch):
    calls = []
    real = model_mod.transfer

    def counting(tensor, device, link, *args):
        calls.append((link, tuple(tensor.shape), str(device)))
        return real(tensor, device, link, *args)

    monkeypatch.setattr(model_mod, "transfer", counting)
    net = AlexNet(devices=TWO, **SMALL)
    x = images(2)
    net(x).sum().backward()  # backward adds no transfers of its own
    # per column: conv2 16 maps of 13 x 13; pool5 16 x 6 x 6 = 576; fc6, fc7 256 units.
    assert calls == [("input", (2, 3, 224, 224), "cpu"),
                     ("conv3", (2, 16, 13, 13), "cpu"), ("conv3", (2, 16, 13, 13), "cpu"),
                     ("fc6", (2, 576), "cpu"), ("fc6", (2, 576), "cpu"),
                     ("fc7", (2, 256), "cpu"), ("fc7", (2, 256), "cpu"),
                     ("fc8", (2, 256), "cpu")]
    calls.clear()
    AlexNet(devices=ONE, **SMALL)(x)
    assert calls == []  # grouped convolutions: nothing moves


def test_canonical_grads_brings_both_columns_to_one_device():
    # A fake two-device layout: column 0 and fc8 on "meta", column 1 on the CPU. Concatenating the
    # halves where they lie fails (as cuda:0 + cuda:1 would); canonical_grads moves them first.
    net = AlexNet(devices=("meta", "cpu"), **SMALL)
    assert {str(p.device) for p in net.columns[1].parameters()} == {"cpu"}
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    grads = canonical_grads(net)
    assert {k: tuple(g.shape) for k, g in grads.items()} == net.canonical_shapes()
    assert {str(g.device) for g in grads.values()} == {"meta"}


def link_bytes(n, width_net, dtype_bytes=4):
    """Bytes one forward of `width_net` (two columns) sends at each link, from its canonical shapes."""
    shapes = width_net.canonical_shapes()
    half_conv2, half_fc6_in = shapes["conv2.weight"][0] // 2, shapes["fc6.weight"][1] // 2
    half_fc6, half_fc7 = shapes["fc6.weight"][0] // 2, shapes["fc7.weight"][0] // 2
    return {"input": n * 3 * 224 * 224 * dtype_bytes,
            "conv3": 2 * n * half_conv2 * 13 * 13 * dtype_bytes,  # pool2 maps, each column to the other
            "fc6": 2 * n * half_fc6_in * dtype_bytes, "fc7": 2 * n * half_fc6 * dtype_bytes,
            "fc8": n * half_fc7 * dtype_bytes}  # column 1's fc7 to fc8 on devices[0]


def grad_nodes(tensor):
    """Names of every node in the autograd graph behind `tensor`."""
    seen, todo, names = set(), [tensor.grad_fn], []
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        todo.extend(f for f, _ in node.next_functions)
    return names


def run_net(copy_links, x, r):
    """Forward and backward of the same exercised net (dropout off); returns (net, logits, canonical grads, x.grad)."""
    torch.manual_seed(0)
    net = AlexNet(devices=TWO, dropout=0.0, **SMALL).double().train()
    net.load_state_dict(exercising_state(net))
    net.copy_links = copy_links
    x = x.clone().requires_grad_(True)
    logits = net(x)
    nodes = grad_nodes(logits)
    (logits * r).sum().backward()
    return net, logits, nodes, canonical_grads(net), x.grad


def test_real_copies_at_the_links_give_the_same_forward_and_backward():
    x = images(2, dtype=torch.float64)
    r = torch.randn(2, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    net, logits, nodes, grads, x_grad = run_net(False, x, r)
    assert nodes.count("ToCopyBackward0") == 0  # cpu,cpu: .to returns the tensor itself
    copied, logits_c, nodes_c, grads_c, x_grad_c = run_net(True, x, r)
    # One copy node per crossing, as on two GPUs: input, conv3 x2, fc6 x2, fc7 x2, fc8.
    assert nodes_c.count("ToCopyBackward0") == 8
    assert torch.equal(logits_c, logits) and torch.equal(x_grad_c, x_grad)
    for key in grads:
        assert torch.equal(grads_c[key], grads[key]), key
    # Exactly the links in LINKS carried data, both ways, the same bytes with or without the copies.
    assert net.traffic.forward == copied.traffic.forward == link_bytes(2, net, dtype_bytes=8)
    assert net.traffic.backward == copied.traffic.backward == link_bytes(2, net, dtype_bytes=8)
    assert [k for k, v in copied.traffic.forward.items() if v] == list(LINKS)


def test_copy_links_makes_a_new_tensor_at_every_link(monkeypatch):
    arrived = []
    real = model_mod.transfer

    def spy(tensor, device, link, *args):
        out = real(tensor, device, link, *args)
        arrived.append((link, out.data_ptr() != tensor.data_ptr()))
        return out

    monkeypatch.setattr(model_mod, "transfer", spy)
    net = AlexNet(devices=TWO, **SMALL)
    net.copy_links = True
    net(images(2))
    assert arrived == [(link, True) for link in ("input", "conv3", "conv3", "fc6", "fc6", "fc7", "fc7", "fc8")]


def test_link_traffic_counts_forward_and_backward_bytes_of_one_step():
    net = AlexNet(devices=TWO, **SMALL)
    x = images(4)
    net(x).sum().backward()
    want = link_bytes(4, net)
    assert net.traffic.forward == want
    assert net.traffic.backward == {**want, "input": 0}  # the image needs no gradient: nothing comes back
    assert net.traffic.total() == 2 * sum(want.values()) - want["input"]
    with torch.no_grad():
        net(x)  # no graph: no gradient will cross
    assert net.traffic.forward == {k: 2 * v for k, v in want.items()}
    assert net.traffic.backward == {**want, "input": 0}
    net.traffic.reset()
    assert net.traffic.total() == 0
    one = AlexNet(devices=ONE, **SMALL)
    one(x).sum().backward()
    assert one.traffic.total() == 0  # one device, grouped convolutions: no link at all


def test_input_crosses_in_the_autocast_dtype_and_the_function_is_unchanged():
    torch.manual_seed(0)
    net = AlexNet(devices=TWO, **SMALL).train()
    net.load_state_dict(exercising_state(net))
    x = images(2).requires_grad_(True)
    results = []
    for narrow in (True, False):
        net.send_autocast_dtype = narrow
        net.traffic.reset()
        torch.manual_seed(5)  # the same dropout masks
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(x)
        logits.float().sum().backward()
        results.append((logits, x.grad.clone(), {k: g.clone() for k, g in canonical_grads(net).items()},
                        dict(net.traffic.forward)))
        x.grad = None
        net.zero_grad()
    (narrow_logits, narrow_xgrad, narrow_grads, narrow_bytes), (logits, xgrad, grads, wide_bytes) = results
    assert torch.equal(narrow_logits, logits) and torch.equal(narrow_xgrad, xgrad)
    for key in grads:
        assert torch.equal(narrow_grads[key], grads[key]), key
    assert wide_bytes["input"] == 2 * 3 * 224 * 224 * 4 and narrow_bytes["input"] == wide_bytes["input"] // 2
    assert {k: v for k, v in narrow_bytes.items() if k != "input"} == {k: v for k, v in wide_bytes.items()
                                                                         if k != "input"}


def test_dropout_is_on_in_train_and_off_in_eval():
    net = AlexNet(devices=TWO, **SMALL)
    x = images(2)
    with torch.no_grad():
        assert not torch.equal(net.train()(x), net(x))
        assert torch.equal(net.eval()(x), net(x))
        assert torch.equal(net.fc7_features(x), net.fc7_features(x))
        assert net.fc7_features(x).shape == (2, 512)
        assert (net.fc7_features(x) >= 0).all()  # post-ReLU


@pytest.mark.parametrize("scaling", ["test", "inverted"])
@pytest.mark.parametrize("layout", [ONE, TWO], ids=["one-device", "two-column"])
def test_dropout_drops_half_of_the_post_relu_fc6_and_fc7_outputs(layout, scaling):
    net = AlexNet(devices=layout, dropout_scaling=scaling, **SMALL).train()
    m = net.columns[0] if net.two_column else net
    seen = {}
    for name, module in (("drop6", m.drop6), ("drop7", net.drop7)):
        module.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, (inp[0], out)))
    with torch.no_grad():
        net(images(4))
    assert set(seen) == {"drop6", "drop7"}
    for name, (inp, out) in seen.items():
        assert (inp >= 0).all(), name  # dropout acts on the ReLU's output, as in the paper
        kept = out != 0
        # The paper's (section 4.2) and the code's: kept outputs unchanged in training, x0.5 at test;
        # torch's inverted dropout: x2 in training, unchanged at test.
        torch.testing.assert_close(out[kept], (1 if scaling == "test" else 2) * inp[kept])
        dropped = (~kept & (inp != 0)).sum() / (inp != 0).sum()
        assert 0.4 < dropped.item() < 0.6, name
    module = m.drop6.eval()
    x = torch.rand(3, 5)
    assert torch.equal(module(x), x * 0.5 if scaling == "test" else x)


def test_state_dict_hooks_respect_a_parent_prefix():
    two = torch.nn.ModuleDict({"net": AlexNet(devices=TWO, **SMALL)})  # e.g. DistributedDataParallel's "module."
    one = torch.nn.ModuleDict({"net": AlexNet(devices=ONE, **SMALL)})
    sd = two.state_dict()
    assert list(sd) == ["net." + k for k in two["net"].canonical_shapes()]
    one.load_state_dict(sd, strict=True)
    two.load_state_dict(one.state_dict(), strict=True)
    x = images(1)
    with torch.no_grad():
        torch.testing.assert_close(one["net"].eval()(x), two["net"].eval()(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", [ONE, TWO], ids=["one-device", "two-column"])
def test_channels_last(layout):
    net = AlexNet(devices=layout, **SMALL).eval()
    x = images(2)
    with torch.no_grad():
        want = net(x)
    net = net.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    got = net(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    got.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("layout", [ONE, TWO], ids=["one-device", "two-column"])
def test_cpu_computes_in_channels_last_and_it_is_the_same_function(monkeypatch, layout):
    net = AlexNet(devices=layout, dropout=0.0, **SMALL).double().train()
    net.load_state_dict(exercising_state(net))
    seen = []
    conv2 = net.columns[0].conv2 if net.two_column else net.conv2
    conv2.register_forward_hook(lambda m, i, o: seen.append(o.is_contiguous(memory_format=torch.channels_last)))
    x = images(2, dtype=torch.float64)  # an NCHW batch, as TrainPatch gives
    r = torch.randn(2, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    results = []
    for fmt in (torch.channels_last, torch.contiguous_format):
        monkeypatch.setattr(model_mod, "CPU_MEMORY_FORMAT", fmt)
        xi = x.clone().requires_grad_(True)
        logits = net(xi)
        (logits * r).sum().backward()
        results.append((logits.detach(), xi.grad, {k: g.clone() for k, g in canonical_grads(net).items()}))
        net.zero_grad()
    assert seen == [True, False]  # the activations really were channels_last, then NCHW
    (got, got_x, got_grads), (want, want_x, want_grads) = results
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_x, want_x, rtol=1e-7, atol=1e-12)
    for key in want_grads:
        torch.testing.assert_close(got_grads[key], want_grads[key], rtol=1e-7, atol=1e-12, msg=key)


# ---------------------------------------------------------------- LRN


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("convention,alpha", [("code", 1e-4 / 5), ("paper", 1e-4)])
def test_lrn_matches_its_formula(groups, convention, alpha):
    x = torch.relu(torch.randn(2, 12, 3, 4, dtype=torch.float64)) * 60
    got = local_response_norm(x, convention=convention, groups=groups)
    torch.testing.assert_close(got, lrn_formula(x, groups, alpha), rtol=1e-12, atol=0)
    assert (got - x / 2 ** 0.75).abs().max() > 1  # the normalisation is doing something
    if convention == "code" and groups == 1:  # torch's own LRN divides alpha by n too
        torch.testing.assert_close(got, F.local_response_norm(x, 5, 1e-4, 0.75, 2.0), rtol=1e-12, atol=0)


def lrn_window_formula(x, groups, alpha, size):
    """Any window size n: channel i sums channels i - n//2 .. i + (n-1)//2 of its group, by explicit loops."""
    c = x.shape[1] // groups
    out = []
    for g in range(groups):
        for i in range(c):
            lo, hi = g * c + max(0, i - size // 2), g * c + min(c, i + (size - 1) // 2 + 1)
            s = sum(x[:, j] ** 2 for j in range(lo, hi))
            out.append(x[:, g * c + i] / (2 + alpha * s) ** 0.75)
    return torch.stack(out, 1)


LAYOUTS = pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last],
                                  ids=["nchw-taps", "channels_last-band-gemm"])


@pytest.mark.parametrize("size", [3, 4, 5, 6])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("convention", ["code", "paper"])
@LAYOUTS
def test_lrn_any_window_size_matches_its_formula(size, groups, convention, layout):
    x = torch.randn(2, 12, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(size)) * 60
    x = x.contiguous(memory_format=layout)
    scale = 1e-4 / size if convention == "code" else 1e-4
    got = local_response_norm(x, size=size, convention=convention, groups=groups)
    torch.testing.assert_close(got, lrn_window_formula(x, groups, scale, size), rtol=1e-12, atol=0)
    if convention == "code" and groups == 1:  # torch pads even windows the same way (n//2 before)
        torch.testing.assert_close(got, F.local_response_norm(x, size, 1e-4, 0.75, 2.0), rtol=1e-12, atol=0)


@pytest.mark.parametrize("chain", [True, False], ids=["cpu-sqrt-chain", "gpu-pow"])
def test_lrn_both_inverse_powers_match_the_formula(monkeypatch, chain):
    # The GPU computes s^-3/4 with pow, the CPU with sqrt/multiply/rsqrt: run both here.
    monkeypatch.setattr(lrn_mod, "SQRT_CHAIN_DEVICES", ("cpu",) if chain else ())
    calls = []
    real_pow = torch.pow
    monkeypatch.setattr(torch, "pow", lambda *a, **k: calls.append(1) or real_pow(*a, **k))
    x = (torch.relu(torch.randn(2, 12, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))) * 60
         ).requires_grad_(True)
    got = local_response_norm(x, groups=2)
    torch.testing.assert_close(got, lrn_formula(x.detach(), 2, 1e-4 / 5), rtol=1e-12, atol=0)
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, groups=2), (x,))
    assert bool(calls) != chain  # pow ran exactly when the chain did not
    x32 = x.detach().float() * 5  # fp32: both within a few ulps of the exact value
    want = lrn_formula(x32.double(), 2, 1e-4 / 5)
    assert ((local_response_norm(x32, groups=2).double() - want).abs() <= 4 * 2 ** -24 * want.abs()).all()


@pytest.mark.parametrize("size", [4, 5])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("convention", ["code", "paper"])
@LAYOUTS
def test_lrn_gradcheck(size, groups, convention, layout):
    # Activations in the hundreds, as after conv1: alpha' * sum is comparable to k, so the
    # cross-channel term of the gradient is large and a wrong window or sign would show.
    x = (torch.randn(2, 8, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 100)
    x = x.contiguous(memory_format=layout)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t: local_response_norm(t, size=size, convention=convention, groups=groups), (x,))


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("convention,alpha", [("code", 1e-4 / 5), ("paper", 1e-4)])
@LAYOUTS
def test_lrn_gradient_equals_autograd_through_the_formula(groups, convention, alpha, layout):
    x = torch.relu(torch.randn(2, 12, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))) * 60
    g = torch.randn(2, 12, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x, g = x.contiguous(memory_format=layout), g.contiguous(memory_format=layout)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    local_response_norm(x1, convention=convention, groups=groups).backward(g)
    lrn_formula(x2, groups, alpha).backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-14)
    # The cross-channel term matters: the gradient is not just its first term g * s^-beta = g * y / x.
    on = x > 0
    first = g[on] * lrn_formula(x, groups, alpha)[on] / x[on]
    assert (x1.grad[on] - first).abs().max() > 0.01 * x1.grad.abs().max()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lrn_cpu_chunks_give_the_one_pass_result_bit_for_bit(monkeypatch, layout, dtype):
    # The CPU walks the batch in cache-sized chunks; the GPU does the batch in one pass. Same operators
    # per element, so the same bits: one image per chunk here against one chunk for all seven.
    x = (torch.relu(torch.randn(7, 12, 5, 6, generator=torch.Generator().manual_seed(4))) * 200).to(dtype)
    g = torch.randn(7, 12, 5, 6, generator=torch.Generator().manual_seed(5)).to(dtype)
    results = {}
    for chunk_bytes in (10**9, 1):
        monkeypatch.setattr(lrn_mod, "CPU_CHUNK_BYTES", chunk_bytes)
        xi = x.contiguous(memory_format=layout).requires_grad_(True)
        y = local_response_norm(xi, groups=2)
        y.backward(g.contiguous(memory_format=layout))
        results[chunk_bytes] = (y, xi.grad)
        assert y.dtype == xi.grad.dtype == dtype and xi.grad.is_contiguous(memory_format=layout)
    assert len(lrn_mod._chunks(x.float())) == 7  # the second run really took one image at a time
    for want, got in zip(results[10**9], results[1]):
        assert torch.equal(want, got)


@pytest.mark.parametrize("chunk_bytes", [10**9, 1], ids=["one-pass", "chunked"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_lrn_with_its_relu_is_relu_then_lrn_bit_for_bit(monkeypatch, chunk_bytes, dtype):
    # The model's conv1 and conv2 run ReLU + LRN as one op; the same bits, forward and backward, as
    # torch's ReLU followed by the LRN: exact zeros (the ReLU's gradient passes nothing there) included.
    monkeypatch.setattr(lrn_mod, "CPU_CHUNK_BYTES", chunk_bytes)
    x = (torch.randn(5, 12, 4, 6, generator=torch.Generator().manual_seed(6)) * 200).to(dtype)
    x[0, :3] = 0
    x = x.contiguous(memory_format=torch.channels_last)
    g = torch.randn(5, 12, 4, 6, generator=torch.Generator().manual_seed(7)).to(dtype)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    fused = lrn_mod.LocalResponseNorm(groups=2, relu=True)(x1)
    fused.backward(g)
    apart = local_response_norm(F.relu(x2), groups=2)
    apart.backward(g)
    assert torch.equal(fused, apart) and torch.equal(x1.grad, x2.grad)
    assert (x1.grad[x <= 0] == 0).all() and (x1.grad[x > 0] != 0).any()


def test_lrn_window_sums_are_gemms_exactly_for_narrow_channels_last_cpu_maps(monkeypatch):
    gemms = []
    real_addmm = torch.addmm
    monkeypatch.setattr(torch, "addmm", lambda *a, **k: gemms.append(a[1].shape) or real_addmm(*a, **k))
    for shape, layout, want in [((3, 24, 5, 5), torch.channels_last, [(75, 24)]),
                                ((3, 24, 5, 5), torch.contiguous_format, []),  # NCHW: slices are whole planes
                                ((1, 98, 2, 2), torch.channels_last, [])]:     # over BAND_GEMM_MAX_CHANNELS
        gemms.clear()
        x = torch.rand(shape).contiguous(memory_format=layout) * 100
        y = local_response_norm(x, groups=2)
        assert gemms == want, (shape, layout)
        torch.testing.assert_close(y, lrn_formula(x.double(), 2, 1e-4 / 5).float(), rtol=3e-7, atol=0)
    band = lrn_mod._band(torch.empty(1, 8, 1, 1), 5, 2)  # two groups of four: the window never crosses
    assert band.tolist() == [[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0],
                             [0, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 1, 1, 1, 1],
                             [0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1, 1]]


def test_lrn_cpu_chunks_hold_about_cpu_chunk_bytes_each():
    a = torch.empty(32, 48, 55, 55)  # conv1's output in one column at batch 32: 580,800 bytes an image
    assert lrn_mod.CPU_CHUNK_BYTES == 2_621_440
    assert lrn_mod._chunks(a) == [slice(i, i + 4) for i in range(0, 32, 4)]
    assert lrn_mod._chunks(torch.empty(5, 512, 55, 55)) == [slice(i, i + 1) for i in range(5)]  # at least one image
    assert lrn_mod._chunks(torch.empty(3, 48, 55, 55, device="meta")) == [slice(None)]  # elsewhere: one pass


def test_lrn_double_backward_raises():
    x = (torch.randn(1, 6, 2, 2, dtype=torch.float64) * 60).requires_grad_(True)
    with pytest.raises(RuntimeError) as info:
        torch.autograd.grad(local_response_norm(x).sum(), x, create_graph=True)
    assert str(info.value) == ("local_response_norm is differentiable once: its fused backward cannot build a "
                               "graph (create_graph=True, double backward, is not supported)")
    (grad,) = torch.autograd.grad(local_response_norm(x).sum(), x)  # a plain backward still works
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_lrn_half_precision_backward_is_computed_in_fp32(dtype):
    x = torch.relu(torch.randn(2, 10, 5, 5, generator=torch.Generator().manual_seed(0))) * 300
    g = torch.randn(2, 10, 5, 5, generator=torch.Generator().manual_seed(1))
    xh = x.to(dtype).requires_grad_(True)
    local_response_norm(xh, groups=2).backward(g.to(dtype))
    assert xh.grad.dtype == dtype and torch.isfinite(xh.grad).all()  # fp16 squares of 300 would overflow
    x64 = xh.detach().double().requires_grad_(True)  # the exact gradient at the rounded input
    lrn_formula(x64, 2, 1e-4 / 5).backward(g.to(dtype).double())
    ulp = 2 ** -8 if dtype == torch.bfloat16 else 2 ** -11
    assert ((xh.grad.double() - x64.grad).abs() <= ulp * x64.grad.abs() + 1e-6).all()


@pytest.mark.parametrize("x,message", [
    (torch.zeros(2, 10, 5), "LRN expects an N x C x H x W tensor; got shape (2, 10, 5)"),
    (torch.zeros(2, 9, 5, 5), "LRN: 9 channels do not split into 2 equal groups"),
], ids=["ndim", "groups"])
def test_lrn_bad_input_errors(x, message):
    with pytest.raises(ValueError) as info:
        local_response_norm(x, groups=2)
    assert str(info.value) == message


def test_lrn_half_precision_is_computed_in_fp32():
    x = torch.relu(torch.randn(2, 10, 5, 5, generator=torch.Generator().manual_seed(0))) * 300
    exact = lrn_formula(x.double(), 2, 1e-4 / 5)
    # fp16 squares of 300 overflow (65504 max); the LRN casts up, so the result is finite and exact
    # to fp16 rounding.
    half = local_response_norm(x.half(), groups=2)
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.double(), lrn_formula(x.half().double(), 2, 1e-4 / 5), rtol=2 ** -10, atol=1e-3)
    # bf16: the result is the exact value of the bf16 input rounded once (within one bf16 ulp).
    xb = x.bfloat16()
    got = local_response_norm(xb, groups=2).double()
    want = lrn_formula(xb.double(), 2, 1e-4 / 5)
    assert ((got - want).abs() <= 2 ** -8 * want.abs() + 1e-30).all()
    assert (want - exact).abs().max() > 0  # sanity: bf16 inputs really are rounded


def test_bf16_autocast_stays_close_to_fp32():
    torch.manual_seed(0)
    net = AlexNet(devices=TWO, num_classes=10, width=0.25).eval()
    net.load_state_dict(exercising_state(net))
    x = images(2)
    seen = []
    net.columns[0].relu_lrn1.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    with torch.no_grad():
        want = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = net(x)
    assert seen[1] == (torch.bfloat16, torch.bfloat16)  # the LRN really saw bf16 activations
    assert torch.isfinite(got).all()
    # Stated tolerance: relative L2 error of the logits below 3 % (measured about 0.5 %).
    assert ((got.float() - want).norm() / want.norm()).item() < 0.03


# ---------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def small_net():
    """A small one-device net for the input checks."""
    return AlexNet(devices=ONE, **SMALL)


@pytest.mark.parametrize("x,error,message", [
    ([1.0], TypeError, "AlexNet expects a float batch N x 3 x 224 x 224 (or 227 x 227, conv1's padding in place) on cpu; got list"),
    (torch.zeros(3, 224, 224), ValueError, "AlexNet expects a float batch N x 3 x 224 x 224 (or 227 x 227, conv1's padding in place) on cpu; got a 3-d "
                                           "tensor of shape (3, 224, 224) (add a batch dimension with x.unsqueeze(0))"),
    (torch.zeros(2, 1, 224, 224), ValueError, "AlexNet expects a float batch N x 3 x 224 x 224 (or 227 x 227, conv1's padding in place) on cpu; got 1 "
                                              "channels (shape (2, 1, 224, 224)); pass N x C x H x W RGB"),
    (torch.zeros(2, 224, 224, 3), ValueError, "AlexNet expects a float batch N x 3 x 224 x 224 (or 227 x 227, conv1's padding in place) on cpu; got 224 "
                                              "channels (shape (2, 224, 224, 3)); pass N x C x H x W RGB"),
    (torch.zeros(2, 3, 230, 230), ValueError, "AlexNet expects a float batch N x 3 x 224 x 224 (or 227 x 227, conv1's "
                                              "padding in place) on cpu; got 230 x 230 images (this net was built "
                                              "with input_size=224)"),
    (torch.zeros(2, 3, 224, 224, dtype=torch.uint8), TypeError,
     "AlexNet expects a float batch N x 3 x 224 x 224 (or 227 x 227, conv1's padding in place) on cpu; got dtype torch.uint8 (subtract the mean image "
     "and convert to float first)"),
    (torch.zeros(2, 3, 224, 224, device="meta"), ValueError,
     "AlexNet expects a float batch N x 3 x 224 x 224 (or 227 x 227, conv1's padding in place) on cpu; got a tensor on meta (move it with x.to('cpu'))"),
], ids=["not-a-tensor", "ndim", "channels", "nhwc", "size", "dtype", "device"])
def test_bad_input_errors(small_net, x, error, message):
    with pytest.raises(error) as info:
        small_net(x)
    assert str(info.value) == message
    with pytest.raises(error):
        small_net.fc7_features(x)


@pytest.mark.parametrize("kwargs,message", [
    (dict(devices="cpu"), "AlexNet: devices must be a tuple of one or two devices, e.g. ('cuda:0', 'cuda:1') "
                          "or ('cpu',); got 'cpu'"),
    (dict(devices=("cpu",) * 3), "AlexNet: devices must be a tuple of one or two devices, e.g. ('cuda:0', "
                                 "'cuda:1') or ('cpu',); got ('cpu', 'cpu', 'cpu')"),
    (dict(devices=ONE, input_size=256), "AlexNet: input_size must be 224 (authors' code, conv1 padded) or 227 "
                                        "(Caffe); got 256"),
    (dict(devices=ONE, lrn="torch"), "AlexNet: lrn must be one of ('code', 'paper', 'none'); got 'torch'"),
    (dict(devices=ONE, pooling="max"), "AlexNet: pooling must be one of ('overlapping', 'non-overlapping'); "
                                       "got 'max'"),
    (dict(devices=ONE, variant="one-gpu"), "AlexNet: variant must be one of ('two-column', 'one-column-half'); "
                                           "got 'one-gpu'"),
    (dict(devices=ONE, width=0), "AlexNet: width must be > 0 (1.0 is the paper); got 0"),
    (dict(devices=ONE, dropout=1.0), "AlexNet: dropout must be in [0, 1); got 1.0"),
    (dict(devices=ONE, num_classes=0), "AlexNet: num_classes must be a positive int; got 0"),
    (dict(devices=ONE, init_std=0), "AlexNet: init_std must be > 0 (0.01 is the paper); got 0"),
])
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError) as info:
        AlexNet(**kwargs)
    assert str(info.value) == message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_devices_without_cuda_fail_clearly():
    with pytest.raises(ValueError) as info:
        AlexNet()
    assert str(info.value) == ("AlexNet: device 'cuda:0' requested but CUDA is not available; "
                               "pass devices=('cpu',)")


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
def test_conv1_padding_is_zeropad2d_values_layout_and_gradient(layout):
    from paper_repro.nets.alexnet import PadRightBottom
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64).contiguous(memory_format=layout)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    got, want = PadRightBottom(3, 5)(x1), torch.nn.ZeroPad2d((0, 3, 0, 3))(x2)
    assert torch.equal(got, want) and got.is_contiguous(memory_format=torch.channels_last)  # the CPU net's layout
    g = torch.randn(want.shape, dtype=torch.float64)
    got.backward(g)
    want.backward(g)
    assert torch.equal(x1.grad, x2.grad)


def test_a_patch_with_conv1s_padding_in_place_gives_the_same_logits_and_gradients():
    # What the CPU's TrainPatch / CentrePatch hand over (pad=3, channels_last): the net must not pad it again.
    net = AlexNet(devices=ONE, **SMALL).double()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(x, (0, 3, 0, 3)).contiguous(memory_format=torch.channels_last)
    net.eval()
    want = net(x)
    got = net(padded)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    net.zero_grad()
    net(x).sum().backward()
    want_grad = net.columns[0].conv1.weight.grad.clone() if net.two_column else net.conv1.weight.grad.clone()
    net.zero_grad()
    net(padded).sum().backward()
    got_grad = net.columns[0].conv1.weight.grad if net.two_column else net.conv1.weight.grad
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-12, atol=1e-12)

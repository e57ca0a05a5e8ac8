"""The authors' CIFAR-10 nets, from cuda-convnet's example-layers (svn r561): section 3.3's conv-local nets and
Figure 1's four-layer net.

Section 3.3 ("a four-layer CNN achieved a 13% test error rate without normalization and 11% with
normalization"; the footnote points at cuda-convnet's files), input 24x24x3 crops:

    conv1  5x5, 3 -> 64, pad 2, ReLU              initW 1e-4   wc 0
    pool1  max 3x3 stride 2 (ceil: 24 -> 12)
   [rnorm1 cross-map, size 9, scale 0.001, pow 0.75]            11pct only
    conv2  5x5, 64 -> 64, pad 2, ReLU             initW 0.01   wc 0
   [rnorm2 cross-map, size 9, scale 0.001, pow 0.75]            11pct only
    pool2  max 3x3 stride 2 (12 -> 6)
    local3 3x3, 64 -> 64 (11pct) / 32 (13pct), pad 1, untied, ReLU   initW 0.04   wc 0.004
    local4 3x3, -> 32, pad 1, untied, ReLU        initW 0.04   wc 0.004
    fc10   1152 -> 10                             initW 0.01   wc 0.01 (11pct) / 0.004 (13pct)

`layers`: "13pct" and "11pct" are the released pairs of files; "13pct-rnorm" is the 13pct net with
the 11pct net's two normalisation layers added and nothing else changed (isolates the paper's claim:
the two released nets also differ in local3's width and fc10's wc). Biases start at 0 (no initB in
the files); initW is a Gaussian std. Every layer: epsW = lr, epsB = 2 lr, momentum 0.9, no weight
decay on biases (layer_settings(), read by training/param_groups.py).

cuda-convnet's cross-map normalisation is y = x (1 + (scale/size) sum_{window} x^2)^-pow, the window
c - size//2 .. c - size//2 + size - 1 clipped at the edges, k = 1 hard-coded (layer.py r561 l.1036,
conv_util.cu kFCNorm l.1068-1086): the project's LocalResponseNorm with size 9, alpha 0.001,
beta 0.75, k 1 and alpha/n (convention "code") computes exactly that.

Figure 1's net is not named by any source (see the README, "CIFAR-10"): `arch` "80sec" is
layers-80sec.cfg ("26% error on CIFAR-10 in 80 seconds": conv1 32 5x5 -> max-pool 3/2 -> conv2 32
5x5 -> avg-pool 3/2 -> conv3 64 5x5 -> avg-pool 3/2 -> fc64 -> fc10, whole 32x32 images), and
"conv-local" is the 13pct net above. `activation` "tanh" puts cuda-convnet's tanh[a, b] = a tanh(b x)
(default a = b = 1, the paper's f(x) = tanh(x)) wherever the file has a ReLU. Figure 1 uses no
regularisation of any kind: wc 0 everywhere.
"""
from collections import OrderedDict

import torch
from torch import nn

from paper_repro.nets.local import LocallyConnected2d
from paper_repro.nets.lrn import LocalResponseNorm

ACTIVATIONS = ("relu", "tanh")
CONV_LOCAL_LAYERS = ("13pct", "11pct", "13pct-rnorm")
FIG1_ARCHS = ("80sec", "conv-local")
INPUTS = ("convnet-crops", "whole", "paper")  # the data path a net is trained and tested with (data/cifar_views.py)

# layers -> (local3 filters, cross-map normalisation, fc10 wc)
_CONV_LOCAL = {"13pct": (32, False, 0.004), "11pct": (64, True, 0.01), "13pct-rnorm": (32, True, 0.004)}


class ScaledTanh(nn.Module):
    """cuda-convnet's tanh[a, b]: a * tanh(b * x)."""

    def __init__(self, a=1.0, b=1.0):
        super().__init__()
        self.a, self.b = float(a), float(b)

    def forward(self, x):
        """a * tanh(b * x)."""
        y = torch.tanh(x if self.b == 1 else x * self.b)
        return y if self.a == 1 else y * self.a

    def extra_repr(self):
        """The two parameters in print(model)."""
        return f"a={self.a}, b={self.b}"


def activation(kind, tanh_a=1.0, tanh_b=1.0):
    """The unit cuda-convnet's `neuron=relu` becomes: nn.ReLU, or ScaledTanh(a, b) for Figure 1's tanh nets."""
    if kind not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}; got {kind!r}")
    return nn.ReLU() if kind == "relu" else ScaledTanh(tanh_a, tanh_b)


def cross_map_norm():
    """cuda-convnet's cmrnorm of the 11pct net: size 9, scale 0.001 (divided by size), pow 0.75, k 1."""
    return LocalResponseNorm(size=9, alpha=0.001, beta=0.75, k=1.0, convention="code")


def max_pool():
    """cuda-convnet's max pool 3x3 stride 2, the last window clipped at the edge: 24 -> 12 -> 6, 32 -> 16 -> 8."""
    return nn.MaxPool2d(3, 2, ceil_mode=True)


def avg_pool():
    """cuda-convnet's avg pool 3x3 stride 2: the mean over the window's pixels inside the image (AvgPooler)."""
    return nn.AvgPool2d(3, 2, ceil_mode=True, count_include_pad=False)


def _pooled(size):
    return -(-(size - 3) // 2) + 1  # ceil((size - 3) / 2) + 1


class CifarNet(nn.Module):
    """What the CIFAR nets share: a sequence of named layers, cuda-convnet's init, config(), layer_settings()."""

    net_name = None

    def _finish(self, layers, init_w, wc, devices):
        """Register `layers` in order, draw the init (initW Gaussian std per layer, biases 0), move to devices[0]."""
        self.layers = nn.Sequential(OrderedDict(layers))
        self._init_w, self._wc = dict(init_w), dict(wc)
        self.devices = tuple(str(torch.device(d)) for d in devices)[:1]
        with torch.no_grad():
            for name in self._init_w:  # a fixed order: the same seed gives the same net
                layer = getattr(self.layers, name)
                layer.weight.normal_(0.0, self._init_w[name])
                layer.bias.zero_()
        self.to(self.devices[0])

    def layer_settings(self):
        """cuda-convnet's per-layer parameter file for training/param_groups.py: {layer: epsW / lr, wc, epsB / lr,
        the biases' wc}: epsW = lr, epsB = 2 lr, wc per layer, none on biases."""
        return {f"layers.{name}": {"lr_mult": 1.0, "weight_decay": wc, "bias_lr_mult": 2.0, "bias_weight_decay": 0.0}
                for name, wc in self._wc.items()}

    def init_stds(self):
        """{weight key: initW} (recorded in the run's config.json)."""
        return {f"layers.{name}.weight": std for name, std in self._init_w.items()}

    def forward(self, x):
        """Logits N x num_classes of a float batch N x 3 x input_size x input_size."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, self.input_size, self.input_size):
            raise ValueError(f"{type(self).__name__} expects N x 3 x {self.input_size} x {self.input_size}; "
                             f"got {tuple(x.shape)}")
        if x.device.type == "cpu":
            # channels_last on the CPU, as the project's AlexNet: mkldnn's convolutions and the max-pools
            # run faster there (the 13pct net's step: 0.19 s against 0.24 s at batch 128, one thread)
            x = x.contiguous(memory_format=torch.channels_last)
        return self.layers(x)


class ConvLocalNet(CifarNet):
    """Section 3.3's net: cuda-convnet's layers-conv-local-{13pct,11pct}.cfg (see the module docstring)."""

    net_name = "cifar_conv_local"

    def __init__(self, num_classes=10, layers="13pct", activation_kind="relu", tanh_a=1.0, tanh_b=1.0,
                 input_size=24, input="convnet-crops", devices=("cpu",), wc=True):
        """`layers`: 13pct, 11pct or 13pct-rnorm; `wc`: False gives every layer wc 0 (Figure 1's no regularisation)."""
        super().__init__()
        if layers not in _CONV_LOCAL:
            raise ValueError(f"layers must be one of {CONV_LOCAL_LAYERS}; got {layers!r}")
        _check(input_size, input)
        local3, rnorm, fc10_wc = _CONV_LOCAL[layers]
        self.num_classes, self.layers_file, self.activation = num_classes, layers, activation_kind
        self.tanh_a, self.tanh_b, self.input_size, self.input, self.wc = tanh_a, tanh_b, input_size, input, wc
        s1 = _pooled(input_size)
        s2 = _pooled(s1)

        def act():
            return activation(activation_kind, tanh_a, tanh_b)

        seq = [("conv1", nn.Conv2d(3, 64, 5, padding=2)), ("act1", act()), ("pool1", max_pool())]
        seq += [("rnorm1", cross_map_norm())] if rnorm else []
        seq += [("conv2", nn.Conv2d(64, 64, 5, padding=2)), ("act2", act())]
        seq += [("rnorm2", cross_map_norm())] if rnorm else []
        seq += [("pool2", max_pool()),
                ("local3", LocallyConnected2d(64, local3, s2, 3, padding=1)), ("act3", act()),
                ("local4", LocallyConnected2d(local3, 32, s2, 3, padding=1)), ("act4", act()),
                ("flatten", nn.Flatten()), ("fc10", nn.Linear(32 * s2 * s2, num_classes))]
        init_w = {"conv1": 1e-4, "conv2": 0.01, "local3": 0.04, "local4": 0.04, "fc10": 0.01}
        wcs = {"conv1": 0.0, "conv2": 0.0, "local3": 0.004, "local4": 0.004, "fc10": fc10_wc}
        self._finish(dict(seq), init_w, {k: v if wc else 0.0 for k, v in wcs.items()}, devices)

    def config(self):
        """The constructor's arguments except devices (JSON-able): what evaluate rebuilds the net from."""
        return {"net": self.net_name, "num_classes": self.num_classes, "layers": self.layers_file,
                "activation_kind": self.activation, "tanh_a": self.tanh_a, "tanh_b": self.tanh_b,
                "input_size": self.input_size, "input": self.input, "wc": self.wc}


class Fig1Net(CifarNet):
    """Figure 1's four-layer net, ReLU or tanh, no regularisation: layers-80sec.cfg by default (module docstring)."""

    net_name = "cifar_fig1"

    def __init__(self, num_classes=10, arch="80sec", activation_kind="relu", tanh_a=1.0, tanh_b=1.0,
                 input_size=32, input="whole", devices=("cpu",)):
        """`arch` 80sec or conv-local (the 13pct net), `activation_kind` relu or tanh; every wc is 0."""
        super().__init__()
        if arch not in FIG1_ARCHS:
            raise ValueError(f"arch must be one of {FIG1_ARCHS}; got {arch!r}")
        _check(input_size, input)
        self.num_classes, self.arch, self.activation = num_classes, arch, activation_kind
        self.tanh_a, self.tanh_b, self.input_size, self.input = tanh_a, tanh_b, input_size, input
        if arch == "conv-local":
            trunk = ConvLocalNet(num_classes, "13pct", activation_kind, tanh_a, tanh_b, input_size, input, wc=False)
            seq, init_w = dict(trunk.layers.named_children()), dict(trunk._init_w)  # drawn again by _finish
        else:
            s3 = _pooled(_pooled(_pooled(input_size)))

            def act():
                return activation(activation_kind, tanh_a, tanh_b)
            # layers-80sec.cfg puts conv1's neuron on pool1: the same function for a monotone unit.
            seq = {"conv1": nn.Conv2d(3, 32, 5, padding=2), "pool1": max_pool(), "act1": act(),
                   "conv2": nn.Conv2d(32, 32, 5, padding=2), "act2": act(), "pool2": avg_pool(),
                   "conv3": nn.Conv2d(32, 64, 5, padding=2), "act3": act(), "pool3": avg_pool(),
                   "flatten": nn.Flatten(), "fc64": nn.Linear(64 * s3 * s3, 64), "act4": act(),
                   "fc10": nn.Linear(64, num_classes)}
            init_w = {"conv1": 1e-4, "conv2": 0.01, "conv3": 0.01, "fc64": 0.1, "fc10": 0.1}
        self._finish(seq, init_w, {k: 0.0 for k in init_w}, devices)

    def config(self):
        """The constructor's arguments except devices (JSON-able)."""
        return {"net": self.net_name, "num_classes": self.num_classes, "arch": self.arch,
                "activation_kind": self.activation, "tanh_a": self.tanh_a, "tanh_b": self.tanh_b,
                "input_size": self.input_size, "input": self.input}


def _check(input_size, input):
    if input not in INPUTS:
        raise ValueError(f"input must be one of {INPUTS}; got {input!r}")
    if not 12 <= input_size <= 32:
        raise ValueError(f"input_size must be between 12 and 32 (CIFAR-10 images are 32x32); got {input_size}")

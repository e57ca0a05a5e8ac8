"""The tutorials' AlexNet for CIFAR-10: the paper's five conv and three FC layers, shrunk for 32x32 images.

The Keras tutorial the project keeps as reference (32x32 inputs, reduced FC layers, ReLU, dropout,
BatchNorm; Adam, 15 epochs) reports 73.87 % test accuracy. Here the same idea from the paper's net:
one GPU column of it (conv widths 48, 128, 192, 192, 128: half the paper's, the kernel counts one
GTX 580 held), conv1 5x5 stride 1 instead of 11x11 stride 4 (a 28x28 patch is not a 224x224 one),
the paper's response normalisation after conv1 and conv2 (k 2, n 5, alpha 1e-4, beta 0.75, alpha/n
as the authors' code), its overlapping 3/2 max-pooling after conv1, conv2 and conv5, FC layers of
1024 instead of 4096, dropout 0.5 in fc6 and fc7, and the paper's init (N(0, init_std), bias_init
in conv2, conv4, conv5, fc6 and fc7, 0 elsewhere).

Sizes at the default 28x28 input (28/32 = 224/256, the paper's patch-to-image ratio):
28 -> conv1 28 -> pool 13 -> conv2 13 -> pool 6 -> conv3, conv4, conv5 6 -> pool 2 -> fc6 (512 in).
`batch_norm`: BatchNorm after every conv and hidden FC layer, before its ReLU (the tutorial's net;
it replaces the response normalisation unless lrn is asked for as well).
"""
from collections import OrderedDict

import torch
from torch import nn

from paper_repro.nets.cifar import INPUTS
from paper_repro.nets.lrn import LocalResponseNorm

CONV = (("conv1", 48, 5, 2), ("conv2", 128, 5, 2), ("conv3", 192, 3, 1), ("conv4", 192, 3, 1), ("conv5", 128, 3, 1))
FC = 1024
BIAS_ONE = ("conv2", "conv4", "conv5", "fc6", "fc7")  # the paper's bias-1 layers (section 5)


def _pooled(size):
    return (size - 3) // 2 + 1  # the paper's net: floor, as torchvision's and the project's AlexNet


class TutorialAlexNet(nn.Module):
    """AlexNet shrunk for 32x32 CIFAR-10 images (see the module docstring)."""

    net_name = "cifar_tutorial"

    def __init__(self, num_classes=10, input_size=28, width=1.0, fc_width=FC, batch_norm=False, lrn=None,
                 dropout=0.5, init_std=0.01, bias_init=1.0, input="paper", devices=("cpu",)):
        """`width` scales the conv widths; `lrn` None: on unless batch_norm."""
        super().__init__()
        if input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}; got {input!r}")
        if not 20 <= input_size <= 32:
            raise ValueError(f"input_size must be between 20 and 32; got {input_size}")
        lrn = (not batch_norm) if lrn is None else bool(lrn)
        self.num_classes, self.input_size, self.width, self.fc_width = num_classes, input_size, float(width), fc_width
        self.batch_norm, self.lrn, self.dropout = bool(batch_norm), lrn, float(dropout)
        self.init_std, self.bias_init, self.input = float(init_std), float(bias_init), input
        self.devices = tuple(str(torch.device(d)) for d in devices)[:1]
        layers, channels, size = OrderedDict(), 3, input_size
        for name, out, k, pad in CONV:
            out = max(1, round(out * width))
            layers[name] = nn.Conv2d(channels, out, k, padding=pad)
            if batch_norm:
                layers["bn" + name[-1]] = nn.BatchNorm2d(out)
            layers["relu" + name[-1]] = nn.ReLU()
            if lrn and name in ("conv1", "conv2"):
                layers["norm" + name[-1]] = LocalResponseNorm(5, 1e-4, 0.75, 2.0)
            if name in ("conv1", "conv2", "conv5"):
                layers["pool" + name[-1]] = nn.MaxPool2d(3, 2)
                size = _pooled(size)
            channels = out
        layers["flatten"] = nn.Flatten()
        for name, fan_in in (("fc6", channels * size * size), ("fc7", fc_width)):
            layers[name] = nn.Linear(fan_in, fc_width)
            if batch_norm:
                layers["bn" + name[-1]] = nn.BatchNorm1d(fc_width)
            layers["relu" + name[-1]] = nn.ReLU()
            layers["drop" + name[-1]] = nn.Dropout(dropout)
        layers["fc8"] = nn.Linear(fc_width, num_classes)
        self.layers = nn.Sequential(layers)
        with torch.no_grad():
            for name in [n for n, _, _, _ in CONV] + ["fc6", "fc7", "fc8"]:
                layer = getattr(self.layers, name)
                layer.weight.normal_(0.0, self.init_std)
                layer.bias.fill_(self.bias_init if name in BIAS_ONE else 0.0)
        self.to(self.devices[0])

    def init_stds(self):
        """{weight key: std} (recorded in the run's config.json)."""
        return {f"layers.{n}.weight": self.init_std for n in [c[0] for c in CONV] + ["fc6", "fc7", "fc8"]}

    def config(self):
        """The constructor's arguments except devices (JSON-able)."""
        return {"net": self.net_name, "num_classes": self.num_classes, "input_size": self.input_size,
                "width": self.width, "fc_width": self.fc_width, "batch_norm": self.batch_norm, "lrn": self.lrn,
                "dropout": self.dropout, "init_std": self.init_std, "bias_init": self.bias_init, "input": self.input}

    def forward(self, x):
        """Logits N x num_classes of a float batch N x 3 x input_size x input_size."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, self.input_size, self.input_size):
            raise ValueError(f"TutorialAlexNet expects N x 3 x {self.input_size} x {self.input_size}; "
                             f"got {tuple(x.shape)}")
        if x.device.type == "cpu":
            # channels_last on the CPU, as the project's AlexNet: mkldnn's convolutions and the max-pools
            # run faster there (the 13pct net's step: 0.19 s against 0.24 s at batch 128, one thread)
            x = x.contiguous(memory_format=torch.channels_last)
        return self.layers(x)

"""AlexNet exactly as Krizhevsky, Sutskever & Hinton split it over two GPUs (NIPS 2012, section 3, figure 2).

Two columns, one per device, each holding half the kernels of every layer. The columns exchange
activations only at conv3, fc6, fc7 and fc8; conv2, conv4 and conv5 see only their own column's
maps. With one device the same function runs as grouped convolutions (the fast path).

    input 3 x 224 x 224 (mean-subtracted RGB, 0-255 scale)
    conv1  96 (48 + 48) 11x11/4, zero pad (0, 3, 0, 3)  -> 55   LRN, max-pool 3/2 -> 27, ReLU  (code)
                                                                ReLU, LRN, max-pool 3/2       (text)
    conv2 256 (128 + 128) 5x5 pad 2, own column          -> 27   ReLU, LRN, [cnorm2], max-pool 3/2 -> 13
    conv3 384 (192 + 192) 3x3 pad 1, both columns        -> 13   ReLU
    conv4 384 (192 + 192) 3x3 pad 1, own column          -> 13   ReLU
    conv5 256 (128 + 128) 3x3 pad 1, own column          -> 13   ReLU, max-pool 3/2 -> 6
    fc6  4096 (2048 + 2048) from all 256 x 6 x 6               ReLU, dropout 0.5
    fc7  4096 (2048 + 2048) from all 4096                      ReLU, dropout 0.5
    fc8  1000 from all 4096 (on devices[0])                    (softmax in the loss)

The released code (layers-145.cfg) and the paper's text differ in conv1's order (the code
normalises conv1's linear output and applies the ReLU after the pool: `lrn1_input`), in a second,
same-map normalisation after conv2's (`cnorm2`), and in conv3-5's init std (0.03 against 0.01:
`init_std_conv3_5`); both scale dropout at test time (`dropout_scaling="test"`), not in training.
None of these adds a parameter: the state_dict is the same for every setting.

The links (LINKS) are the only places data crosses between the columns, all through transfer():
model.traffic counts the bytes that cross, forward and (their gradients) backward, also when both
columns share a device; model.copy_links = True makes every crossing a real copy even then (tests
run the graph a two-device run has); under autocast the image crosses already cast to the dtype
column 1's conv1 computes in (half the bytes, the same function).

Whatever the layout, state_dict() is canonical: the Caffe bvlc_alexnet grouped layout (keys
conv1.weight ... fc8.bias, conv2/4/5 weights with half the input channels, the first half of
every layer's outputs = column 0, conv3 and FC inputs ordered [column 0, column 1], fc6's input
the flattened 256 x 6 x 6 map in (C, H, W) order), so a checkpoint moves between layouts freely.
"""
import re
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from paper_repro.core.recipe import PAPER
from paper_repro.nets.dropout import make_dropout
from paper_repro.nets.links import LinkTraffic, autocast_dtype, transfer
from paper_repro.nets.lrn import LocalResponseNorm, SameMapNorm

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
# Kernels per column at width 1 (the table of section 3). fc8 is num_classes, never scaled.
COLUMN_CHANNELS = {"conv1": 48, "conv2": 128, "conv3": 192, "conv4": 192, "conv5": 128, "fc6": 2048, "fc7": 2048}
BIAS_ONE = ("conv2", "conv4", "conv5", "fc6", "fc7")  # section 5: bias 1 "to accelerate the early stages"
INPUT_SIZES = (224, 227)
LRN_MODES = ("code", "paper", "none")
POOLINGS = ("overlapping", "non-overlapping")
VARIANTS = ("two-column", "one-column-half")
LRN1_INPUTS = ("pre-relu", "post-relu")
DROPOUT_SCALINGS = ("test", "inverted")
CONV3_5 = ("conv3", "conv4", "conv5")
# On the CPU the net computes in channels_last whatever the layout of its input: oneDNN's native
# layout, where max-pooling ran 13x faster than in NCHW (32 x 48 x 55 x 55, one thread) and the
# convolutions need no reorders. The same function; only the memory order of the activations differs.
CPU_MEMORY_FORMAT = torch.channels_last
# conv1's zero padding at the bottom and right of the paper's 224 patches (the authors' code rounded its
# output size up: 55): the net takes 224 x 224 patches, or 227 x 227 ones with the padding in place.
INPUT_PADDING = 3


def _pooled(size, kernel, stride):
    """Output size of a max-pool without padding (floor, as torch and the paper's 'equivalent dimensions')."""
    return (size - kernel) // stride + 1


def _normalise_device(device):
    """Return `device` as a string with an explicit index for CUDA; raise ValueError if it is not usable."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"AlexNet: device {device!r} requested but CUDA is not available; pass devices=('cpu',)")
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"AlexNet: device {device!r} does not exist; this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
        dev = torch.device("cuda", index)
    elif dev.type not in ("cpu", "meta") and dev.index is None:
        dev = torch.device(dev.type, 0)  # tensors report an index: "mps" lives on "mps:0"
    return str(dev)


class PadRightBottom(nn.Module):
    """nn.ZeroPad2d((0, p, 0, p)) that writes the zeros only where they go; on the CPU into channels_last.

    F.pad fills the whole output with zeros before copying the input over them, and the net then
    copied the padded batch once more into channels_last (CPU_MEMORY_FORMAT). Here one copy from the
    NCHW patches into the padded channels_last batch does both: 6.8 ms against 16.8 ms for batch 128
    of 224 x 224, the whole step of the quarter-width net being about 300 ms. The training command's
    CPU patches now arrive padded (TrainPatch(pad=3)), so there it passes them through: no copy at all.
    """

    def __init__(self, p, size):
        """Pad p zero rows at the bottom and p zero columns at the right of `size` x `size` inputs."""
        super().__init__()
        self.p, self.size = p, size

    def forward(self, x):
        """Return x with p zero rows below and p zero columns to its right; a (size + p) input as it is."""
        if tuple(x.shape[-2:]) == (self.size + self.p,) * 2:
            # Already padded (the CPU's TrainPatch and CentrePatch write their patches into the padded batch,
            # channels_last, which saves this copy); a 227 crop of real pixels is conv1's input just as well.
            return x.contiguous(memory_format=CPU_MEMORY_FORMAT) if x.device.type == "cpu" else x
        if x.device.type != "cpu":  # elsewhere F.pad, which keeps the input's layout
            return F.pad(x, (0, self.p, 0, self.p))
        n, c, h, w = x.shape
        out = torch.empty((n, c, h + self.p, w + self.p), dtype=x.dtype, device=x.device,
                          memory_format=CPU_MEMORY_FORMAT)
        out[:, :, :h, :w] = x
        out[:, :, h:].zero_()
        out[:, :, :h, w:].zero_()
        return out

    def extra_repr(self):
        """The padding, as ZeroPad2d shows it."""
        return f"(0, {self.p}, 0, {self.p})"


def _make_layers(m, spec, parts, lrn, pool, input_size, dropout, lrn1_input, cnorm2, dropout_scaling):
    """Give `m` the layers conv1..fc7 of `spec` (canonical shapes), its 1/`parts` share of every output."""
    def split(name):
        cin, cout, _, groups = spec[name]
        if parts == 1:
            return cin, cout, groups
        # A column's share of a grouped layer is one group; of a full layer, all inputs.
        return (cin // groups if groups > 1 else cin), cout // parts, 1

    lrn_groups = spec["conv2"][3] if parts == 1 else 1  # the one-device layout holds both columns
    # The authors' code took 224 crops and rounded conv1's output size up: the last filter row and
    # column hang 3 px over zeros at the bottom and right, i.e. zero padding (0, 3, 0, 3) -> 55.
    m.pad1 = PadRightBottom(INPUT_PADDING, input_size) if input_size == 224 else nn.Identity()
    cin, cout, g = split("conv1")
    m.conv1 = nn.Conv2d(cin, cout, 11, stride=4, groups=g)                    # 55 x 55
    # The released code normalises conv1's linear output and applies the ReLU after pool1 (the same
    # as before it: max and ReLU commute), so the LRN there sums the squares of negative responses too.
    m.relu_after_pool1 = lrn != "none" and lrn1_input == "pre-relu"
    m.relu_lrn1 = (LocalResponseNorm(convention=lrn, groups=lrn_groups) if m.relu_after_pool1
                   else _relu_lrn(lrn, lrn_groups))
    m.pool1 = nn.MaxPool2d(*pool)                                             # 27 x 27
    for name, k in (("conv2", 5), ("conv3", 3), ("conv4", 3), ("conv5", 3)):
        cin, cout, g = split(name)
        # Grouped on the CPU too: in channels_last oneDNN's grouped conv2 beat two convolutions on the
        # channel halves (a one-device step at width 0.25: 279 against 287 ms; width 1: 1918 against 1931).
        setattr(m, name, nn.Conv2d(cin, cout, k, padding=k // 2, groups=g))  # conv2 27; conv3-5 13
        if name == "conv2":
            m.relu_lrn2 = _relu_lrn(lrn, lrn_groups)
            # Same-map: it never mixes channels, so the columns need no grouping. Run 148 ("without
            # normalization layers", layers-148.cfg) has neither kind: --lrn none drops it too.
            m.cnorm2 = SameMapNorm() if cnorm2 and lrn != "none" else nn.Identity()
            m.pool2 = nn.MaxPool2d(*pool)                                     # 13 x 13
    m.pool5 = nn.MaxPool2d(*pool)                                             # 6 x 6
    # Dropout on fc6's and fc7's outputs, as the paper describes it (torchvision puts the same
    # masks on the inputs of fc6 and fc7 instead, which is not the same net).
    cin, cout, _ = split("fc6")
    m.fc6 = nn.Linear(cin, cout)
    m.drop6 = make_dropout(dropout, dropout_scaling)
    cin, cout, _ = split("fc7")
    m.fc7 = nn.Linear(cin, cout)


def _relu_lrn(lrn, groups):
    """ReLU then LRN as one op (--lrn none: the ReLU alone)."""
    # One op: the ReLU runs inside the LRN's passes over the map, and its gradient is a mask applied
    # in the LRN's backward instead of one more map-sized tensor (bit-identical to ReLU, then LRN).
    return LocalResponseNorm(convention=lrn, groups=groups, relu=True) if lrn != "none" else nn.ReLU(inplace=True)


def _conv1_conv2(m, x):
    """A column's conv1..pool2 (its own maps only)."""
    x = m.pool1(m.relu_lrn1(m.conv1(m.pad1(x))))  # 55 -> 27
    if m.relu_after_pool1:
        x = F.relu(x, inplace=True)
    return m.pool2(m.cnorm2(m.relu_lrn2(m.conv2(x))))  # 27 -> 13


def _conv3_conv5(m, x):
    """A column's conv3 (input: both columns' maps) to the flattened pool5 (C, H, W order)."""
    x = F.relu(m.conv3(x), inplace=True)                           # 13
    x = F.relu(m.conv4(x), inplace=True)                           # 13
    x = m.pool5(F.relu(m.conv5(x), inplace=True))                  # 13 -> 6
    return torch.flatten(x, 1)  # not .view: a channels_last map is not contiguous in (C, H, W)


class _Column(nn.Module):
    """One GPU's half of the net, conv1..fc7 (figure 2, top or bottom)."""

    def __init__(self, spec, lrn, pool, input_size, dropout, *variants):
        """Build the column's layers from the canonical `spec` (variants: lrn1_input, cnorm2, dropout_scaling)."""
        super().__init__()
        _make_layers(self, spec, 2, lrn, pool, input_size, dropout, *variants)


class AlexNet(nn.Module):
    """The paper's net on one or two devices; state_dict() is canonical (Caffe grouped layout) in both."""

    def __init__(self, num_classes=1000, devices=("cuda:0", "cuda:1"), width=PAPER["width"],
                 input_size=PAPER["input_size"], lrn=PAPER["lrn"], pooling=PAPER["pooling"],
                 variant=PAPER["variant"], bias_init=PAPER["bias_init"], dropout=PAPER["dropout"],
                 init_std=PAPER["init_std"], init_std_conv3_5=PAPER["init_std_conv3_5"],
                 lrn1_input=PAPER["lrn1_input"], cnorm2=PAPER["cnorm2"], dropout_scaling=PAPER["dropout_scaling"]):
        """Build the net (see README / the module docstring for every option) and initialise it as the paper."""
        super().__init__()
        if isinstance(devices, (str, torch.device)) or not 1 <= len(devices) <= 2:
            raise ValueError(f"AlexNet: devices must be a tuple of one or two devices, e.g. ('cuda:0', 'cuda:1') "
                             f"or ('cpu',); got {devices!r}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"AlexNet: num_classes must be a positive int; got {num_classes!r}")
        if not width > 0:
            raise ValueError(f"AlexNet: width must be > 0 (1.0 is the paper); got {width!r}")
        if input_size not in INPUT_SIZES:
            raise ValueError(f"AlexNet: input_size must be 224 (authors' code, conv1 padded) or 227 (Caffe); "
                             f"got {input_size!r}")
        for arg, value, allowed in (("lrn", lrn, LRN_MODES), ("pooling", pooling, POOLINGS),
                                    ("variant", variant, VARIANTS), ("lrn1_input", lrn1_input, LRN1_INPUTS),
                                    ("dropout_scaling", dropout_scaling, DROPOUT_SCALINGS), ("cnorm2", cnorm2, (True, False))):
            if value not in allowed:
                raise ValueError(f"AlexNet: {arg} must be one of {allowed}; got {value!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"AlexNet: dropout must be in [0, 1); got {dropout!r}")
        if not init_std > 0:
            raise ValueError(f"AlexNet: init_std must be > 0 ({PAPER['init_std']} is the paper); got {init_std!r}")
        if not init_std_conv3_5 > 0:
            raise ValueError(f"AlexNet: init_std_conv3_5 must be > 0 (0.03: the released code, 0.01: the paper's "
                             f"text); got {init_std_conv3_5!r}")
        self.num_classes, self.width, self.input_size = num_classes, float(width), input_size
        self.input_padding = INPUT_PADDING if input_size == 224 else 0  # what a patch may already carry
        self.lrn, self.pooling, self.variant = lrn, pooling, variant
        self.bias_init, self.dropout, self.init_std = float(bias_init), float(dropout), float(init_std)
        self.init_std_conv3_5, self.lrn1_input = float(init_std_conv3_5), lrn1_input
        self.use_cnorm2, self.dropout_scaling = bool(cnorm2), dropout_scaling
        variants = (lrn1_input, self.use_cnorm2, dropout_scaling)
        # The links (two-column layout): what crossed, whether same-device links copy (tests), and
        # whether an fp32 input crosses already cast to the autocast dtype its consumer computes in.
        self.traffic = LinkTraffic()
        self.copy_links = False
        self.send_autocast_dtype = True

        # width scales every column's kernel count, rounded to the nearest int (at least 1), so the
        # two columns stay equal and grouped shapes stay integral.
        per = {name: max(1, round(n * width)) for name, n in COLUMN_CHANNELS.items()}
        if variant == "two-column":
            columns, out = 2, {name: 2 * n for name, n in per.items()}
        else:  # section 3.2's one-GPU net: half the kernels in conv1-conv4; conv5 and the FC layers not halved
            columns = 1
            out = dict(per, conv5=2 * per["conv5"], fc6=2 * per["fc6"], fc7=2 * per["fc7"])
        pool = (3, 2) if pooling == "overlapping" else (2, 2)
        # conv1 gives 55 x 55 (224 + 3 px of padding, or 227: (227 - 11) / 4 + 1); three pools follow.
        s = _pooled(_pooled(_pooled(55, *pool), *pool), *pool)  # 27, 13, then 6 at pool5
        # Canonical (grouped) shapes: name -> (in, out, kernel or 0 for FC, groups).
        self._spec = {
            "conv1": (3, out["conv1"], 11, 1),
            "conv2": (out["conv1"], out["conv2"], 5, columns),
            "conv3": (out["conv2"], out["conv3"], 3, 1),
            "conv4": (out["conv3"], out["conv4"], 3, columns),
            "conv5": (out["conv4"], out["conv5"], 3, columns),
            "fc6": (out["conv5"] * s * s, out["fc6"], 0, 1),
            "fc7": (out["fc6"], out["fc7"], 0, 1),
            "fc8": (out["fc7"], num_classes, 0, 1),
        }
        devices = tuple(_normalise_device(d) for d in devices)
        # The one-column variant is one GPU's net: it runs on devices[0] whatever else is given.
        self.devices = devices if columns == 2 else devices[:1]
        self.two_column = len(self.devices) == 2
        self._mismatched = set()  # canonical keys of a load with the wrong shape (see _from_canonical)

        # Build on the meta device: no memory or RNG is spent on a default init we would overwrite.
        with torch.device("meta"):
            if self.two_column:
                self.columns = nn.ModuleList(_Column(self._spec, lrn, pool, input_size, dropout, *variants)
                                             for _ in range(2))
            else:
                _make_layers(self, self._spec, 1, lrn, pool, input_size, dropout, *variants)
            self.drop7 = make_dropout(dropout, dropout_scaling)
            self.fc8 = nn.Linear(out["fc7"], num_classes)
        if self.two_column:
            for column, device in zip(self.columns, self.devices):
                column.to_empty(device=device)
            self.fc8.to_empty(device=self.devices[0])
            _register_hooks(self)
        else:
            self.to_empty(device=self.devices[0])
        self._init_weights()

    def canonical_shapes(self):
        """Return {state_dict key: shape} of the canonical (Caffe grouped) layout for this configuration."""
        shapes = {}
        for name, (cin, cout, k, groups) in self._spec.items():
            shapes[name + ".weight"] = (cout, cin // groups, k, k) if k else (cout, cin)
            shapes[name + ".bias"] = (cout,)
        return shapes

    @torch.no_grad()
    def _init_weights(self):
        """The paper's init (section 5): N(0, std) weights (conv3-5: init_std_conv3_5, others init_std); bias_init in
        conv2, conv4, conv5, fc6, fc7; else 0."""
        # Drawn as canonical tensors on the CPU generator in a fixed order, then loaded: the same
        # seed gives the same net in either layout and on any device.
        if all(str(d) == "meta" for d in self.devices):
            return  # a net of shapes only holds no values: drawing width 1's 62 M weights took 0.25 s
        state = {}
        for key, shape in self.canonical_shapes().items():
            if key.endswith(".weight"):
                state[key] = torch.empty(shape).normal_(0.0, self.layer_init_std(key.split(".")[0]))
            else:
                state[key] = torch.full(shape, self.bias_init if key.split(".")[0] in BIAS_ONE else 0.0)
        with warnings.catch_warnings():  # a column on "meta" (shapes only) holds no values to load
            warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter", category=UserWarning)
            self.load_state_dict(state)

    def layer_init_std(self, layer):
        """The init std of `layer`'s weights at this net's own width (build.init_stds rescales it for width)."""
        return self.init_std_conv3_5 if layer in CONV3_5 else self.init_std

    def config(self):
        """Return the constructor's arguments except devices (JSON-able), to rebuild this net."""
        return {"num_classes": self.num_classes, "width": self.width, "input_size": self.input_size,
                "lrn": self.lrn, "pooling": self.pooling, "variant": self.variant,
                "bias_init": self.bias_init, "dropout": self.dropout, "init_std": self.init_std,
                "init_std_conv3_5": self.init_std_conv3_5, "lrn1_input": self.lrn1_input, "cnorm2": self.use_cnorm2,
                "dropout_scaling": self.dropout_scaling}

    def _check_input(self, x):
        """Raise TypeError / ValueError naming what was expected when `x` is not a batch this net takes."""
        size = self.input_size
        padded = size + self.input_padding
        expected = (f"a float batch N x 3 x {size} x {size}" + (f" (or {padded} x {padded}, conv1's padding in place)"
                                                                 if self.input_padding else "") + f" on {self.devices[0]}")
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"AlexNet expects {expected}; got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"AlexNet expects {expected}; got a {x.dim()}-d tensor of shape {tuple(x.shape)}"
                             + (" (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else ""))
        if x.shape[1] != 3:
            raise ValueError(f"AlexNet expects {expected}; got {x.shape[1]} channels (shape {tuple(x.shape)}); "
                             "pass N x C x H x W RGB")
        if tuple(x.shape[2:]) not in ((size, size), (padded, padded)):
            raise ValueError(f"AlexNet expects {expected}; got {x.shape[2]} x {x.shape[3]} images "
                             f"(this net was built with input_size={size})")
        if not x.is_floating_point():
            raise TypeError(f"AlexNet expects {expected}; got dtype {x.dtype} "
                            "(subtract the mean image and convert to float first)")
        if str(x.device) != self.devices[0]:
            raise ValueError(f"AlexNet expects {expected}; got a tensor on {x.device} "
                             f"(move it with x.to({self.devices[0]!r}))")

    def _send(self, x, device, link):
        """`x` to `device` across `link`, counted in self.traffic."""
        return transfer(x, device, link, self.traffic, self.copy_links)

    def _exchange(self, xs, link):
        """Give every column the concatenation [column 0, column 1] of `xs` on its own device."""
        return [torch.cat([x if j == i else self._send(x, device, link) for j, x in enumerate(xs)], 1)
                for i, device in enumerate(self.devices)]

    def _fc7(self, x):
        """Post-ReLU fc7 activations (N x 4096 at width 1) on devices[0], columns in order."""
        self._check_input(x)
        if x.device.type == "cpu" and self.input_size != 224:  # at 224 conv1's padding writes channels_last
            x = x.contiguous(memory_format=CPU_MEMORY_FORMAT)
        if not self.two_column:
            x = _conv3_conv5(self, _conv1_conv2(self, x))
            x = self.drop6(F.relu(self.fc6(x), inplace=True))
            return F.relu(self.fc7(x), inplace=True)
        # Each stage is issued for column 0, then column 1, with nothing in between that waits: on
        # two GPUs the kernels of the two columns run concurrently, meeting only at the links.
        # Both columns on one device share its stream and simply run one after the other.
        cols = self.columns
        # Both GPUs see the same image. Under autocast column 1's conv1 casts an fp32 image to the
        # autocast dtype (bf16) on arrival; casting it before it leaves sends half the bytes and is
        # the same function (one rounding either way; zero padding commutes with it).
        cast = autocast_dtype(self.devices[1]) if self.send_autocast_dtype and x.dtype == torch.float32 else None
        xs = [x, self._send(x if cast is None else x.to(cast), self.devices[1], "input")]
        xs = [_conv1_conv2(c, x) for c, x in zip(cols, xs)]
        xs = [_conv3_conv5(c, x) for c, x in zip(cols, self._exchange(xs, "conv3"))]
        xs = self._exchange(xs, "fc6")
        xs = [c.drop6(F.relu(c.fc6(x), inplace=True)) for c, x in zip(cols, xs)]
        xs = [F.relu(c.fc7(x), inplace=True) for c, x in zip(cols, self._exchange(xs, "fc7"))]
        return torch.cat([xs[0], self._send(xs[1], self.devices[0], "fc8")], 1)

    def forward(self, x):
        """Return the logits (N x num_classes, on devices[0]) for a batch `x` on devices[0]."""
        return self.fc8(self.drop7(self._fc7(x)))

    def fc7_features(self, x):
        """Return the post-ReLU fc7 activations (figure 4's 4096-d codes); call eval() first to switch off dropout."""
        return self._fc7(x)


def _to_canonical(model, state_dict, prefix, local_metadata):
    """state_dict post-hook: replace the two columns' halves by the canonical tensors (column 0 first)."""
    with torch.no_grad():  # keep_vars=True would otherwise return a graph, not tensors
        canonical = {}
        for name in LAYERS:
            for p in ("weight", "bias"):
                if name == "fc8":
                    value = state_dict.pop(f"{prefix}fc8.{p}")
                else:
                    halves = [state_dict.pop(f"{prefix}columns.{i}.{name}.{p}") for i in range(2)]
                    value = torch.cat([h.to(model.devices[0]) for h in halves], 0)
                canonical[f"{prefix}{name}.{p}"] = value
    state_dict.update(canonical)  # canonical order: conv1.weight, conv1.bias, ..., fc8.bias


def _from_canonical(model, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    """load_state_dict pre-hook: split each canonical tensor into the two columns' halves."""
    shapes = model.canonical_shapes()
    model._mismatched = set()
    for name in LAYERS[:-1]:
        for p in ("weight", "bias"):
            key = f"{prefix}{name}.{p}"
            if key not in state_dict:
                continue  # reported by load_state_dict as the columns' missing keys
            value = state_dict.pop(key)
            want = shapes[f"{name}.{p}"]
            if tuple(value.shape) != want:  # torch's own message, as the one-device layout gives
                error_msgs.append(f"size mismatch for {key}: copying a param with shape {value.shape} from "
                                  f"checkpoint, the shape in current model is {torch.Size(want)}.")
                model._mismatched.add(key)  # present, only the wrong size: not a missing key
                continue
            for i, half in enumerate(value.chunk(2, 0)):
                state_dict[f"{prefix}columns.{i}.{name}.{p}"] = half


def _canonical_key_names(model, incompatible_keys):
    """load_state_dict post-hook: report a two-column model's missing keys by their canonical names."""
    missing = incompatible_keys.missing_keys
    renamed = [re.sub(r"columns\.[01]\.(conv[1-5]|fc[67])\.(weight|bias)$", r"\1.\2", key) for key in missing]
    mismatched, model._mismatched = model._mismatched, set()
    # Both columns' halves name the same canonical key.
    missing[:] = [key for key in dict.fromkeys(renamed) if key not in mismatched]


def _register_hooks(model):
    """Make state_dict()/load_state_dict() of a two-column model speak the canonical layout."""
    if hasattr(model, "register_state_dict_post_hook"):  # torch >= 2.5
        model.register_state_dict_post_hook(_to_canonical)
    else:
        model._register_state_dict_hook(_to_canonical)
    model._register_load_state_dict_pre_hook(_from_canonical, with_module=True)
    model.register_load_state_dict_post_hook(_canonical_key_names)

"""What a run's settings build: the net with the paper's init (section 5), its optimizer and data transforms,
and its learning-rate schedule. --net picks the paper's AlexNet (default) or a CIFAR-10 net (nets/cifar*.py)."""
import math
import warnings

import torch

from paper_repro.core.cli import UsageError
from paper_repro.data.augment import CentrePatch, TrainPatch
from paper_repro.data.cifar_views import train_transforms
from paper_repro.nets.alexnet import AlexNet
from paper_repro.nets.cifar import ConvLocalNet, Fig1Net
from paper_repro.nets.cifar_tutorial import TutorialAlexNet
from paper_repro.training.optim import PaperSGD
from paper_repro.training.schedule import PlateauSchedule, StepSchedule
from paper_repro.training.settings import drop_epochs


def make_schedule(args):
    """The learning-rate schedule the flags ask for."""
    if args.lr_schedule == "step":
        return StepSchedule(args.lr, drop_epochs(args.lr_drop_epochs))
    return PlateauSchedule(args.lr, patience=args.lr_patience, threshold=args.lr_threshold,
                           max_drops=args.lr_max_drops)


def init_stds(model, init_std, scaling):
    """{weight key: std} for --init-std at this width: fan-in scaling keeps every layer's gain as at width 1."""
    shapes = model.canonical_shapes()
    with warnings.catch_warnings():  # a meta-device net, only for its shapes: its init is a no-op on purpose
        warnings.simplefilter("ignore")
        at_width_1 = AlexNet(num_classes=model.num_classes, devices=("meta",), variant=model.variant,
                             pooling=model.pooling, input_size=model.input_size).canonical_shapes()
    stds = {}
    for key, shape in shapes.items():
        if key.endswith(".weight"):
            fan_in, fan_in_1 = math.prod(shape[1:]), math.prod(at_width_1[key][1:])
            stds[key] = init_std * math.sqrt(fan_in_1 / fan_in) if scaling == "fan-in" else init_std
    return stds


def build_model(args, num_classes, devices):
    """The net the flags describe, initialised as the paper (section 5), each layer's std as init_stds() says."""
    if getattr(args, "net", "alexnet") != "alexnet":
        model = build_cifar_model(args, num_classes, devices)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model, model.init_stds()
    model = AlexNet(num_classes=num_classes, devices=devices, width=args.width, input_size=args.input_size,
                    lrn=args.lrn, pooling=args.pooling, variant=args.variant, bias_init=args.bias_init,
                    dropout=args.dropout, init_std=args.init_std)
    stds = init_stds(model, args.init_std, args.init_width_scaling)
    if any(std != args.init_std for std in stds.values()):
        # The same draws, rescaled per layer: the canonical state_dict names each layer's weight.
        state = model.state_dict()
        model.load_state_dict({k: v * (stds[k] / args.init_std) if k in stds else v for k, v in state.items()})
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, stds


# ---------------------------------------------------------------------------- the CIFAR-10 nets (--net)

def cifar_input(args):
    """(data path, input size) of a CIFAR net: --cifar-input / --cifar-input-size, else the net's own."""
    # Figure 1: no regularisation of any kind, so no augmentation: whole images, for either architecture
    own = {"cifar_conv_local": ("convnet-crops", 24), "cifar_tutorial": ("paper", 28),
           "cifar_fig1": ("whole", 32)}[args.net]
    kind = args.cifar_input or own[0]
    size = args.cifar_input_size or (32 if kind == "whole" else own[1])
    if kind == "whole" and size != 32:
        raise UsageError(f"--cifar-input-size {size}: whole images are 32x32 (use another --cifar-input for crops)")
    return kind, size


def build_cifar_model(args, num_classes, devices):
    """The CIFAR-10 net --net names, with the CIFAR flags."""
    kind, size = cifar_input(args)
    unit = dict(activation_kind=args.activation, tanh_a=args.tanh_a, tanh_b=args.tanh_b)
    try:
        if args.net == "cifar_conv_local":
            return ConvLocalNet(num_classes, args.cifar_layers, input_size=size, input=kind, devices=devices, **unit)
        if args.net == "cifar_fig1":
            return Fig1Net(num_classes, args.fig1_arch, input_size=size, input=kind, devices=devices, **unit)
        return TutorialAlexNet(num_classes, input_size=size, width=args.width, batch_norm=args.batch_norm,
                               lrn=False if args.lrn == "none" else None, dropout=args.dropout, init_std=args.init_std,
                               bias_init=args.bias_init, input=kind, devices=devices)
    except ValueError as e:
        raise UsageError(f"--net {args.net}: {e}") from None


def layer_params_mode(args, model):
    """--layer-params, or its default: "table" for a net with a per-layer table, else "flags"."""
    has_table = getattr(model, "layer_params", lambda: None)() is not None
    mode = getattr(args, "layer_params", None) or ("table" if has_table else "flags")
    if mode == "table" and not has_table:
        raise UsageError(f"--layer-params table: --net {getattr(args, 'net', 'alexnet')} has no per-layer table; "
                         f"use --layer-params flags")
    return mode


def param_groups(args, model):
    """The optimizer's parameter groups: one (the paper's rule), or cuda-convnet's per-layer epsW, epsB and wc.

    Each group carries lr_scale (its lr = the schedule's lr x lr_scale) and, for the biases of a
    table, lr_fixed: cuda-convnet's methodology lowers only epsW, so epsB stays 2 x the initial lr.
    """
    if layer_params_mode(args, model) == "flags":
        return [{"params": list(model.parameters()), "lr_scale": 1.0, "lr_fixed": False}]
    groups = []
    for name, weight, bias, wc in model.layer_params():
        groups.append({"params": [weight], "weight_decay": wc, "lr_scale": 1.0, "lr_fixed": False, "layer": name})
        groups.append({"params": [bias], "weight_decay": 0.0, "lr_scale": 2.0, "lr_fixed": True, "layer": name})
    return groups


def make_optimizer(args, model):
    """PaperSGD over param_groups(), every group's lr set from args.lr."""
    optimizer = PaperSGD(param_groups(args, model), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    set_lr(optimizer, args.lr, args.lr)
    return optimizer


def set_lr(optimizer, lr, initial_lr):
    """Give every group its lr: `lr` (the schedule's) x its lr_scale, or initial_lr x lr_scale where lr_fixed."""
    for group in optimizer.param_groups:
        group["lr"] = (initial_lr if group.get("lr_fixed") else lr) * group.get("lr_scale", 1.0)


def make_transforms(args, stats, model):
    """(training transform, per-epoch validation transform): the paper's patches, or a CIFAR net's data path."""
    colour = args.colour_noise_scale if args.colour_noise else None
    if getattr(args, "net", "alexnet") == "alexnet":
        return (TrainPatch(stats["mean_image"], stats["pca_eigval"], stats["pca_eigvec"], size=args.input_size,
                           colour_noise=colour, noise_std=args.colour_noise_std, channels_last=args.channels_last),
                CentrePatch(stats["mean_image"], size=args.input_size, channels_last=args.channels_last))
    if stats["mean_image"].shape[0] < model.input_size:
        raise UsageError(f"--net {args.net} takes {model.input_size}x{model.input_size} inputs; the store's images are "
                         f"{stats['mean_image'].shape[0]}x{stats['mean_image'].shape[1]} (build a CIFAR-10 store)")
    return train_transforms(model.input, stats, model.input_size, colour, args.colour_noise_std, args.channels_last)

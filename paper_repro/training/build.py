"""What a run's settings build: the net with the recipe's init, its optimiser's groups, its data transforms and
its schedule. --net picks the paper's AlexNet (default) or a CIFAR-10 net (nets/cifar*.py)."""
import math
import warnings

import torch

from paper_repro.core.cli import UsageError
from paper_repro.core.devices import all_cpu
from paper_repro.data.augment import CentrePatch, TrainPatch
from paper_repro.data.cifar_views import train_transforms
from paper_repro.nets import lrn_triton
from paper_repro.nets.alexnet import AlexNet
from paper_repro.nets.cifar import ConvLocalNet, Fig1Net
from paper_repro.nets.cifar_tutorial import TutorialAlexNet
from paper_repro.nets.lrn import use_lrn_kernel
from paper_repro.training.optim import PaperSGD
from paper_repro.training.param_groups import param_groups
from paper_repro.training.schedule import PlateauSchedule, ReleasedSchedule, StepSchedule
from paper_repro.training.settings import drop_epochs


def make_schedule(args):
    """The learning-rate schedule the flags ask for."""
    if args.lr_schedule == "step":
        return StepSchedule(args.lr, drop_epochs(args.lr_drop_epochs))
    if args.lr_schedule in ("released", "released-2010"):
        return ReleasedSchedule(args.lr, args.epochs, "2010" if args.lr_schedule == "released-2010" else "2012")
    return PlateauSchedule(args.lr, patience=args.lr_patience, threshold=args.lr_threshold,
                           max_drops=args.lr_max_drops)


# Keras' Adam defaults (the CIFAR-10 tutorial's optimiser); torch's eps is 1e-8
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-7


def make_optimizer(model, args):
    """PaperSGD (or --optimizer adam) over one group per layer and kind: biases at bias_lr_mult x the rate."""
    groups = param_groups(model, args.weight_decay, args.bias_lr_mult, args.bias_decay)
    if getattr(args, "optimizer", "paper-sgd") == "adam":
        # weight decay as the tutorial's L2 term: added to the gradient before the moments (not AdamW)
        return torch.optim.Adam(groups, lr=args.lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=args.weight_decay,
                                foreach=True)
    return PaperSGD(groups, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)


def init_stds(model, scaling):
    """{weight key: std}: each layer's recipe std, rescaled by fan-in at width != 1 so every layer keeps its gain."""
    shapes = model.canonical_shapes()
    with warnings.catch_warnings():  # a meta-device net, only for its shapes: its init is a no-op on purpose
        warnings.simplefilter("ignore")
        at_width_1 = AlexNet(num_classes=model.num_classes, devices=("meta",), variant=model.variant,
                             pooling=model.pooling, input_size=model.input_size).canonical_shapes()
    stds = {}
    for key, shape in shapes.items():
        if key.endswith(".weight"):
            std = model.layer_init_std(key.split(".")[0])
            fan_in, fan_in_1 = math.prod(shape[1:]), math.prod(at_width_1[key][1:])
            stds[key] = std * math.sqrt(fan_in_1 / fan_in) if scaling == "fan-in" else std
    return stds


def build_model(args, num_classes, devices):
    """The net the flags describe, initialised as the recipe says (section 5), each layer's std as init_stds() says."""
    if getattr(args, "net", "alexnet") != "alexnet":
        model = build_cifar_model(args, num_classes, devices)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model, model.init_stds()
    model = AlexNet(num_classes=num_classes, devices=devices, width=args.width, input_size=args.input_size,
                    lrn=args.lrn, pooling=args.pooling, variant=args.variant, bias_init=args.bias_init,
                    dropout=args.dropout, init_std=args.init_std, init_std_conv3_5=args.init_std_conv3_5,
                    lrn1_input=args.lrn1_input, cnorm2=args.cnorm2, dropout_scaling=args.dropout_scaling)
    stds = init_stds(model, args.init_width_scaling)
    own = {key: model.layer_init_std(key.split(".")[0]) for key in stds}
    if any(stds[k] != own[k] for k in stds):
        # The same draws, rescaled per layer: the canonical state_dict names each layer's weight.
        state = model.state_dict()
        model.load_state_dict({k: v * (stds[k] / own[k]) if k in stds else v for k, v in state.items()})
    if getattr(args, "lrn_kernel", "torch") == "triton":
        why = lrn_triton.available(devices[0])
        if why:
            raise UsageError(f"--lrn-kernel triton: {why}; use --lrn-kernel torch")
        use_lrn_kernel(model, "triton")
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


def make_transforms(args, stats, model, loader_workers=None):
    """(training transform, per-epoch validation transform): the paper's patches, or a CIFAR net's data path.

    loader_workers: the training loader's worker processes; with none (a raw store, or any store with
    --workers 0, read in this process) AlexNet's training patches are cut with all of torch's threads, else
    with one beside the workers (a CIFAR net's data path keeps one either way)."""
    colour = args.colour_noise_scale if args.colour_noise else None
    # the recipe's patch options (mean crop, rescale, crop chunk): AlexNet's, and a CIFAR net's "paper" data path
    options = dict(mean_crop=args.mean_crop, rescale=args.colour_noise_rescale, crop_chunk=args.crop_chunk)
    if getattr(args, "net", "alexnet") == "alexnet":
        # On the CPU, where the net computes in channels_last, the patches are written straight into a
        # channels_last batch with conv1's zero padding in place: one copy of the batch fewer per step
        # (training: 91 -> 75 ms a batch of 128, validation 109 -> 41 ms; one thread, results/benchmarks.md).
        layout = (dict(channels_last=True, pad=model.input_padding) if all_cpu(model.devices)
                  else dict(channels_last=args.channels_last))
        return (TrainPatch(stats["mean_image"], stats["pca_eigval"], stats["pca_eigvec"], size=args.input_size,
                           colour_noise=colour, noise_std=args.colour_noise_std, all_threads=loader_workers == 0,
                           **layout, **options),
                CentrePatch(stats["mean_image"], size=args.input_size, **layout))
    if stats["mean_image"].shape[0] < model.input_size:
        raise UsageError(f"--net {args.net} takes {model.input_size}x{model.input_size} inputs; the store's images are "
                         f"{stats['mean_image'].shape[0]}x{stats['mean_image'].shape[1]} (build a CIFAR-10 store)")
    return train_transforms(model.input, stats, model.input_size, colour, args.colour_noise_std, args.channels_last,
                            **options)

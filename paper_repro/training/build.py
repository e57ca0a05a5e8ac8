"""What a run's settings build: the net with the recipe's init, its optimiser's groups and its schedule."""
import math
import warnings

import torch

from paper_repro.nets.alexnet import AlexNet
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


def make_optimizer(model, args):
    """PaperSGD over one group per layer and kind: biases at bias_lr_mult x the rate, decayed only with bias_decay."""
    return PaperSGD(param_groups(model, args.weight_decay, args.bias_lr_mult, args.bias_decay), lr=args.lr,
                    momentum=args.momentum, weight_decay=args.weight_decay)


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
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, stds

"""What a run's settings build: the net with the paper's init (section 5) and its learning-rate schedule."""
import math
import warnings

import torch

from paper_repro.nets.alexnet import AlexNet
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

"""The optimiser's parameter groups: one per layer and kind, with the authors' rates and decay for each.

cuda-convnet gives every layer its own epsW, epsB and wc: in the released 2012 run biases learn at
twice the weights' rate, without weight decay, and their rate is not lowered with the weights'
(layer-params-145.cfg). A group is {"params", "layer", "kind" ("weight"/"bias"), "lr_mult",
"weight_decay"}; apply_learning_rates sets each group's lr from the schedule.
"""
import re

_PREFIX = re.compile(r"^(module\.)?(columns\.\d+\.)?")


def layer_of(name):
    """The layer a parameter belongs to, by its name: columns.0.conv1.weight -> conv1 (both columns, one layer)."""
    return _PREFIX.sub("", name).rsplit(".", 1)[0]


def param_groups(model, weight_decay, bias_lr_mult=1.0, bias_decay=True):
    """One group per (layer, weight or bias), in the model's parameter order.

    A model may override per layer with a method layer_settings() -> {layer: {"lr_mult", "weight_decay",
    "bias_lr_mult", "bias_weight_decay"}} (the CIFAR nets' per-layer epsW and wc); the arguments give the rest.
    """
    overrides = model.layer_settings() if hasattr(model, "layer_settings") else {}
    groups = {}
    for name, p in model.named_parameters():
        layer = layer_of(name)
        kind = "bias" if name.endswith("bias") else "weight"
        if (layer, kind) not in groups:
            own = overrides.get(layer, {})
            if kind == "weight":
                lr_mult, decay = own.get("lr_mult", 1.0), own.get("weight_decay", weight_decay)
            else:
                lr_mult = own.get("bias_lr_mult", bias_lr_mult * own.get("lr_mult", 1.0))
                decay = own.get("bias_weight_decay", own.get("weight_decay", weight_decay) if bias_decay else 0.0)
            groups[(layer, kind)] = {"params": [], "layer": layer, "kind": kind, "lr_mult": float(lr_mult),
                                     "weight_decay": float(decay)}
        groups[(layer, kind)]["params"].append(p)
    return list(groups.values())


def apply_learning_rates(optimizer, schedule, initial_lr, bias_lr_fixed=False):
    """Set every group's lr: the schedule's rate for its layer times its lr_mult.

    bias_lr_fixed: biases keep the initial rate (times their mult) whatever the schedule does to the
    weights', except in a layer the schedule has frozen (rate 0), whose biases freeze too.
    """
    for group in optimizer.param_groups:
        base = schedule.layer_lr(group.get("layer"))
        if group.get("kind") == "bias" and bias_lr_fixed and base > 0:
            base = initial_lr
        group["lr"] = base * group.get("lr_mult", 1.0)

"""Checkpoint files: written atomically and verified, the previous one kept, loaded with weights_only=True."""
import os
import pickle
import sys

import torch

from paper_repro.core import faults
from paper_repro.core.atomic import atomic_write, stale_temps
from paper_repro.core.numbering import position
from paper_repro.core.recipe import LEGACY_RECIPE, with_legacy
from paper_repro.nets.registry import net_from_config

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"  # the checkpoint before the last one: kept until the new one is verified
# Net settings added with the released recipe: a checkpoint without them was trained as they were before.
LEGACY_NET_KEYS = ("lrn1_input", "cnorm2", "dropout_scaling", "init_std_conv3_5")


class CheckpointError(ValueError):
    """A checkpoint file that exists but cannot be loaded (truncated, corrupt, or not a checkpoint)."""


def _why_unreadable(error):
    """A short reason for a failed torch.load, never torch's advice to load with weights_only=False."""
    if isinstance(error, pickle.UnpicklingError) and "global" in str(error).lower():
        return ("it holds Python objects that weights_only=True refuses to load; it is not a checkpoint "
                "written by paper_repro, and loading it unsafely is not an option here")
    text = str(error)
    if "zip archive" in text or "central directory" in text:
        return "its archive is incomplete (a copy cut short, or a disk that filled up while it was written)"
    return f"it is not a torch.save file ({type(error).__name__})"


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint with weights_only=True; FileNotFoundError or CheckpointError with a clear reason."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, KeyError, EOFError ... for bad files
        raise CheckpointError(f"checkpoint {path} is not a readable checkpoint (truncated or corrupt?): "
                              f"{_why_unreadable(e)}") from None


def save_checkpoint(path, obj, keep_previous=True):
    """torch.save `obj` to `path` atomically, read it back to verify it, and keep the file it replaces.

    A loadable checkpoint is on disk at every moment: the new file is complete and verified before
    anything is renamed; then the old `path` is kept as PREVIOUS beside it, and the new file becomes
    `path`. A disk that fills up raises OSError before any rename: nothing older is lost.
    """
    path = os.fspath(path)
    previous = os.path.join(os.path.dirname(path), PREVIOUS) if keep_previous else None

    def verify_then_keep_previous(tmp):
        load_checkpoint(tmp)  # a CheckpointError here leaves path and PREVIOUS as they were
        if previous is None or not os.path.exists(path):
            return
        # A hard link keeps `path` in place until the final rename: a kill at any moment leaves it.
        link = previous + ".link"
        try:
            if os.path.exists(link):
                os.unlink(link)
            os.link(path, link)
            os.replace(link, previous)
        except OSError:  # a file system without hard links: move it (a kill right here leaves only PREVIOUS)
            os.replace(path, previous)

    def write(f):
        torch.save(obj, f)
        faults.point("checkpoint")  # the restart tests kill here: a complete temp file, not yet renamed

    atomic_write(path, write, before_rename=verify_then_keep_previous)


def remove_stale_temps(run):
    """Delete the partial checkpoint files that a kill during a save left in `run`."""
    for tmp in stale_temps(run, CHECKPOINT):
        os.unlink(tmp)


def existing_checkpoints(run):
    """The checkpoint files of run folder `run` that exist, newest first ([] if none)."""
    return [p for p in (os.path.join(run, CHECKPOINT), os.path.join(run, PREVIOUS)) if os.path.isfile(p)]


def load_run_checkpoint(run, warn=None):
    """Load the newest loadable checkpoint of `run`: (checkpoint, path).

    A missing or unreadable checkpoint.pt falls back to checkpoint.prev.pt, with a warning through
    `warn` (default: stderr) that says what was lost; CheckpointError if none can be loaded.
    """
    warn = warn or (lambda text: print(text, file=sys.stderr, flush=True))
    problems = []
    for path in (os.path.join(run, CHECKPOINT), os.path.join(run, PREVIOUS)):
        try:
            ckpt = load_checkpoint(path)
        except FileNotFoundError:
            problems.append(f"checkpoint {path} does not exist")
            continue
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if problems:
            warn(f"WARNING: {problems[0]}; resuming from the previous checkpoint {path} instead "
                 f"({position(ckpt['epoch'], ckpt['step'])}): the steps after it are lost and will be trained again")
        return ckpt, path
    raise CheckpointError(f"run {run} has no loadable checkpoint: " + "; ".join(problems)
                          + ". Start a new run with another --out (or without --resume)")


# ----------------------------------------------------------------------------- a model from a checkpoint

PAPER_FC7 = 4096  # fc7 units of the paper's net at width 1


def read_checkpoint(path):
    """Return (canonical state_dict, model_config or None, info) of a training checkpoint or a bare state_dict."""
    obj = load_checkpoint(path, map_location="cpu")
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        info = {k: obj[k] for k in ("epoch", "step", "steps_before") if isinstance(obj.get(k), (int, float))}
        run_config = obj.get("config") or {}
        info["recipe"] = run_config.get("recipe", LEGACY_RECIPE)
        info["mean_crop"] = run_config.get("mean_crop", "position")  # the test subtracts the mean as training did
        return obj["model"], _with_legacy_net(obj.get("model_config")), info
    if isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
        if all(k.startswith("module.") for k in obj):  # saved from a DistributedDataParallel wrapper
            obj = {k[len("module."):]: v for k, v in obj.items()}
        return obj, None, {"recipe": "unknown (a bare state_dict: the default recipe's net assumed)",
                           "mean_crop": "position"}
    raise CheckpointError(
        f"checkpoint {path} is neither a training checkpoint (a dict with 'model' and 'model_config') "
        f"nor a state_dict (a dict of tensors such as conv1.weight ... fc8.bias)"
    )


def _with_legacy_net(model_config):
    """A checkpoint's model_config with the net settings it predates filled as they were then (recipe.LEGACY)."""
    if model_config is None or model_config.get("net", "alexnet") != "alexnet":
        return model_config  # the CIFAR nets have none of AlexNet's legacy settings
    filled = with_legacy(model_config)
    return {k: v for k, v in filled.items() if k in model_config or k in LEGACY_NET_KEYS}


def infer_model_config(state_dict, path="<state_dict>", input_size=224):
    """Guess the AlexNet kwargs of a bare canonical state_dict from its shapes (width, classes, variant)."""
    for key in ("conv1.weight", "conv2.weight", "fc7.weight", "fc8.weight"):
        if key not in state_dict:
            raise ValueError(
                f"checkpoint {path} does not match the net: it has no {key} (keys found: "
                f"{', '.join(sorted(state_dict)[:8])}{' ...' if len(state_dict) > 8 else ''}); "
                f"expected AlexNet's canonical keys conv1.weight ... fc8.bias"
            )
    conv1 = state_dict["conv1.weight"].shape[0]
    conv2_in = state_dict["conv2.weight"].shape[1]
    # The two-column net's conv2 sees only its own column's half of conv1's maps (groups=2);
    # the paper's one-GPU ablation sees all of them (and has half the conv1 kernels per width).
    variant = "two-column" if conv2_in * 2 == conv1 else "one-column-half"
    # fc7 (4096 x width in both variants) gives the width with the least rounding.
    width = state_dict["fc7.weight"].shape[0] / PAPER_FC7
    return {
        "num_classes": int(state_dict["fc8.weight"].shape[0]),
        "width": width,
        "input_size": input_size,
        "variant": variant,
        # A bare state_dict says nothing of the net's other settings: AlexNet's defaults (the default
        # recipe's net) fill them, and read_checkpoint's info says the recipe is unknown.
    }


def check_state_dict(net, state_dict, path):
    """Raise a ValueError naming the first key or shape where `state_dict` does not fit `net`."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    desc = ", ".join(f"{k}={v}" for k, v in sorted(net.config().items()) if k != "net")
    if missing or unexpected:
        what = f"lacks {missing[0]}" if missing else f"has an unexpected key {unexpected[0]}"
        raise ValueError(
            f"checkpoint {path} does not match the net {type(net).__name__}({desc}): it {what} "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys)"
        )
    for k, v in expected.items():
        got = tuple(state_dict[k].shape)
        if got != tuple(v.shape):
            raise ValueError(
                f"checkpoint {path} does not match the net {type(net).__name__}({desc}): {k} has shape {got} "
                f"in the checkpoint but {tuple(v.shape)} in the net"
            )


def load_model(path, devices=("cpu",), input_size=None):
    """Build the AlexNet a checkpoint describes on `devices`, load its weights, and return it in eval mode.

    `path`: a training checkpoint (dict with "model" and "model_config") or a bare canonical state_dict
    (width, classes and variant are read from the shapes; `input_size` defaults to 224).
    """
    state_dict, config, info = read_checkpoint(path)
    if config is None:
        config = infer_model_config(state_dict, path, input_size or 224)
    elif input_size is not None:
        config = {**config, "input_size": input_size}
    net = net_from_config(config, devices)  # AlexNet, or the CIFAR net config["net"] names
    check_state_dict(net, state_dict, path)
    net.load_state_dict(state_dict)
    net.eval()
    net.checkpoint_info = {"path": os.path.abspath(path), **info}
    return net

"""python -m paper_repro.evaluate: the paper's test (ten views, softmax averaged; ensembles of nets)."""
import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from paper_repro.checkpoint import atomic_write, atomic_write_json, load_checkpoint
from paper_repro.devices import HELP as GPUS_HELP, parse_gpus
from paper_repro.metrics import topk_errors, topk_predictions
from paper_repro.views import TenViews

PAPER_FC7 = 4096  # fc7 units of the paper's net at width 1


def read_checkpoint(path):
    """Return (canonical state_dict, model_config or None, info) of a training checkpoint or a bare state_dict."""
    obj = load_checkpoint(path, map_location="cpu")
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        info = {k: obj[k] for k in ("epoch", "step") if isinstance(obj.get(k), (int, float))}
        return obj["model"], obj.get("model_config"), info
    if isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
        if all(k.startswith("module.") for k in obj):  # saved from a DistributedDataParallel wrapper
            obj = {k[len("module."):]: v for k, v in obj.items()}
        return obj, None, {}
    raise ValueError(
        f"checkpoint {path} is neither a training checkpoint (a dict with 'model' and 'model_config') "
        f"nor a state_dict (a dict of tensors such as conv1.weight ... fc8.bias)"
    )


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
    }


def check_state_dict(net, state_dict, path):
    """Raise a ValueError naming the first key or shape where `state_dict` does not fit `net`."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    desc = ", ".join(f"{k}={v}" for k, v in sorted(net.config().items()))
    if missing or unexpected:
        what = f"lacks {missing[0]}" if missing else f"has an unexpected key {unexpected[0]}"
        raise ValueError(
            f"checkpoint {path} does not match the net AlexNet({desc}): it {what} "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys)"
        )
    for k, v in expected.items():
        got = tuple(state_dict[k].shape)
        if got != tuple(v.shape):
            raise ValueError(
                f"checkpoint {path} does not match the net AlexNet({desc}): {k} has shape {got} "
                f"in the checkpoint but {tuple(v.shape)} in the net"
            )


def load_model(path, devices=("cpu",), input_size=None):
    """Build the AlexNet a checkpoint describes on `devices`, load its weights, and return it in eval mode.

    `path`: a training checkpoint (dict with "model" and "model_config") or a bare canonical state_dict
    (width, classes and variant are read from the shapes; `input_size` defaults to 224).
    """
    from paper_repro.model import AlexNet

    state_dict, config, info = read_checkpoint(path)
    if config is None:
        config = infer_model_config(state_dict, path, input_size or 224)
    elif input_size is not None:
        config = {**config, "input_size": input_size}
    net = AlexNet(devices=tuple(devices), **config)
    check_state_dict(net, state_dict, path)
    net.load_state_dict(state_dict)
    net.eval()
    net.checkpoint_info = {"path": os.path.abspath(path), **info}
    return net


def open_store(root, split):
    """Open STORE's split with a clear error when the split is missing or empty."""
    from paper_repro.data import ImageNetStore

    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"--data {root}: no such directory; pass the STORE that data_prep/build_imagenet.py wrote")
    try:
        store = ImageNetStore(root, split)
    except ValueError as e:
        raise ValueError(f"cannot evaluate --split {split}: {e}") from e
    if len(store) == 0:
        raise ValueError(f"cannot evaluate --split {split}: split {split!r} of image store {root} is empty (0 images)")
    return store


def image_batches(store, indices=None, batch_size=128, workers=0, pin_memory=False):
    """Yield (uint8 B x 256 x 256 x 3, int64 labels) for store[indices] in order, each image decoded once."""
    from paper_repro.loader import BatchLoader

    indices = np.arange(len(store)) if indices is None else np.asarray(indices, dtype=np.int64)
    yield from BatchLoader(store, indices, batch_size, workers=workers, pin_memory=pin_memory)


def average_views(probs):
    """Mean over dim 1 of N x V x C, adding the views one by one so equal inputs give equal outputs (exact ties)."""
    # Tensor.mean's vectorised reduction rounds differently in different class columns, which would
    # break exact ties between classes (and so the lower-index-first rule) by rounding noise.
    total = probs[:, 0].clone()
    for v in range(1, probs.shape[1]):
        total += probs[:, v]
    return total / probs.shape[1]


def _view_buffer(buffers, size, count, device):
    """A float32 count x 3 x size x size CPU tensor reused across batches (None on a GPU): a fresh
    100+ MB allocation per batch would cost more in page faults than cutting the views does."""
    if device.type != "cpu":
        return None
    need = count * 3 * size * size
    if size not in buffers or buffers[size].numel() < need:
        buffers[size] = torch.empty(need)
    return buffers[size][:need].view(count, 3, size, size)


def evaluate(models, store, mean_image, views=10, batch_size=128, workers=0, bf16=False, progress=True):
    """Return float32 probabilities N x C (CPU): softmax averaged over the views, then over the models."""
    if not models:
        raise ValueError("evaluate needs at least one model")
    classes = {m.config()["num_classes"] for m in models}
    if len(classes) != 1:
        raise ValueError(f"the checkpoints disagree on the number of classes: {sorted(classes)}")
    num_classes = classes.pop()
    device = torch.device(models[0].devices[0])
    cutters = {}
    for m in models:
        size = m.config().get("input_size", 224)
        cutters.setdefault(size, TenViews(mean_image, size, views))
    probs = torch.zeros(len(store), num_classes, dtype=torch.float32)
    start, buffers = 0, {}
    batches = image_batches(store, None, batch_size, workers, pin_memory=device.type == "cuda")
    bar = tqdm(total=len(store), unit="img", desc=f"evaluate ({views} view{'s' if views > 1 else ''})",
               disable=not progress, dynamic_ncols=True)
    with torch.inference_mode():
        for images, _ in batches:
            images = images.to(device, non_blocking=True)
            n = images.shape[0]
            patches = {size: cut(images, out=_view_buffer(buffers, size, n * views, device))
                       for size, cut in cutters.items()}  # cut once per patch size
            total = torch.zeros(n, num_classes, dtype=torch.float32, device=device)
            for m in models:
                x = patches[m.config().get("input_size", 224)]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = m(x)
                total += average_views(F.softmax(logits.float(), dim=1).view(n, views, num_classes))
            probs[start:start + n] = (total / len(models)).cpu()
            start += n
            bar.update(n)
    bar.close()
    return probs


def get_args_parser(add_help=True):
    """The command-line options of python -m paper_repro.evaluate."""
    p = argparse.ArgumentParser(
        prog="python -m paper_repro.evaluate",
        description="The paper's test: top-1/top-5 error of one or several AlexNet checkpoints on a store's "
        "val or test split, softmax averaged over ten views (four corners, centre, reflections) and over "
        "the checkpoints (the paper's '5 CNNs').",
        add_help=add_help,
    )
    p.add_argument("--data", required=True, help="STORE written by data_prep/build_imagenet.py")
    p.add_argument("--split", default="val", choices=("val", "test"), help="split to evaluate (default val)")
    p.add_argument("--checkpoint", required=True, action="append",
                   help="a training checkpoint (RUN/checkpoint.pt) or a bare canonical state_dict; "
                   "repeat to average several nets' softmax outputs")
    p.add_argument("--gpus", default="0", help=GPUS_HELP + " (default 0)")
    p.add_argument("--views", type=int, default=10, choices=(10, 1),
                   help="10: the paper's ten patches (default); 1: the centre patch only")
    p.add_argument("--json", required=True, help="where to write the results (JSON)")
    p.add_argument("--predictions", default=None, help="optional .npy: int64 N x 5 top-5 labels per image, best first")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch (x views patches; default 128)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="decoding worker processes")
    p.add_argument("--input-size", type=int, default=None, choices=(224, 227),
                   help="patch size (default: what a training checkpoint records; 224 for a bare state_dict)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (deviation: the paper computed in fp32)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


def main(args):
    """Evaluate, write --json (and --predictions); return the result dict."""
    from paper_repro.data import load_stats

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    devices = parse_gpus(args.gpus)
    store = open_store(args.data, args.split)
    models = [load_model(c, devices, args.input_size) for c in args.checkpoint]
    num_store = len(store.classes)
    for m in models:
        if m.config()["num_classes"] != num_store:
            raise ValueError(
                f"checkpoint {m.checkpoint_info['path']} predicts {m.config()['num_classes']} classes but "
                f"--data {args.data} has {num_store}; evaluate on the store the net was trained for"
            )
    mean_image = load_stats(args.data)["mean_image"]
    t0 = time.time()
    probs = evaluate(models, store, mean_image, args.views, args.batch_size, args.workers, args.bf16,
                     progress=not args.no_progress)
    seconds = time.time() - t0
    preds = topk_predictions(probs, k=5)
    labels = torch.as_tensor(np.asarray(store.labels), dtype=torch.int64)
    errors = topk_errors(preds, labels, ks=(1, 5))
    n = len(store)
    from paper_repro.report import dataset_identity

    result = {
        "top1_error": errors[1] / n,
        "top5_error": errors[5] / n,
        "top1_wrong": errors[1],
        "top5_wrong": errors[5],
        "images": n,
        "views": args.views,
        "split": args.split,
        "checkpoints": [m.checkpoint_info for m in models],
        "model_configs": [m.config() for m in models],
        "data": os.path.abspath(args.data),
        "store_classes": num_store,
        "dataset": dataset_identity(args.data, num_store)["name"],
        "devices": list(devices),
        "bf16": bool(args.bf16),
        "seconds": seconds,
        "images_per_s": n / seconds if seconds > 0 else None,
        "predictions": os.path.abspath(args.predictions) if args.predictions else None,
        "errors_are": "fractions (0-1) of the images; top5 = label not among the 5 best",
    }
    if args.predictions:
        atomic_write(args.predictions, lambda f: np.save(f, preds.numpy().astype(np.int64)))
    atomic_write_json(args.json, result)
    print(f"{args.split}: top-1 error {100 * result['top1_error']:.2f} %, top-5 error "
          f"{100 * result['top5_error']:.2f} % over {n} images, {args.views} view(s), "
          f"{len(models)} net(s) -> {args.json}")
    return result


if __name__ == "__main__":
    try:
        main(get_args_parser().parse_args())
    except (ValueError, FileNotFoundError) as e:  # bad input: the message says what to do, no traceback
        raise SystemExit(f"python -m paper_repro.evaluate: error: {e}")

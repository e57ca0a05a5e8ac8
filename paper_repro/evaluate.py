"""python -m paper_repro.evaluate: the paper's test (ten views, softmax averaged; ensembles of nets)."""
import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from paper_repro.atomic import atomic_write, atomic_write_json
from paper_repro.checkpoint import load_model
from paper_repro.cli import UsageError, checked, run
from paper_repro.data import ImageNetStore, dataset_identity, load_stats
from paper_repro.devices import HELP as GPUS_HELP
from paper_repro.devices import parse_gpus, set_precision_policy
from paper_repro.loader import default_workers, image_batches
from paper_repro.metrics import topk_errors, topk_predictions
from paper_repro.views import TenViews

PROG = "python -m paper_repro.evaluate"


def open_store(root, split):
    """Open STORE's split with a clear error when the split is missing or empty."""
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


def evaluate(models, store, mean_image, views=10, batch_size=128, workers=0, bf16=False, progress=True,
             decode="cpu"):
    """Return float32 probabilities N x C (CPU): softmax averaged over the views, then over the models.

    The probabilities stay on the device until the last batch is done and come back in one copy:
    the host never waits for the device inside the loop.
    """
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
    probs = torch.zeros(len(store), num_classes, dtype=torch.float32, device=device)
    start, buffers = 0, {}
    batches = image_batches(store, np.arange(len(store)), batch_size, workers, pin_memory=device.type == "cuda",
                            decode=decode, device=device)
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
            probs[start:start + n] = total / len(models)
            start += n
            bar.update(n)
    bar.close()
    return probs.cpu()


def get_args_parser(add_help=True):
    """The command-line options of python -m paper_repro.evaluate."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="The paper's test: top-1/top-5 error of one or several AlexNet checkpoints on a store's "
        "val or test split, softmax averaged over ten views (four corners, centre, reflections) and over "
        "the checkpoints (the paper's '5 CNNs'). Prints the errors; --json also writes them to a file.",
        add_help=add_help,
    )
    p.add_argument("--data", required=True, help="STORE written by data_prep/build_imagenet.py (required)")
    p.add_argument("--split", default="val", choices=("val", "test"), help="split to evaluate (default: %(default)s)")
    p.add_argument("--checkpoint", required=True, action="append",
                   help="a training checkpoint (RUN/checkpoint.pt) or a bare canonical state_dict (required); "
                   "repeat to average several nets' softmax outputs")
    p.add_argument("--gpus", default="0", help=GPUS_HELP + " (default: %(default)s)")
    p.add_argument("--views", type=int, default=10, choices=(10, 1),
                   help="10: the paper's ten patches; 1: the centre patch only (default: %(default)s)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file (default: print only)")
    p.add_argument("--predictions", default=None,
                   help="also write int64 N x 5 top-5 labels per image, best first, to this .npy file "
                   "(default: not written)")
    p.add_argument("--batch-size", type=int, default=128,
                   help="images per batch, each cut into --views patches (default: %(default)s)")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="decoding worker processes; 0 decodes in this process (default: the CPU cores this "
                   "process may use = %(default)s)")
    p.add_argument("--decode", choices=("cpu", "gpu"), default="cpu",
                   help="cpu: the workers decode the store's JPEGs; gpu: the workers read bytes and the GPU decodes "
                   "each batch (torchvision.io.decode_jpeg) (default: %(default)s)")
    p.add_argument("--input-size", type=int, default=None, choices=(224, 227),
                   help="patch size (default: what a training checkpoint records; 224 for a bare state_dict)")
    p.add_argument("--bf16", action="store_true",
                   help="bf16 autocast (deviation: the paper computed in fp32) (default: off, fp32)")
    p.add_argument("--no-tf32", dest="tf32", action="store_false",
                   help="on a GPU, full fp32 convolutions and matmuls instead of TF32 (default: TF32 on a GPU; "
                   "no effect on the CPU)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar (default: shown)")
    return p


def check_args(args):
    """Raise UsageError naming the flag and its allowed values for the first value out of range."""
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: must be an integer >= 1")
    if args.workers < 0:
        raise UsageError(f"--workers {args.workers}: must be an integer >= 0 (0: decode in this process)")
    for flag, path in (("--json", args.json), ("--predictions", args.predictions)):
        if path and os.path.isdir(path):
            raise UsageError(f"{flag} {path}: is a folder; pass a file name (such as {os.path.join(path, 'x')})")


def prepare(args):
    """Check the flags, open the store, load the nets: (devices, precision policy, store, models, mean image)."""
    check_args(args)
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
    precision = set_precision_policy(devices, args.tf32)
    return devices, precision, store, models, load_stats(args.data)["mean_image"]


def score(args, devices, precision, store, models, mean_image):
    """Evaluate the prepared nets, print the errors, write --json and --predictions if given; return the result."""
    t0 = time.time()
    probs = evaluate(models, store, mean_image, args.views, args.batch_size, args.workers, args.bf16,
                     progress=not args.no_progress, decode=args.decode)
    seconds = time.time() - t0
    preds = topk_predictions(probs, k=5)
    labels = torch.as_tensor(np.asarray(store.labels), dtype=torch.int64)
    errors = topk_errors(preds, labels, ks=(1, 5))
    n = len(store)
    num_store = len(store.classes)
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
        "precision": precision,
        "seconds": seconds,
        "images_per_s": n / seconds if seconds > 0 else None,
        "predictions": os.path.abspath(args.predictions) if args.predictions else None,
        "errors_are": "fractions (0-1) of the images; top5 = label not among the 5 best",
    }
    if args.predictions:
        atomic_write(args.predictions, lambda f: np.save(f, preds.numpy().astype(np.int64)))
    if args.json:
        atomic_write_json(args.json, result)
    print(f"{args.split}: top-1 error {100 * result['top1_error']:.2f} %, top-5 error "
          f"{100 * result['top5_error']:.2f} % over {n} images, {args.views} view(s), "
          f"{len(models)} net(s)" + (f" -> {args.json}" if args.json else ""))
    return result


def main(args):
    """Evaluate; print the errors; write --json (and --predictions) when given; return the result dict.

    A bad flag, store or checkpoint is a UsageError (exit status 2) with prepare's message.
    """
    return score(args, *checked(prepare, args))


def cli(argv=None):
    """The command: parse the flags and evaluate."""
    return main(get_args_parser().parse_args(argv))


if __name__ == "__main__":
    run(PROG, cli)

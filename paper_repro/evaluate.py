"""python -m paper_repro.evaluate: the paper's test (ten views, softmax averaged; ensembles of nets)."""
import argparse
import os
import time

import numpy as np
import torch

from paper_repro.core.atomic import atomic_write, atomic_write_json
from paper_repro.core.cli import UsageError, checked, leave, run
from paper_repro.core.devices import choose_devices, help_text, set_precision_policy
from paper_repro.core.metrics import topk_errors, topk_predictions
from paper_repro.core.numbering import checkpoint_counts, position
from paper_repro.data.loader import default_workers
from paper_repro.data.store import dataset_identity, load_stats
from paper_repro.evaluation.scoring import evaluate, open_store, views_of
from paper_repro.nets.checkpoint import load_model
from paper_repro.training.host_memory import keep_freed_memory

PROG = "python -m paper_repro.evaluate"


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
    p.add_argument("--gpus", default=None, help=help_text("cpu"))
    p.add_argument("--views", type=int, default=None, choices=(10, 1),
                   help="10: the paper's ten patches; 1: the centre patch only (default: each net's own test: "
                   "the ten patches; a CIFAR-10 net's data path: cuda-convnet's ten views, or the whole image)")
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
    """Check the flags, open the store, load the nets: (devices, precision policy, store, models, mean image).

    The data before the devices: a missing store is the first thing to fix. The first line printed says
    which devices, and why those.
    """
    check_args(args)
    store = open_store(args.data, args.split)
    devices, chosen = choose_devices(args.gpus, "cpu")
    models = [load_model(c, devices, args.input_size) for c in args.checkpoint]
    # the views each net is tested with: --views, or its own (the paper's ten; a CIFAR-10 net's data path says)
    counts = sorted({views_of(m.config(), args.views) for m in models})
    views = "/".join(map(str, counts))
    print(f"evaluate: {len(store)} {args.split} images of {len(store.classes)} classes from {args.data}, "
          f"{views} view{'s' if views != '1' else ''}, {len(args.checkpoint)} net"
          f"{'s' if len(args.checkpoint) != 1 else ''} | devices {', '.join(devices)} ({chosen})", flush=True)
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
    # The tensors of a CPU forward come and go in blocks of megabytes: without this, each is fresh
    # pages from the kernel (the ten-view test 1.6x slower at width 0.25; results/benchmarks.md).
    host_memory = keep_freed_memory(devices)
    t0 = time.time()
    probs = evaluate(models, store, mean_image, args.views, args.batch_size, args.workers, args.bf16,
                     progress=not args.no_progress, decode=args.decode)
    seconds = time.time() - t0
    preds = topk_predictions(probs, k=5)
    labels = torch.as_tensor(np.asarray(store.labels), dtype=torch.int64)
    errors = topk_errors(preds, labels, ks=(1, 5))
    counts = sorted({views_of(m.config(), args.views) for m in models})
    views = counts[0] if len(counts) == 1 else counts
    n = len(store)
    num_store = len(store.classes)
    result = {
        "top1_error": errors[1] / n,
        "top5_error": errors[5] / n,
        "top1_wrong": errors[1],
        "top5_wrong": errors[5],
        "images": n,
        "views": views,
        "split": args.split,
        "checkpoints": [checkpoint_entry(m.checkpoint_info) for m in models],
        "model_configs": [m.config() for m in models],
        "data": os.path.abspath(args.data),
        "store_classes": num_store,
        "dataset": dataset_identity(args.data, num_store)["name"],
        "devices": list(devices),
        "bf16": bool(args.bf16),
        "precision": precision,
        "host_memory": host_memory,
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
          f"{100 * result['top5_error']:.2f} % over {n} images, {views} view(s), "
          f"{len(models)} net(s)" + (f" -> {args.json}" if args.json else ""))
    return result


def checkpoint_entry(info):
    """A net's checkpoint in the JSON: what load_model read (path, recipe, ...), for a training checkpoint its
    place as epochs and steps done (core/numbering.py) instead of the file's own counters."""
    entry = {k: v for k, v in info.items() if k not in ("epoch", "step", "steps_before")}
    if "epoch" in info:  # a training checkpoint (a bare state_dict records neither)
        entry.update(checkpoint_counts(info))
        entry["position"] = position(info["epoch"], info.get("step") or 0)
    return entry


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
    leave()

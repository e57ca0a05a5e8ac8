"""bench loader: the training input pipeline on a JPEG and a raw store against ImageFolder + RandomCrop + flip.

Every pipeline runs in the same process and the same run, in alternating rounds (a machine whose
speed drifts slows all alike): our BatchLoader + TrainPatch on each store given (a raw store read in
this process, and once more in `--workers` worker processes, to show whether they pay), and
torchvision's ImageFolder over the same 256x256 JPEGs with the same workers. Then each stage's cost
per image, one thread (loader_parts.py): where each pipeline's time goes.
"""
import os
import statistics

import torch
import torchvision
from torchvision import transforms

from paper_repro.bench.common import devices_or_usage_error, export_jpegs, machine_info, scratch_folder, time_batches
from paper_repro.bench.loader_parts import where_time_goes
from paper_repro.core import cli
from paper_repro.data.augment import TrainPatch, batch_generator
from paper_repro.data.loader import BatchLoader, epoch_order
from paper_repro.data.store import ImageNetStore, load_stats
from paper_repro.training.host_memory import keep_freed_memory

WHAT = {
    "jpeg_store": "BatchLoader over the JPEG store (decode in workers) + TrainPatch: crop, flip, PCA colour noise, "
                  "mean image",
    "raw_store": "BatchLoader over the raw store, in this process (runs of rows of the shards read into "
                 "one batch, no decoding) + TrainPatch",
    "raw_store_in_workers": "the same, the batches gathered in the worker processes (BatchLoader raw_workers)",
    "imagefolder_baseline": "ImageFolder over the same 256x256 JPEGs + RandomCrop(224) + RandomHorizontalFlip + "
                            "ToTensor, DataLoader, same workers",
}


def _ours(store, args, dev, raw_workers=0):
    """(batches, make_input) of our pipeline on `store`: BatchLoader, then TrainPatch on the device."""
    stats = load_stats(store.root)
    loader = BatchLoader(store, epoch_order(len(store), 0, 0), args.batch_size, workers=args.workers,
                         pin_memory=dev.type == "cuda", drop_last=True, raw_workers=raw_workers)
    # as the training command: every thread cuts the patches where no worker process runs beside them
    patch = TrainPatch(stats["mean_image"], stats["pca_eigval"], stats["pca_eigvec"], all_threads=loader.workers == 0)
    step = [0]

    def make_input(batch):
        images, labels = batch
        step[0] += 1
        x = patch(images.to(dev, non_blocking=True), batch_generator(0, 0, step[0]))
        labels.to(dev, non_blocking=True)
        return x

    return loader, make_input, patch


def _theirs(folder, args, dev):
    """(batches, make_input) of the baseline: ImageFolder + RandomCrop + flip + ToTensor in a DataLoader."""
    dataset = torchvision.datasets.ImageFolder(folder, transform=transforms.Compose([
        transforms.RandomCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor()]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                         num_workers=args.workers, pin_memory=dev.type == "cuda", drop_last=True,
                                         persistent_workers=args.workers > 0)

    def make_input(batch):
        images, labels = batch
        labels.to(dev, non_blocking=True)
        return images.to(dev, non_blocking=True)

    return loader, make_input


def _open_stores(paths):
    stores = [ImageNetStore(p, "train") for p in paths]
    formats = [s.store_format for s in stores]
    if len(set(formats)) != len(formats):
        raise cli.UsageError(f"bench loader: give at most one store of each format (got {', '.join(formats)} "
                             f"from {', '.join(paths)})")
    if len({len(s) for s in stores}) > 1:
        raise cli.UsageError("bench loader: the stores hold different images (" +
                             ", ".join(f"{p}: {len(s)}" for p, s in zip(paths, stores)) +
                             "); build them from the same source")
    return stores


def bench_loader(args):
    """Our input pipeline on each store vs ImageFolder + RandomCrop + flip, in rounds; then where the time goes."""
    devices = devices_or_usage_error(args.gpus)
    dev = torch.device(devices[0])
    # Process-wide, as in a CPU training run (the workers fork with it): without it every 77 MB batch of
    # patches is a fresh mmap whose pages fault in one by one, which doubled TrainPatch's CPU time here.
    host_memory = keep_freed_memory(devices, args.keep_freed_memory)
    stores = _open_stores([args.data, *(args.compare or [])])
    jpeg_first = sorted(stores, key=lambda s: s.store_format != "jpeg")[0]  # the baseline reads real store bytes
    pipelines, patches = {}, []
    for store in stores:
        if store.store_format == "raw":
            *pipelines["raw_store"], patch = _ours(store, args, dev)
            if args.workers > 0:
                *pipelines["raw_store_in_workers"], _ = _ours(store, args, dev, raw_workers=args.workers)
        else:
            *pipelines["jpeg_store"], patch = _ours(store, args, dev)
        patches.append(patch)
    rounds = {name: [] for name in [*pipelines, "imagefolder_baseline"]}
    load_before = os.getloadavg()
    with scratch_folder(args.tmp) as tmp:
        paths = export_jpegs(jpeg_first, os.path.join(tmp, "train"))
        pipelines["imagefolder_baseline"] = _theirs(os.path.join(tmp, "train"), args, dev)
        for _ in range(args.rounds):
            for name, (batches, make_input) in pipelines.items():
                n, s = time_batches(batches, make_input, devices, args.seconds, args.warmup)
                rounds[name].append(n / s)
        pipelines.clear()  # the workers end here, before the breakdown runs alone
        parts = where_time_goes(stores, patches, paths, args.batch_size, args.parts_images) \
            if args.parts_images else None
    result = {"stage": "loader", "batch_size": args.batch_size, "workers": args.workers,
              "store_images": len(stores[0]), "stores": {s.store_format: s.root for s in stores},
              "seconds_per_round": args.seconds, "rounds": args.rounds, "machine": machine_info(devices),
              "host_memory": host_memory,
              "load_average_1_5_15_min": {"before": list(load_before), "after": list(os.getloadavg())}}
    for name, per_round in rounds.items():
        result[name] = {"images_per_s": statistics.median(per_round), "images_per_s_per_round": per_round,
                        "what": WHAT[name]}
    base = result["imagefolder_baseline"]["images_per_s"]
    result["speedup"] = {name: result[name]["images_per_s"] / base for name in rounds if name != "imagefolder_baseline"}
    if parts is not None:
        result["cpu_ms_per_image_one_thread"] = parts
    return result

"""bench loader: the training input pipeline against ImageFolder + RandomCrop + flip, same workers."""
import os
import tempfile

import torch
import torchvision
from torchvision import transforms

from paper_repro.bench.common import devices_or_usage_error, export_image_folder, machine_info, time_batches
from paper_repro.data.augment import TrainPatch, batch_generator
from paper_repro.data.loader import BatchLoader, epoch_order
from paper_repro.data.store import ImageNetStore, load_stats


def bench_loader(args):
    """The training input pipeline (decode, crop, flip, colour noise, mean) vs ImageFolder + RandomCrop."""
    devices = devices_or_usage_error(args.gpus)
    dev = torch.device(devices[0])
    store = ImageNetStore(args.data, "train")
    stats = load_stats(args.data)
    patch = TrainPatch(stats["mean_image"], stats["pca_eigval"], stats["pca_eigvec"])
    pin = dev.type == "cuda"
    loader = BatchLoader(store, epoch_order(len(store), 0, 0), args.batch_size, workers=args.workers,
                         pin_memory=pin, drop_last=True)
    step = [0]

    def ours(batch):
        images, labels = batch
        step[0] += 1
        x = patch(images.to(dev, non_blocking=True), batch_generator(0, 0, step[0]))
        labels.to(dev, non_blocking=True)
        return x

    n_ours, s_ours = time_batches(loader, ours, devices, args.seconds, args.warmup)
    del loader
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = export_image_folder(store, os.path.join(tmp, "train"))
        dataset = torchvision.datasets.ImageFolder(folder, transform=transforms.Compose([
            transforms.RandomCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor()]))
        baseline = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                               num_workers=args.workers, pin_memory=pin, drop_last=True,
                                               persistent_workers=args.workers > 0)

        def theirs(batch):
            images, labels = batch
            labels.to(dev, non_blocking=True)
            return images.to(dev, non_blocking=True)

        n_base, s_base = time_batches(baseline, theirs, devices, args.seconds, args.warmup)
    result = {"stage": "loader", "batch_size": args.batch_size, "workers": args.workers,
              "store_images": len(store), "machine": machine_info(devices),
              "ours": {"images_per_s": n_ours / s_ours, "images": n_ours, "seconds": s_ours,
                       "what": "BatchLoader (decode in workers) + TrainPatch on the device: crop, flip, "
                               "PCA colour noise, mean image"},
              "imagefolder_baseline": {"images_per_s": n_base / s_base, "images": n_base, "seconds": s_base,
                                       "what": "ImageFolder over the same 256x256 JPEGs + RandomCrop(224) + "
                                               "RandomHorizontalFlip + ToTensor, DataLoader, same workers"}}
    result["speedup"] = result["ours"]["images_per_s"] / result["imagefolder_baseline"]["images_per_s"]
    return result

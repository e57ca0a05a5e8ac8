"""bench eval: the ten-view test against ImageFolder + TenCrop, same net and device."""
import os
import time

import numpy as np
import torch
import torchvision
from torchvision import transforms

from paper_repro.bench.common import (devices_or_usage_error, export_image_folder, machine_info, scratch_folder,
                                       synchronize)
from paper_repro.data.store import ImageNetStore, load_stats
from paper_repro.evaluation.scoring import evaluate
from paper_repro.nets.alexnet import AlexNet


class _StackCrops:
    """TenCrop's tuple of PIL crops -> a V x 3 x S x S float tensor, 0-255 scale (picklable for workers)."""

    def __call__(self, crops):
        return torch.stack([torch.from_numpy(np.asarray(c, dtype=np.float32)).permute(2, 0, 1) for c in crops])


def bench_eval(args):
    """Ten-view evaluation of the val split: ours (views cut on the device) vs ImageFolder + TenCrop."""
    devices = devices_or_usage_error(args.gpus)
    dev = torch.device(devices[0])
    store = ImageNetStore(args.data, "val")
    mean_image = load_stats(args.data)["mean_image"]
    torch.manual_seed(0)
    net = AlexNet(num_classes=len(store.classes), devices=devices, width=args.width).eval()
    warm = torch.zeros(2, 3, 224, 224, device=dev)
    with torch.inference_mode():
        net(warm)
    start = time.perf_counter()
    evaluate([net], store, mean_image, views=10, batch_size=args.batch_size, workers=args.workers,
             bf16=args.bf16, progress=False)
    synchronize(devices)
    s_ours = time.perf_counter() - start
    with scratch_folder(args.tmp) as tmp:
        folder = export_image_folder(store, os.path.join(tmp, "val"))
        dataset = torchvision.datasets.ImageFolder(folder, transform=transforms.Compose([
            transforms.TenCrop(224), _StackCrops()]))
        mean = torch.as_tensor(mean_image).permute(2, 0, 1).mean(dim=(1, 2)).view(1, 1, 3, 1, 1).to(dev)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                                             pin_memory=dev.type == "cuda")
        start = time.perf_counter()
        with torch.inference_mode():
            for crops, _ in loader:
                crops = crops.to(dev, non_blocking=True) - mean
                n, v = crops.shape[:2]
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
                    logits = net(crops.flatten(0, 1))
                torch.softmax(logits.float(), 1).view(n, v, -1).mean(1).cpu()
        synchronize(devices)
        s_base = time.perf_counter() - start
    n = len(store)
    result = {"stage": "eval", "views": 10, "images": n, "batch_size": args.batch_size, "workers": args.workers,
              "width": args.width, "bf16": args.bf16, "machine": machine_info(devices),
              "ours": {"images_per_s": n / s_ours, "seconds": s_ours,
                       "what": "paper_repro.evaluation.scoring.evaluate: decode once in workers, ten views cut on the device"},
              "tencrop_baseline": {"images_per_s": n / s_base, "seconds": s_base,
                                   "what": "ImageFolder over the same JPEGs + transforms.TenCrop(224) in workers, "
                                           "same net and device"}}
    result["speedup"] = result["ours"]["images_per_s"] / result["tencrop_baseline"]["images_per_s"]
    return result

"""bench loader's breakdown: what each stage of the three input pipelines costs per image, one thread, one process.

CPU time (time.process_time), which other jobs on a shared machine disturb less than wall time; each
stage is timed alone, on the same images, in the order the pipeline runs it, with the output of
the stage before (so a stage's cost includes its memory traffic but no other stage's):
  jpeg store   read (pread of the JPEG bytes), decode (libjpeg-turbo, store.decode_image), collate (the
               worker's stack into one planar batch in shared memory), augment (TrainPatch, main process)
  raw store    gather (store.read_batch: runs of rows of the shards read into one batch), augment
  ImageFolder  open + decode (PIL, as ImageFolder's loader), crop + flip, ToTensor, collate
and, apart ("batch_layout"), what a batch's layout costs: planar (channel by channel) or H x W x 3.
"""
import io
import time

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from paper_repro.bench.common import threads
from paper_repro.data.augment import batch_generator
from paper_repro.data.store import decode_image


def _ms_per_image(fn, items, n_images, repeats):
    """Best of `repeats` CPU times of [fn(x) for x in items], in ms per image; and the last outputs."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.process_time()
        out = [fn(x) for x in items]
        best = min(best, time.process_time() - start)
    return 1e3 * best / n_images, out


def _shared_stack(tensors):
    """torch.stack into a new shared-memory tensor: what default_collate does inside a DataLoader worker."""
    out = torch.empty((len(tensors), *tensors[0].shape), dtype=tensors[0].dtype).share_memory_()
    return torch.stack(tensors, out=out)


def _batches(indices, batch_size):
    return [indices[k:k + batch_size] for k in range(0, len(indices) - batch_size + 1, batch_size)]


def jpeg_store_parts(store, patch, indices, batch_size, repeats=3):
    """ms per image of read, decode, collate and augment over a JPEG store's images `indices` (whole batches)."""
    batches = _batches(indices, batch_size)
    n = len(batches) * batch_size
    flat = [int(i) for b in batches for i in b]
    parts = {}
    parts["read"], blobs = _ms_per_image(store.read_encoded, flat, n, repeats)
    parts["decode"], images = _ms_per_image(decode_image, blobs, n, repeats)
    planar = [torch.from_numpy(im).permute(2, 0, 1) for im in images]  # as BatchLoader's CPU batches
    grouped = [planar[k:k + batch_size] for k in range(0, n, batch_size)]
    parts["collate"], stacked = _ms_per_image(_shared_stack, grouped, n, repeats)
    views = [b.permute(0, 2, 3, 1) for b in stacked]
    parts["augment"], _ = _ms_per_image(lambda b: patch(b, batch_generator(0, 0, 0)), views, n, repeats)
    return parts


def raw_store_parts(store, patch, indices, batch_size, repeats=3):
    """ms per image of gather and augment over a raw store's images `indices` (whole batches)."""
    batches = _batches(indices, batch_size)
    n = len(batches) * batch_size
    parts = {}
    parts["gather"], got = _ms_per_image(lambda b: torch.from_numpy(store.read_batch(b)), batches, n, repeats)
    parts["augment"], _ = _ms_per_image(lambda b: patch(b, batch_generator(0, 0, 0)), got, n, repeats)
    return parts


def layout_parts(store, patch, indices, batch_size, repeats=5):
    """ms per image of the two batch layouts, timed in alternation (the same machine state for both):
    collating decoded images into shared memory planar (what BatchLoader's CPU batches are) or as they are
    (H x W x 3), and TrainPatch on a planar or an H x W x 3 batch."""
    batches = _batches(indices, batch_size)
    n = len(batches) * batch_size
    images = [[torch.from_numpy(store[int(i)][0]) for i in b] for b in batches]
    hwc = [torch.stack(b) for b in images]
    planar = [b.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1) for b in hwc]
    cases = {"collate_planar": (lambda b: _shared_stack([x.permute(2, 0, 1) for x in b]), images),
             "collate_hwc": (_shared_stack, images),
             "augment_planar": (lambda b: patch(b, batch_generator(0, 0, 0)), planar),
             "augment_hwc": (lambda b: patch(b, batch_generator(0, 0, 0)), hwc)}
    best = {name: float("inf") for name in cases}
    for _ in range(repeats):
        for name, (fn, items) in cases.items():
            best[name] = min(best[name], _ms_per_image(fn, items, n, 1)[0])
    return best


def imagefolder_parts(paths, batch_size, repeats=3):
    """ms per image of PIL open + decode, RandomCrop(224) + flip, ToTensor and collate over image files `paths`."""
    n = len(paths) // batch_size * batch_size
    paths = paths[:n]
    blobs = []
    for p in paths:
        with open(p, "rb") as f:
            blobs.append(f.read())  # read once here: the page cache serves ImageFolder's reads too
    parts = {}
    parts["open_decode"], images = _ms_per_image(lambda b: Image.open(io.BytesIO(b)).convert("RGB"), blobs, n,
                                                 repeats)
    crop = transforms.Compose([transforms.RandomCrop(224), transforms.RandomHorizontalFlip()])
    parts["crop_flip"], cropped = _ms_per_image(crop, images, n, repeats)
    parts["to_tensor"], tensors = _ms_per_image(transforms.ToTensor(), cropped, n, repeats)
    grouped = [tensors[k:k + batch_size] for k in range(0, n, batch_size)]
    parts["collate"], _ = _ms_per_image(_shared_stack, grouped, n, repeats)
    return parts


def where_time_goes(stores, patches, paths, batch_size, images, seed=0):
    """{pipeline: {stage: CPU ms per image, "total": sum}} for each store (by its format) and ImageFolder, one thread.

    The same `images` images (drawn with `seed`) in every pipeline: `paths` are the JPEG files of the
    stores' images, in store order."""
    out = {}
    order = np.random.default_rng(seed).permutation(len(paths))[:images]
    with threads(1):  # as in a worker (torch.set_num_threads(1) there) and as TrainPatch's slices run
        for store, patch in zip(stores, patches):
            if store.store_format == "raw":
                out["raw_store"] = raw_store_parts(store, patch, order, batch_size)
            else:
                out["jpeg_store"] = jpeg_store_parts(store, patch, order, batch_size)
        out["imagefolder_baseline"] = imagefolder_parts([paths[i] for i in order], batch_size)
        for parts in out.values():
            parts["total"] = sum(parts.values())
        out["batch_layout"] = layout_parts(stores[0], patches[0], order, batch_size)
    return out

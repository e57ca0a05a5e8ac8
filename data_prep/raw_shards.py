"""The raw store format of build_imagenet.py: which format a build takes, and one raw shard written and verified.

A raw shard is the prepared pixels of its images, uint8 N x 3 x H x W (channel by channel: why, in
paper_repro/data/raw.py, which reads it) in one .npy file, written atomically; its index .json
(the shard's commit mark, as for a JPEG shard) also holds each image's CRC-32, since raw pixels,
unlike a JPEG, have no structure a damaged byte would break.
"""
import io
import json
import os
import tarfile
import zlib

import numpy as np

from data_prep.image_recipe import JPEG_QUALITY, JPEG_SUBSAMPLING, SIZE, SkipImage, prepare_pixels
from data_prep.shard_tasks import ClassTarShard, _Window, member_problem
from data_prep.store_stats import PixelSums
from paper_repro.core.atomic import atomic_write
from paper_repro.data.raw import RAW, raw_shard_name, store_format
from paper_repro.data.store import MANIFEST, decode_image, read_manifest

FORMATS = ("auto", RAW, "jpeg")
# auto takes raw up to this many bytes of pixels (train + val + test). Why 8 GiB: a raw store is
# read through the page cache, at random, every epoch; it must stay there on the small machines the
# format is for (8 GiB of a 16-32 GB machine), or each image becomes a random disk read that costs
# more than the JPEG decode it saves. Tiny ImageNet's 100-class subset (35,000 images, 6.4 GiB)
# and CIFAR-10 at 32x32 (0.17 GiB) are under it; full Tiny ImageNet (120,000, 22 GiB) and
# ILSVRC (1.33M, 244 GiB) are over it and stay JPEG (results/store_format.md).
RAW_LIMIT_BYTES = 8 << 30
GIB = float(1 << 30)
FORMAT_HELP = (f"raw: the prepared pixels as uint8 N x 3 x H x W arrays (.npy, read as they are; nothing to decode "
               f"when training; {SIZE * SIZE * 3 // 1024} KiB an image at {SIZE}x{SIZE}); jpeg: JPEG q{JPEG_QUALITY} "
               f"{JPEG_SUBSAMPLING} shards (several times smaller; decoded when read); auto: raw when all images' "
               f"pixels fit in {RAW_LIMIT_BYTES / GIB:.0f} GiB, so that the store stays in the page cache of a small "
               f"machine (read from disk at random, a raw image costs more than the decode it saves), else jpeg; "
               f"a store or partial build at --out keeps its format")


# ---------------------------------------------------------------------------- choosing the format

def _class_tar_count(task):
    """Regular-file members of a class tar inside the train archive (headers only: no image is read)."""
    fd = os.open(task.path, os.O_RDONLY)
    try:
        # the same window on the outer tar that task.images() reads through
        window = io.BufferedReader(_Window(fd, task.offset, task.size), 1 << 16)
        try:
            return sum(1 for m in tarfile.open(fileobj=window, mode="r:") if member_problem(m) is None)
        except tarfile.TarError:
            return 0
    finally:
        os.close(fd)


def planned_images(task):
    """How many images a shard task holds at most (before skipped files), without preparing any."""
    for attr in ("files", "members"):
        if hasattr(task, attr):
            return len(getattr(task, attr))
    if isinstance(task, ClassTarShard):
        return _class_tar_count(task)
    return sum(1 for _ in task.images())  # another kind of task: read it once


def choose_format(requested, tasks, image_size=SIZE, limit=RAW_LIMIT_BYTES):
    """(format, one line saying why): `requested` unless "auto", which takes raw when all images' pixels
    fit in `limit` bytes (counting stops as soon as they do not)."""
    if requested not in FORMATS:
        raise ValueError(f"store format must be one of {', '.join(FORMATS)}, not {requested!r}")
    if requested != "auto":
        return requested, f"format {requested} (--format {requested})"
    per_image = image_size * image_size * 3
    count = 0
    for task in tasks:
        count += planned_images(task)
        if count * per_image > limit:
            return "jpeg", (f"format jpeg (auto: more than {limit // per_image} images of {image_size}x{image_size}x3 "
                            f"would take over {limit / GIB:.0f} GiB raw)")
    return RAW, (f"format raw (auto: {count} images x {image_size}x{image_size}x3 uint8 = "
                 f"{count * per_image / GIB:.2f} GiB, under {limit / GIB:.0f} GiB)")


def recorded_format(out):
    """The format of the finished store or partial build at `out`, from its recorded settings; None if none."""
    for name in (MANIFEST, "build.json"):  # the manifest's settings, or a partial build's build.json
        path = os.path.join(out, name)
        if os.path.isfile(path):
            with open(path) as f:
                recorded = json.load(f)
            return store_format(recorded.get("settings") if name == MANIFEST else recorded)
    return None


def format_line(settings, out):
    """The build summary's line: how the images are stored, and the disk the store takes."""
    size = sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(out) for n in names)
    how = ("raw: uint8 pixel arrays, read as they are, no decoding" if store_format(settings) == RAW
           else "jpeg: encoded shards, decoded when read")
    return f"  format {how}; {size / GIB:.3f} GiB on disk"


def settings_for(settings, fmt):
    """A build's settings for `fmt`: a raw store records store_format and no encoder settings (a JPEG
    store's settings are as before the raw format existed, so older stores stay complete)."""
    if fmt != RAW:
        return dict(settings)
    out = {k: v for k, v in settings.items() if k not in ("jpeg_quality", "jpeg_subsampling", "encoding")}
    out["store_format"] = RAW
    return out


# ---------------------------------------------------------------------------- one raw shard

def prepare_raw(task, data):
    """Encoded source bytes -> the uint8 H x W x 3 pixels the store keeps (SkipImage if unusable).

    A task that stores its images its own way (a `prepare` method returning lossless encoded bytes:
    CIFAR's PNG) is decoded back to its pixels; otherwise the recipe's 256x256 pixels, before encoding.
    """
    prepare = getattr(task, "prepare", None)
    if prepare is not None:
        return np.ascontiguousarray(decode_image(prepare(data)))
    return np.array(prepare_pixels(data))  # a writable copy


def write_raw_array(path, images, shape):
    """Write the uint8 arrays `images` (each `shape`) as one N x shape .npy, atomically, without stacking them."""
    header = {"descr": "|u1", "fortran_order": False, "shape": (len(images), *shape)}

    def write(f):
        np.lib.format.write_array_header_1_0(f, header)
        for img in images:
            f.write(img.tobytes())

    atomic_write(path, write)


def process_raw_shard(task, data_path, sums_path, write_index, write_npy):
    """Prepare every image of one shard task and write its raw array, its sums (train), then its index."""
    images, names, labels, skipped, crcs = [], [], [], [], []
    sums, shape = None, None
    for name, where, label, data in task.images():
        try:
            if isinstance(data, SkipImage):
                raise data
            img = prepare_raw(task, data)
            if shape is not None and img.shape != shape:
                raise SkipImage(f"{img.shape[1]}x{img.shape[0]} pixels, not {shape[1]}x{shape[0]} as the "
                                f"shard's other images")
        except SkipImage as e:
            skipped.append({"file": where, "reason": str(e)})
            continue
        shape = img.shape
        if task.split == "train":
            if sums is None:  # sized by the images themselves: 256x256, or a native size (CIFAR's 32x32)
                sums = PixelSums(image_sum=np.zeros(shape, np.int64))
            sums.add_image(img)
        planar = np.ascontiguousarray(img.transpose(2, 0, 1))  # stored channel by channel
        images.append(planar)
        names.append(name)
        labels.append(int(label))
        crcs.append(zlib.crc32(planar.tobytes()))
    size = getattr(task, "image_size", SIZE)
    shape = shape or (size, size, 3)
    write_raw_array(data_path, images, (shape[2], shape[0], shape[1]))
    n = int(np.prod(shape))
    index = {"split": task.split, "shard": task.shard, "count": len(images), "filenames": names,
             "labels": labels, "offsets": list(range(len(images))), "lengths": [n] * len(images),
             "skipped": skipped, "crc32": crcs}
    if task.split == "train":
        sums = sums or PixelSums(image_sum=np.zeros(shape, np.int64))
        index["pixel_sum"] = sums.pixel_sum.tolist()
        index["outer_sum"] = sums.outer_sum.tolist()
        write_npy(sums_path, sums.image_sum.astype(np.uint32))  # < 2**32 for < 16.8M images a shard
    write_index(index)  # the shard's commit mark
    return task.split, task.shard, len(images), skipped


# ---------------------------------------------------------------------------- verify one raw shard

def verify_raw_job(args):
    """build_imagenet's verify job (out, split, shard, num_classes, ...) for a raw store's shard."""
    out, split, k, num_classes = args[:4]
    size = int(read_manifest(out)["settings"].get("size", SIZE))
    with open(os.path.join(out, split, "shard-%05d.json" % k)) as f:  # build_imagenet.shard_paths' index
        index = json.load(f)
    return verify_raw_shard(os.path.join(out, split, raw_shard_name(k)), index, (size, size, 3), num_classes)


def verify_raw_shard(data_path, index, image_shape, num_classes):
    """(problems, PixelSums of a train shard or None): the array's shape, each image's CRC-32, the labels.

    A damaged shard is one line: which file, how many of its images differ from the checksums
    written when it was built (the first by name), and what to do.
    """
    split = index["split"]
    try:
        a = np.load(data_path, mmap_mode="r")
    except (OSError, ValueError) as e:
        return [f"{data_path}: not a readable raw shard ({e}); rebuild the store"], None
    h, w, c = image_shape
    want = (index["count"], c, h, w)
    if a.dtype != np.uint8 or a.shape != want:
        return [f"{data_path}: holds {a.dtype} {a.shape}, the index says uint8 {want}; rebuild the store"], None
    problems = [f"{split} {name}: label {lab} out of range"
                for name, lab in zip(index["filenames"], index["labels"]) if not 0 <= lab < num_classes]
    sums = PixelSums(image_sum=np.zeros(image_shape, np.int64)) if split == "train" else None
    bad = []
    for j, (name, crc) in enumerate(zip(index["filenames"], index["crc32"])):
        planar = np.array(a[j])  # out of the read-only map
        if zlib.crc32(planar.tobytes()) != crc:
            bad.append(name)
        if sums is not None:
            sums.add_image(np.ascontiguousarray(planar.transpose(1, 2, 0)))
    if bad:
        problems.append(f"{data_path}: {len(bad)} of {index['count']} images differ from the checksums written "
                        f"when the shard was built (first: {bad[0]}); the shard is damaged: rebuild the store")
    return problems, sums

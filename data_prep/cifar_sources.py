"""Where the CIFAR-10 images are: the official python archive, or folders of 32x32 images, read as they are.

    cifar-python   DIR holds cifar-10-python.tar.gz (read in place, nothing extracted), or is (or holds)
                   its extracted cifar-10-batches-py/: data_batch_1..5, test_batch, batches.meta
                   (pickled dicts: b'data' uint8 N x 3072 = the R, G and B planes of 32x32 images
                   row by row, b'labels', b'filenames'; batches.meta: b'label_names')
    cifar-folders  DIR/train/<class>/*.png|jpg and DIR/test/<class>/*.png|jpg, 32x32 each, no DIR/val

The store keeps the native 32x32 pixels, losslessly (PNG in the shards): no rescale, no JPEG.
Splits: train (data_batch_1..5 in order, 50,000) and test (test_batch, 10,000). Labels are the
archive's own (batches.meta's label_names are alphabetical, so the folders' sorted class names give
the same numbers). The pickles are read by an unpickler that refuses every global but numpy's
array reconstruction: a pickle is code, and a source folder is not trusted.
"""
import io
import os
import pickle
import tarfile
from dataclasses import dataclass

import numpy as np
from PIL import Image

from data_prep.image_recipe import SkipImage, open_checked
from data_prep.shard_tasks import (FileShard, SourceError, SourceFile, SourcePlan, held_out_shards, list_regular_files,
                                   member_problem)

CIFAR_SIZE = 32
ARCHIVE = "cifar-10-python.tar.gz"
BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
FORMATS = ("cifar-python", "cifar-folders")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")

# The only globals a CIFAR pickle needs (numpy arrays under pickle protocols 2-5; py2's str as bytes).
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays; any other global is refused."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name} (a CIFAR batch holds only arrays)")
        if module.startswith("numpy.core."):  # numpy 2 moved numpy.core to numpy._core (the old name warns)
            module = "numpy._core." + module[len("numpy.core."):]
            try:
                return super().find_class(module, name)
            except (ImportError, AttributeError):
                module = "numpy.core." + module[len("numpy._core."):]
        return super().find_class(module, name)


def load_pickle(data, where):
    """The dict in CIFAR pickle bytes `data` (keys as str); SourceError naming `where` if it is not one."""
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # truncated files raise EOFError, UnpicklingError, ValueError ...
        raise SourceError(f"{where}: not a readable CIFAR python batch ({type(e).__name__}: {e}); "
                          f"download cifar-10-python.tar.gz again") from None
    if not isinstance(obj, dict):
        raise SourceError(f"{where}: holds a {type(obj).__name__}, not the dict of a CIFAR python batch")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


# ---------------------------------------------------------------------------- where the batches are

def batch_location(source):
    """(kind, path) of the python batches in `source`: ("tar", the .tar.gz) or ("dir", the batch folder); None."""
    if os.path.isfile(os.path.join(source, ARCHIVE)):
        return "tar", os.path.join(source, ARCHIVE)
    for folder in (source, os.path.join(source, BATCH_DIR)):
        if os.path.isfile(os.path.join(folder, META)) and os.path.isfile(os.path.join(folder, TEST_BATCH)):
            return "dir", folder
    return None


def is_cifar_python(source):
    """True when `source` holds the CIFAR-10 python archive or its extracted batches."""
    return batch_location(source) is not None


def _first_image(folder):
    """Path of the first image file (by sorted name) in the first class folder of `folder`, or None."""
    for d in sorted(e.path for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)):
        for name in sorted(os.listdir(d)):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                return os.path.join(d, name)
    return None


def is_cifar_folders(source):
    """True for DIR/train/<class>/ and DIR/test/<class>/ without DIR/val whose first image is 32x32."""
    train, test = os.path.join(source, "train"), os.path.join(source, "test")
    if not (os.path.isdir(train) and os.path.isdir(test)) or os.path.isdir(os.path.join(source, "val")):
        return False
    first = _first_image(train)
    if first is None:
        return False
    try:
        with Image.open(first) as im:
            return im.size == (CIFAR_SIZE, CIFAR_SIZE)
    except Exception:
        return False


def layout_text(source):
    """What a CIFAR-10 source folder should hold (the tail of every layout error)."""
    return "\n".join([f"expected CIFAR-10 in {source} as one of:",
                      f"  {ARCHIVE} (the official python version, read in place)",
                      f"  {BATCH_DIR}/ or its contents: {', '.join(TRAIN_BATCHES)}, {TEST_BATCH}, {META}",
                      "  train/<class>/*.png|jpg and test/<class>/*.png|jpg (32x32 images; no val/)"])


# ---------------------------------------------------------------------------- one batch = one shard

def encode_png(pixels):
    """Lossless PNG bytes of a uint8 H x W x 3 array (deterministic: a resumed build writes the same bytes)."""
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def _read_member(kind, path, name):
    """Bytes of batch file `name` from the archive or the folder."""
    if kind == "dir":
        with open(os.path.join(path, name), "rb") as f:
            return f.read()
    with tarfile.open(path, "r:gz") as tf:
        for m in tf:
            if member_problem(m) is None and m.name.replace("\\", "/").split("/")[-1] == name:
                return tf.extractfile(m).read()
    raise SourceError(f"{path} has no member {BATCH_DIR}/{name}\n{layout_text(os.path.dirname(path))}")


def batch_images(batch, where, num_classes):
    """[(index, file name or None, label, uint8 32x32x3 or SkipImage)] of one batch dict; SourceError if malformed."""
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise SourceError(f"{where}: b'data' is {what}, not a uint8 N x 3072 array (32x32x3 images)")
    if labels is None or len(labels) != len(data):
        raise SourceError(f"{where}: {len(data)} images but "
                          f"{'no b' + repr('labels') if labels is None else len(labels)} labels")
    names = batch.get("filenames")
    names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names] if names is not None \
        and len(names) == len(data) else [None] * len(data)
    pixels = data.reshape(-1, 3, CIFAR_SIZE, CIFAR_SIZE).transpose(0, 2, 3, 1)  # planes R, G, B -> H x W x 3
    out = []
    for i, (label, name) in enumerate(zip(labels, names)):
        try:
            label = int(label)
        except (TypeError, ValueError):
            label = -1
        if not 0 <= label < num_classes:
            out.append((i, name, 0, SkipImage(f"label {labels[i]!r} is not a class index 0..{num_classes - 1}")))
        else:
            out.append((i, name, label, np.ascontiguousarray(pixels[i])))
    return out


@dataclass
class CifarBatchShard:
    """One python batch file (10,000 images) of the archive or the folder, stored as PNGs in file order."""
    split: str
    shard: int
    kind: str   # "tar" or "dir"
    path: str   # the .tar.gz, or the folder of batch files
    batch: str  # data_batch_N or test_batch
    num_classes: int
    image_size: int = CIFAR_SIZE

    def images(self):
        """Yield (name, where, label, uint8 32x32x3 or SkipImage) in the batch's order."""
        where = f"{self.path}:{self.batch}" if self.kind == "tar" else os.path.join(self.path, self.batch)
        batch = load_pickle(_read_member(self.kind, self.path, self.batch), where)
        for i, name, label, pixels in batch_images(batch, where, self.num_classes):
            stored = f"{self.batch}/{i:05d}" + (f"_{name}" if name else "")
            yield stored, f"{where}[{i}]", label, pixels

    def prepare(self, pixels):
        """The store's bytes of one image: its pixels as PNG."""
        return encode_png(pixels)


def _meta_classes(kind, path):
    where = f"{path}:{META}" if kind == "tar" else os.path.join(path, META)
    meta = load_pickle(_read_member(kind, path, META), where)
    names = meta.get("label_names")
    if not names:
        raise SourceError(f"{where}: no b'label_names' (the class names)")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def plan_cifar_python(source):
    """The SourcePlan of the python batches: one shard per batch file (train 0-4, test 0)."""
    found = batch_location(source)
    if found is None:
        raise SourceError(f"no CIFAR-10 python batches in {source}\n{layout_text(source)}")
    kind, path = found
    if kind == "dir":
        missing = [n for n in TRAIN_BATCHES + (TEST_BATCH, META) if not os.path.isfile(os.path.join(path, n))]
        if missing:
            raise SourceError(f"{path} lacks {', '.join(missing)}\n{layout_text(source)}")
    classes = _meta_classes(kind, path)
    tasks = [CifarBatchShard("train", k, kind, path, b, len(classes)) for k, b in enumerate(TRAIN_BATCHES)]
    tasks.append(CifarBatchShard("test", 0, kind, path, TEST_BATCH, len(classes)))
    return SourcePlan("cifar-python", classes, list(classes), tasks, [])


# ---------------------------------------------------------------------------- folders of 32x32 images

def prepare_native(data):
    """Encoded image bytes -> PNG bytes of its 32x32 RGB pixels, unchanged (SkipImage if not 32x32 or unusable)."""
    im = open_checked(data)
    if im.size != (CIFAR_SIZE, CIFAR_SIZE):
        raise SkipImage(f"{im.size[0]}x{im.size[1]} image: a CIFAR store holds 32x32 images only")
    try:
        im.load()
        rgb = im.convert("RGB") if im.mode != "RGB" else im
    except Exception as e:
        raise SkipImage(f"truncated or corrupt image data ({type(e).__name__}: {e})")
    return encode_png(np.asarray(rgb))


@dataclass
class CifarFileShard(FileShard):
    """A shard of 32x32 image files, stored at their native size as PNG."""
    image_size: int = CIFAR_SIZE

    def prepare(self, data):
        """The store's bytes of one file: its pixels as PNG."""
        return prepare_native(data)


def _class_files(folder):
    """({class: [(name, path)]}, skipped) of DIR/<split>/<class>/*."""
    out, skipped = {}, []
    for d in sorted((e for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)), key=lambda e: e.name):
        out[d.name], sk = list_regular_files(d.path)
        skipped += sk
    return out, skipped


def plan_cifar_folders(source):
    """The SourcePlan of DIR/train/<class>/* and DIR/test/<class>/*: one train shard per class, test in chunks."""
    train, skipped = _class_files(os.path.join(source, "train"))
    if not train:
        raise SourceError(f"{source}/train has no class folders\n{layout_text(source)}")
    # CIFAR-10's own class names get CIFAR-10's label numbers, even where a class folder is missing.
    classes = list(CIFAR10_CLASSES) if set(train) <= set(CIFAR10_CLASSES) else sorted(train)
    index = {c: k for k, c in enumerate(classes)}
    test, sk = _class_files(os.path.join(source, "test"))
    skipped += sk
    unknown = sorted(set(test) - set(classes))
    if unknown:
        raise SourceError(f"{source}/test has class folders that {source}/train lacks: {', '.join(unknown[:5])}")
    # Stored names carry the class: the tutorials' folders reuse 0000.jpg ... in every class.
    tasks = [CifarFileShard("train", k, [SourceFile(f"{c}/{n}", p, index[c]) for n, p in train[c]])
             for k, c in enumerate(sorted(train))]
    files = [SourceFile(f"{c}/{n}", p, index[c]) for c in test for n, p in test[c]]
    tasks += held_out_shards("test", files, lambda split, k, chunk: CifarFileShard(split, k, chunk))
    notes = []
    jpeg = sum(n.lower().endswith((".jpg", ".jpeg")) for c in train for n, _ in train[c])
    if jpeg:
        notes.append(f"{jpeg} training images are JPEG files: the store holds their decoded pixels losslessly, "
                     f"which are not CIFAR-10's original pixels (results differ a little from the python archive's)")
    return SourcePlan("cifar-folders", classes, list(classes), tasks, skipped, notes)

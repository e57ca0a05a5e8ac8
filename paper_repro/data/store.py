"""Read the 256x256 ImageNet store written by data_prep/build_imagenet.py, and say what data set it holds.

Store layout (see results/store_format.md for why JPEG shards):
  STORE/manifest.json              written last by the build: classes, class_words, splits, counts, settings
  STORE/<split>/shard-NNNNN.bin    concatenated JPEG files (256x256 RGB); a CIFAR store: PNG files at 32x32
                                   (the size is the manifest's settings.size: ImageNetStore.image_shape)
  STORE/<split>/shard-NNNNN.npy    a raw store's shards instead (settings.store_format "raw"): uint8 arrays
                                   stored channel by channel, read with preadv (paper_repro/data/raw.py)
  STORE/<split>/index.npy          int64 [N, 4]: shard, byte offset, byte length, label (raw: row, H*W*3, label)
  STORE/<split>/filenames.txt      the source file name of each image, one per line
  STORE/stats.json, STORE/mean_image.npy   training-set statistics (load_stats)
"""
import io
import json
import os
import warnings

import numpy as np
import torch
from PIL import Image

from paper_repro.data.class_names import class_words, names_known, short_names
from paper_repro.data.raw import RAW, RawShards, empty_batch, store_format

MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")


def shard_name(k):
    """File name of data shard k of a split."""
    return "shard-%05d.bin" % k


def codecs():
    """torchvision.io, imported on first use: importing torchvision loads torch._dynamo (about 0.9 s here), which
    a raw store, read without decoding, never needs. A JPEG store imports it when opened, so that forked
    loader workers inherit it instead of each importing it again."""
    import torchvision.io
    return torchvision.io


def _decode_pil(buf):
    im = Image.open(io.BytesIO(buf))
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def _decode_jpeg(buf):
    """torchvision's libjpeg-turbo decode_jpeg: faster than PIL on 256x256 JPEGs and bit-identical
    (results/store_format.md)."""
    data = torch.frombuffer(bytearray(buf), dtype=torch.uint8)
    with warnings.catch_warnings():
        # torchvision >= 0.29 flags its codecs as deprecated (moving to torchcodec); 0.26 does not
        warnings.simplefilter("ignore", DeprecationWarning)
        io_ = codecs()
        return io_.decode_jpeg(data, mode=io_.ImageReadMode.RGB).permute(1, 2, 0).numpy()


def _decode_png(buf):
    """torchvision's libpng decode_png: half PIL's time on a 32x32 CIFAR image, the same pixels."""
    data = torch.frombuffer(bytearray(buf), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # as _decode_jpeg
        io_ = codecs()
        return io_.decode_png(data, mode=io_.ImageReadMode.RGB).permute(1, 2, 0).numpy()


def decode_image(buf):
    """Decode encoded image bytes to a uint8 HxWx3 RGB array (the decoder the store uses)."""
    if buf[:8] == b"\x89PNG\r\n\x1a\n":
        return np.ascontiguousarray(_decode_png(buf))
    if buf[:3] != b"\xff\xd8\xff":
        return _decode_pil(buf)
    return np.ascontiguousarray(_decode_jpeg(buf))


def read_manifest(root):
    """The manifest of a finished store, or a clear error saying what is wrong with `root`."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"image store {root} does not exist; build it with "
            f"`python data_prep/build_imagenet.py --source DIR --out {root}`")
    path = os.path.join(root, MANIFEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{root} is not a finished image store (no {MANIFEST}); run (or re-run, it resumes) "
            f"`python data_prep/build_imagenet.py --source DIR --out {root}`")
    with open(path) as f:
        return json.load(f)


class ImageNetStore:
    """One split of a built store: store[i] -> (uint8 [256, 256, 3] RGB (image_shape), int label)."""

    def __init__(self, root, split):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
        self.root = os.fspath(root)
        self.split = split
        manifest = read_manifest(self.root)
        splits = manifest["splits"]
        if split not in splits:
            have = ", ".join(s for s in SPLITS if s in splits) or "none"
            raise ValueError(f"image store {self.root} has no {split!r} split (it has: {have})")
        if splits[split]["count"] == 0:
            raise ValueError(f"split {split!r} of image store {self.root} is empty (0 images); "
                             f"see {os.path.join(self.root, 'skipped.json')} for skipped files")
        self.classes = list(manifest["classes"])
        size = int((manifest.get("settings") or {}).get("size", 256))
        self.image_shape = (size, size, 3)  # every image of the store: 256x256x3, or CIFAR's native 32x32x3
        self.store_format = store_format(manifest.get("settings"))  # "jpeg" or "raw"
        # The classes in words (the build's, else the shipped ILSVRC-2012 table's); None where nothing names them.
        self.class_words = _store_words(self.root, manifest)
        folder = os.path.join(self.root, split)
        index = np.load(os.path.join(folder, "index.npy"))
        self.shards = index[:, 0].copy()  # the shard number of each image
        self._offset = index[:, 1].copy()
        self.encoded_lengths = index[:, 2].copy()  # the size of each image's stored JPEG, in bytes
        self.labels = index[:, 3].astype(np.int64)
        with open(os.path.join(folder, "filenames.txt")) as f:
            self.filenames = f.read().splitlines()
        if len(self.filenames) != len(self.labels):
            raise ValueError(f"image store {self.root}/{split} is inconsistent: "
                             f"{len(self.filenames)} file names for {len(self.labels)} images")
        self._fds = {}
        self._pid = None
        self._raw = RawShards(folder, self.shards, self._offset, self.image_shape) if self.store_format == RAW else None
        if self._raw is None:
            codecs()  # before any loader worker forks (see codecs)

    def __len__(self):
        return len(self.labels)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fds"], state["_pid"] = {}, None  # file descriptors are per process
        return state

    def _fd(self, shard):
        if self._pid != os.getpid():  # forked DataLoader worker: open our own files
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
            fd = os.open(os.path.join(self.root, self.split, shard_name(shard)), os.O_RDONLY)
            self._fds[shard] = fd
        return fd

    def _checked_index(self, i):
        if not -len(self) <= i < len(self):
            raise IndexError(f"image index {i} out of range for {len(self)} images")
        return int(i) % len(self)

    def read_encoded(self, i):
        """The stored JPEG bytes of image i (a raw store has none: ValueError)."""
        i = self._checked_index(i)
        if self._raw is not None:
            raise ValueError(f"image store {self.root} is a raw store: its images are stored as pixels, "
                             f"not encoded; read them with store[i] or read_batch")
        n = int(self.encoded_lengths[i])
        buf = os.pread(self._fd(int(self.shards[i])), n, int(self._offset[i]))
        if len(buf) != n:
            raise IOError(f"image store {self.root}/{self.split}: shard {int(self.shards[i])} "
                          f"is truncated (image {i})")
        return buf

    def __getitem__(self, i):
        if self._raw is not None:
            return self._raw.image(self._checked_index(i)), int(self.labels[i])
        return decode_image(self.read_encoded(i)), int(self.labels[i])

    def read_batch(self, indices, out=None):
        """Images `indices` as one uint8 [B, H, W, 3] array (written into `out` if given): a raw store copies
        runs of rows of its shards (into a planar array, a permuted view), a JPEG store decodes image by
        image."""
        indices = np.asarray(indices, np.int64)
        if out is None:
            n = len(indices)
            out = empty_batch(n, self.image_shape) if self._raw else np.empty((n, *self.image_shape), np.uint8)
        if len(indices) and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise IndexError(f"image index out of range for {len(self)} images")
        indices = indices % len(self)
        if self._raw is not None:
            return self._raw.gather(indices, out)
        for j, i in enumerate(indices.tolist()):
            out[j] = self[i][0]
        return out

    def close(self):
        """Close the open shard files (and a raw store's memory maps) of this process."""
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds = {}
        if self._raw is not None:
            self._raw.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def check_trainable(train_store, batch_size):
    """A ValueError for a training split that cannot train a classifier: one class, or fewer images than one batch."""
    if len(train_store.classes) < 2:
        raise ValueError(f"image store {train_store.root}: its {train_store.split} split has one class "
                         f"({train_store.classes[0]}); a classifier needs at least two: rebuild the store from a "
                         f"source with a folder per class")
    if len(train_store) < batch_size:
        raise ValueError(f"image store {train_store.root}: its {train_store.split} split has {len(train_store)} "
                         f"images, fewer than one batch of {batch_size}: add images, or give --batch-size "
                         f"{len(train_store)} or less")


def load_stats(root):
    """Training-set statistics: rgb_mean [3], pca_eigval [3] (desc), pca_eigvec [3,3] (columns), mean_image."""
    root = os.fspath(root)
    read_manifest(root)
    with open(os.path.join(root, "stats.json")) as f:
        s = json.load(f)
    return {
        "rgb_mean": np.asarray(s["rgb_mean"], dtype=np.float64),
        "pca_eigval": np.asarray(s["pca_eigval"], dtype=np.float64),
        "pca_eigvec": np.asarray(s["pca_eigvec"], dtype=np.float64),
        "mean_image": np.load(os.path.join(root, "mean_image.npy")).astype(np.float32),
    }


# ----------------------------------------------------------------------------- what the store holds

ILSVRC2012_FIRST_LAST = ("n01440764", "n15075141")  # the sorted ILSVRC-2012 wnids start and end so
DEMO_FLAGS = ("demo", "generated", "synthetic")
ILSVRC_CLASSES = 1000


def _read_json(path):
    try:
        with open(path) as f:
            obj = json.load(f)
        return obj if isinstance(obj, dict) else {}
    except (OSError, ValueError):
        return {}


def store_classes(root):
    """Number of classes in STORE's manifest, or None."""
    classes = (_read_json(os.path.join(root, MANIFEST)) if root else {}).get("classes")
    return len(classes) if classes else None


def _manifest_and_settings(root):
    """STORE's manifest and build settings ({} where absent; a partial store has only build.json)."""
    manifest = _read_json(os.path.join(root, MANIFEST)) if root else {}
    settings = manifest.get("settings") or (_read_json(os.path.join(root, "build.json")) if root else {})
    return manifest, settings


def _store_words(root, manifest):
    """The words of each class of a store (data/class_names.py); None for a generated set or where none are known."""
    classes, words = manifest.get("classes") or [], manifest.get("class_words")
    words = list(words) if words and len(words) == len(classes) else None
    if is_generated(root):
        return words  # a generated set's placeholders: its ids may match real wnids by chance
    return class_words(classes, words) if names_known(classes, words) else None


def class_names(root):
    """STORE's classes in words, one short unique name per class ("beagle"), for reports and figures.

    The manifest's class_names where the build recorded them, else made from its class_words and the
    shipped ILSVRC-2012 table (stores built before it); None for a generated set, a store where nothing
    names the classes, or a folder without a manifest.
    """
    manifest = _read_json(os.path.join(root, MANIFEST)) if root else {}
    classes = manifest.get("classes") or []
    if not classes or is_generated(root):
        return None
    names = manifest.get("class_names")
    if names and len(names) == len(classes):
        return list(names)  # what the build recorded wins
    words = _store_words(root, manifest)
    return short_names(classes, words) if words is not None else None


def is_generated(root):
    """True for a store built from data_prep/make_demo_imagenet.py's generated images (never ImageNet)."""
    manifest, settings = _manifest_and_settings(root)
    return any(bool(d.get(k)) for d in (manifest, settings) for k in DEMO_FLAGS)


def dataset_identity(root, num_classes=None):
    """Return {"name", "imagenet", "year"} for STORE: "imagenet" is True only for ILSVRC-2010/2012.

    A generated set (the "demo" flag build_imagenet.py records when data_prep/make_demo_imagenet.py
    made the source) or Tiny ImageNet (settings "source_format") is named as such; ILSVRC needs 1000
    classes and, for 2012, a class list that starts and ends with the real ILSVRC-2012 wnids; any
    other store is "an image folder store of N classes".
    """
    manifest, settings = _manifest_and_settings(root)
    classes = manifest.get("classes") or []
    num_classes = len(classes) if classes else num_classes
    year = settings.get("year") if isinstance(settings.get("year"), int) else None
    not_ilsvrc = {"imagenet": False, "year": None}
    if is_generated(root):
        return {"name": f"a generated demo data set ({num_classes} classes; not ImageNet)", **not_ilsvrc}
    if settings.get("source_format") == "tiny-imagenet":
        return {"name": f"Tiny ImageNet ({num_classes} classes of 64x64 photographs; not ILSVRC, the paper's data)",
                **not_ilsvrc}
    if settings.get("source_format") == "cifar-python":
        return {"name": f"CIFAR-10 ({num_classes} classes of 32x32 images, the python archive's pixels; not ILSVRC)",
                **not_ilsvrc}
    if settings.get("source_format") == "cifar-folders":
        return {"name": f"CIFAR-10 from image folders ({num_classes} classes of 32x32 images; JPEG copies differ a "
                        f"little from the original pixels; not ILSVRC)", **not_ilsvrc}
    folder = f"an image folder store of {num_classes} classes"
    if num_classes != ILSVRC_CLASSES:
        return {"name": f"{folder} (not ILSVRC: ILSVRC has {ILSVRC_CLASSES} classes)", **not_ilsvrc}
    if year == 2012 and classes and (classes[0], classes[-1]) != ILSVRC2012_FIRST_LAST:
        return {"name": f"{folder} (not ILSVRC: its classes are not ILSVRC-2012's)", **not_ilsvrc}
    if year in (2010, 2012):
        return {"name": f"ILSVRC-{year}", "imagenet": True, "year": year}
    return {"name": f"{folder} (source not recorded; not compared with the paper)", **not_ilsvrc}


"""Generate a small ILSVRC-shaped data set (official archive layout + devkit, or extracted folders).

Each class is a colour plus a stripe pattern (orientation 0/90 degrees, so a horizontal flip
keeps it; a class-specific frequency); every image gets a random phase, hue/brightness jitter,
a random distractor blob and noise, and a random size and aspect ratio (some smaller than 256,
some larger). The class signal covers the whole image, so it survives the 256 centre crop and any
224 crop or flip. A narrow AlexNet learns 10 such classes in a few CPU minutes.

python data_prep/make_demo_imagenet.py --out DIR [--classes 10 --train-per-class 100 --val-per-class 20]
"""
import argparse
import colorsys
import gzip
import io
import os
import sys
import tarfile

import numpy as np
from PIL import Image
from scipy.io import savemat

if __package__ in (None, ""):
    # `python data_prep/make_demo_imagenet.py` in a checkout that is not pip-installed: the package
    # import below needs the checkout on sys.path first (the one import allowed to follow code).
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_prep.ilsvrc_sources import ARCHIVES, DEMO_MARK  # noqa: E402
from paper_repro.core import cli  # noqa: E402
from paper_repro.core.atomic import atomic_write, atomic_write_bytes  # noqa: E402

PROG = "python data_prep/make_demo_imagenet.py"

_MTIME = 1_300_000_000  # fixed, so the archives are byte-identical for a given seed


def class_params(c):
    """The (rgb colour in 0..1, stripe orientation, stripe period in px) that define class c."""
    hue = (c * 0.61803398875) % 1.0
    value = 0.95 if (c // 7) % 2 == 0 else 0.7
    rgb = colorsys.hsv_to_rgb(hue, 0.85, value)
    orientation = c % 2  # 0: vertical stripes, 1: horizontal; both survive a horizontal flip
    period = (14, 24, 40)[(c // 2) % 3]
    return np.array(rgb), orientation, period


def render_image(c, rng):
    """A uint8 HxWx3 image of class c with random size, phase, jitter, distractor and noise."""
    short = int(rng.integers(160, 420))
    aspect = float(rng.uniform(1.0, 1.8))
    long_ = int(short * aspect)
    h, w = (short, long_) if rng.random() < 0.7 else (long_, short)
    rgb, orientation, period = class_params(c)
    colour = np.clip(rgb * rng.uniform(0.8, 1.15) + rng.normal(0, 0.04, 3), 0, 1)
    # stripe period relative to the final 256 crop, so the frequency seen by the net is stable
    period_px = period * short / 256.0 * rng.uniform(0.9, 1.1)
    coord = np.arange(w if orientation == 0 else h, dtype=np.float32)
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * coord / period_px + rng.uniform(0, 2 * np.pi))
    wave = wave[None, :] if orientation == 0 else wave[:, None]
    shade = 0.45 + 0.55 * np.broadcast_to(wave, (h, w))
    img = shade[..., None] * colour[None, None, :]
    # distractor: a random-coloured disc at a random place
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    r = rng.uniform(0.08, 0.25) * short
    yy, xx = np.ogrid[:h, :w]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    img[disc] = rng.uniform(0, 1, 3)
    img = img + rng.normal(0, 0.05, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _jpeg(arr, rng):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=int(rng.integers(80, 96)))
    return buf.getvalue()


def _random_wnids(n, rng):
    nums = rng.choice(np.arange(1_000_000, 15_000_000), size=n, replace=False)
    return ["n%08d" % x for x in nums]


def _add_members(fileobj, members):
    """Write a tar of [(name, bytes)] to fileobj, with fixed times and modes (the same bytes every time)."""
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = _MTIME
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))


def _tar_bytes(members):
    """The bytes of a tar of [(name, bytes)]."""
    buf = io.BytesIO()
    _add_members(buf, members)
    return buf.getvalue()


def _write_tar(path, members):
    """Write a tar of [(name, bytes)] to `path` atomically."""
    atomic_write(path, lambda f: _add_members(f, members))


def make_meta_mat(path_or_file, wnids, ids, year=2012, extra_parents=3):
    """Write a devkit meta.mat: struct array 'synsets' like the real one (leaves have num_children 0)."""
    id_field = ARCHIVES[year]["id_field"]
    fields = [id_field, "WNID", "words", "gloss", "num_children", "children",
              "wordnet_height", "num_train_images"]
    n = len(wnids)
    rows = []
    for wnid, i in sorted(zip(wnids, ids), key=lambda t: t[1]):
        rows.append((np.array([[i]], dtype=np.uint16), wnid, "words of " + wnid, "gloss of " + wnid,
                     np.array([[0]], dtype=np.uint16), np.zeros((1, 0), dtype=np.uint16),
                     np.array([[0]], dtype=np.uint16), np.array([[100]], dtype=np.uint16)))
    # a few non-leaf synsets after the leaves, as in the real devkit (IDs > number of classes)
    for k in range(extra_parents):
        children = np.array([list(range(1 + k % n, n + 1, extra_parents))], dtype=np.uint16)
        rows.append((np.array([[n + 1 + k]], dtype=np.uint16), "n%08d" % (90_000_000 + k),
                     "parent %d" % k, "a parent synset", np.array([[children.size]], dtype=np.uint16),
                     children, np.array([[1]], dtype=np.uint16), np.array([[0]], dtype=np.uint16)))
    arr = np.empty((len(rows), 1), dtype=[(f, "O") for f in fields])
    for r, row in enumerate(rows):
        for f, v in zip(fields, row):
            arr[r, 0][f] = v
    savemat(path_or_file, {"synsets": arr})


def make_demo_imagenet(out_dir, num_classes=10, train_per_class=100, val_per_class=20, seed=0,
                       layout="archives", year=2012, test_per_class=None):
    """Write a demo data set to out_dir in the official archive layout (or 'folders'); returns out_dir."""
    if layout not in ("archives", "folders"):
        raise ValueError(f"layout must be 'archives' or 'folders', not {layout!r}")
    if year not in ARCHIVES:
        raise ValueError(f"year must be 2012 or 2010, not {year!r}")
    names = ARCHIVES[year]
    rng = np.random.default_rng(seed)
    wnids = _random_wnids(num_classes, rng)
    classes = sorted(wnids)
    # devkit IDs 1..n in an order unrelated to the sorted wnids (as in the real devkit)
    ids = [int(x) + 1 for x in rng.permutation(num_classes)]
    id_of = dict(zip(wnids, ids))

    train = {}  # wnid -> [(name, bytes)]
    for wnid in classes:
        c = classes.index(wnid)
        train[wnid] = []
        for k in range(train_per_class):
            train[wnid].append(("%s_%d.JPEG" % (wnid, 1000 + k), _jpeg(render_image(c, rng), rng)))

    def held_out(per_class, name_fmt):
        labels = [c for c in range(num_classes) for _ in range(per_class)]
        order = rng.permutation(len(labels))
        return [(name_fmt % (j + 1), classes[labels[o]], _jpeg(render_image(labels[o], rng), rng))
                for j, o in enumerate(order)]

    val = held_out(val_per_class, names["val_name"])
    test = []
    if year == 2010 and (test_per_class if test_per_class is not None else val_per_class):
        test = held_out(test_per_class if test_per_class is not None else val_per_class,
                        names["test_name"])

    os.makedirs(out_dir, exist_ok=True)
    # The build copies this mark into the store, so the report never calls a generated set ImageNet.
    atomic_write_bytes(os.path.join(out_dir, DEMO_MARK),
                       f"generated by data_prep/make_demo_imagenet.py ({num_classes} classes, seed {seed}); "
                       f"not ImageNet\n".encode())
    if layout == "folders":
        for split, items in (("train", [(n, w, b) for w in classes for n, b in train[w]]),
                             ("val", val), ("test", test)):
            for name, wnid, data in items:
                atomic_write_bytes(os.path.join(out_dir, split, wnid, name), data)
        return out_dir

    _write_tar(os.path.join(out_dir, names["train"]),
               [(wnid + ".tar", _tar_bytes(train[wnid])) for wnid in classes])
    _write_tar(os.path.join(out_dir, names["val"]), [(name, data) for name, _, data in val])
    if year == 2010:
        _write_tar(os.path.join(out_dir, names["test"]), [(name, data) for name, _, data in test])
    meta = io.BytesIO()
    make_meta_mat(meta, wnids, ids, year)
    val_gt = "".join("%d\n" % id_of[w] for _, w, _ in val).encode()
    devkit = _tar_bytes([(names["meta"], meta.getvalue()), (names["val_gt"], val_gt),
                         (names["devkit_dir"] + "/readme.txt", b"demo devkit\n")])
    atomic_write_bytes(os.path.join(out_dir, names["devkit"]), gzip.compress(devkit, mtime=_MTIME))
    if year == 2010 and test:
        atomic_write_bytes(os.path.join(out_dir, names["test_gt"]),
                           "".join("%d\n" % id_of[w] for _, w, _ in test).encode())
    return out_dir


def get_args_parser():
    """The command-line arguments of the generator."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", metavar="DIR", required=True, help="folder to write the data set to")
    p.add_argument("--classes", type=int, default=10, help="number of classes (default: %(default)s)")
    p.add_argument("--train-per-class", type=int, default=100,
                   help="training images per class (default: %(default)s)")
    p.add_argument("--val-per-class", type=int, default=20,
                   help="validation images per class (default: %(default)s)")
    p.add_argument("--test-per-class", type=int, default=None,
                   help="test images per class, 2010 only (default: as --val-per-class)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed: the same seed writes the same bytes (default: %(default)s)")
    p.add_argument("--layout", choices=("archives", "folders"), default="archives",
                   help="the official archives and devkit, or extracted class folders (default: %(default)s)")
    p.add_argument("--year", type=int, choices=(2012, 2010), default=2012,
                   help="whose archive names and layout to use (default: %(default)s)")
    return p


def main(args):
    """Write the data set the parsed `args` describe."""
    make_demo_imagenet(args.out, args.classes, args.train_per_class, args.val_per_class, args.seed, args.layout,
                       args.year, args.test_per_class)
    print(f"wrote a {args.classes}-class demo ILSVRC-{args.year} data set ({args.layout}) to {args.out}")


if __name__ == "__main__":
    cli.run(PROG, main, get_args_parser().parse_args())

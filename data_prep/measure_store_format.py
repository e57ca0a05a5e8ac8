"""Measure candidate on-disk formats for the 256x256 store: bytes per image, decode speed, fidelity.

python data_prep/measure_store_format.py --source DIR [--limit N] [--json OUT]

Every image of DIR goes through the store recipe (shorter side 256, centre crop, RGB); the
resulting 256x256 pixels are then encoded as raw uint8, PNG and JPEG at several qualities.
"""
import argparse
import glob
import io
import os
import platform
import sys
import time

import numpy as np
import torch
from PIL import Image

if __package__ in (None, ""):
    # `python data_prep/measure_store_format.py` in a checkout that is not pip-installed: the package
    # imports below need the checkout on sys.path first (the one import allowed to follow code).
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_prep.image_recipe import SkipImage, prepare_pixels  # noqa: E402
from paper_repro.core import cli  # noqa: E402
from paper_repro.core.atomic import print_json  # noqa: E402
from paper_repro.data.store import decode_image  # noqa: E402

PROG = "python data_prep/measure_store_format.py"

TRAIN_IMAGES = 1_281_167  # ILSVRC-2012 training set


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _timed(fn, items, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for x in items:
            fn(x)
        best = min(best, time.perf_counter() - t)
    return len(items) / best


def measure(paths):
    """Dict of per-format figures over the store images made from `paths`."""
    torch.set_num_threads(1)
    pixels = []
    for p in paths:
        with open(p, "rb") as f:
            try:
                # the reference: the recipe's pixels before any store encoding
                pixels.append(np.asarray(prepare_pixels(f.read())))
            except SkipImage:
                continue
    formats = {"raw uint8": None, "PNG (level 1)": ("PNG", {"compress_level": 1}),
               "PNG (level 6)": ("PNG", {"compress_level": 6})}
    for q in (90, 95):
        for sub in ("4:2:0", "4:4:4"):
            formats[f"JPEG q{q} {sub}"] = ("JPEG", {"quality": q, "subsampling": sub})
    out = {}
    for name, spec in formats.items():
        if spec is None:
            blobs = [a.tobytes() for a in pixels]
            dec = {"numpy frombuffer": lambda b: np.frombuffer(b, np.uint8).reshape(256, 256, 3)}
            enc_rate = None
        else:
            fmt, kw = spec

            def enc(a):
                buf = io.BytesIO()
                Image.fromarray(a).save(buf, fmt, **kw)
                return buf.getvalue()
            t = time.perf_counter()
            blobs = [enc(a) for a in pixels]
            enc_rate = len(pixels) / (time.perf_counter() - t)
            dec = {"PIL": lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))}
            if fmt == "JPEG":
                dec["torchvision decode_jpeg"] = decode_image
        sizes = np.array([len(b) for b in blobs])
        psnr = [_psnr(a, dec[next(iter(dec))](b)) for a, b in zip(pixels, blobs)]
        out[name] = {
            "bytes_per_image": float(sizes.mean()),
            "ilsvrc2012_train_GB": float(sizes.mean() * TRAIN_IMAGES / 1e9),
            "encode_images_per_s": enc_rate,
            "decode_images_per_s_1_thread": {k: _timed(fn, blobs) for k, fn in dec.items()},
            "psnr_db_mean": float(np.mean(psnr)) if np.isfinite(psnr).all() else float("inf"),
            "psnr_db_min": float(np.min(psnr)),
        }
    return {"images": len(pixels), "machine": f"{platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPU cores", "formats": out}


def get_args_parser():
    """The command-line arguments of the measurement."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", metavar="DIR", required=True, help="folder of *.JPEG source images")
    p.add_argument("--limit", metavar="N", type=int, default=None, help="use the first N images (default: all)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the figures here, atomically")
    return p


def main(args):
    """Measure the formats on the images of --source, print the JSON, and write it to --json if given."""
    paths = sorted(glob.glob(os.path.join(args.source, "*.JPEG")))[:args.limit]
    if not paths:
        raise cli.UsageError(f"--source {args.source}: no *.JPEG images directly in it")
    res = measure(paths)
    return print_json(res, args.json, indent=1)


if __name__ == "__main__":
    cli.run(PROG, main, get_args_parser().parse_args())

"""Benchmark our image prep against the script a user would write first, on the same images and cores.

python data_prep/bench_prep.py --source DIR [--workers N] [--limit N] [--repeat N] [--tmp DIR] [--json OUT]

Prints one JSON object: the stage, the machine, then the figures (the same object the former
`python -m paper_repro.bench prep` printed).

Baseline (what one writes first): PIL open, .convert("RGB"), resize the shorter side to 256 with
PIL's default filter, centre crop, save JPEG q90 one file per image, multiprocessing.Pool(N).
Ours: the build's worker code (data_prep.build_imagenet.process_shard) on the same files with
the same number of processes, once without statistics (the build's val path: the same output as
the baseline) and once with them (the train path: every stored image decoded back for the exact
mean image and RGB covariance), the latter against the baseline plus a first-try statistics pass.
Figures: wall-clock images/s (best of the repeats) and images per CPU-second of the workers (robust
when other jobs share the cores).
"""
import argparse
import glob
import io
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image

if __package__ in (None, ""):
    # `python data_prep/bench_prep.py` in a checkout that is not pip-installed: the package imports
    # below need the checkout on sys.path first (the one import allowed to follow code).
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_prep.build_imagenet import init_worker, process_shard  # noqa: E402
from data_prep.image_recipe import JPEG_QUALITY, JPEG_SUBSAMPLING  # noqa: E402
from data_prep.shard_tasks import FileShard, SourceFile  # noqa: E402
from paper_repro.core import cli  # noqa: E402
from paper_repro.core.atomic import print_json  # noqa: E402
from paper_repro.data.store import decode_image  # noqa: E402

PROG = "python data_prep/bench_prep.py"


def baseline_one(args):
    """The first-try recipe for one image: open, RGB, resize shorter side to 256, centre crop, JPEG q90."""
    src, dst = args
    t = time.process_time()
    im = Image.open(src).convert("RGB")
    w, h = im.size
    s = 256 / min(w, h)
    im = im.resize((max(256, round(w * s)), max(256, round(h * s))))
    w, h = im.size
    left, top = (w - 256) // 2, (h - 256) // 2
    im.crop((left, top, left + 256, top + 256)).save(dst, "JPEG", quality=90)
    return time.process_time() - t


def baseline_stats_chunk(paths):
    """The first-try statistics pass over saved 256x256 JPEGs: numpy float64 sums (mean image, RGB covariance)."""
    t = time.process_time()
    image_sum, pixel_sum, outer = np.zeros((256, 256, 3)), np.zeros(3), np.zeros((3, 3))
    for p in paths:
        a = np.asarray(Image.open(p).convert("RGB"), dtype=np.float64)
        x = a.reshape(-1, 3)
        image_sum += a
        pixel_sum += x.sum(0)
        outer += x.T @ x
    return time.process_time() - t


def _ours(args):
    t = time.process_time()
    count = process_shard(*args)[2]
    return count, time.process_time() - t


def _warm(_):
    init_worker()
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "JPEG")
    decode_image(buf.getvalue())  # load the JPEG decoder once per worker, outside the timing
    return os.getpid()


def find_images(source, limit=None):
    """Sorted image files (*.JPEG, *.jpg, *.jpeg, *.png) directly in `source`, the first `limit`."""
    paths = sorted(q for ext in ("*.JPEG", "*.jpg", "*.jpeg", "*.png", "*.PNG")
                   for q in glob.glob(os.path.join(source, ext)))
    if not paths:
        raise cli.UsageError(f"--source {source}: no images (*.JPEG, *.jpg, *.jpeg, *.png) directly in it; "
                             f"pass a folder of image files")
    return paths[:limit]


def bench_prep(image_paths, workers, out_dir, repeat=3):
    """Time baseline and ours on the same images with the same pool size; JSON-able figures."""
    image_paths = sorted(image_paths)
    n = len(image_paths)
    if n == 0:
        raise ValueError("bench_prep: no images given")
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench_prep_", dir=out_dir)
    # Our shards: a few per worker so the pool stays balanced (the build: one shard per class).
    n_shards = max(1, min(n, 4 * workers))
    files = [SourceFile("%08d_%s" % (i, os.path.basename(p)), p, 0) for i, p in enumerate(image_paths)]
    shards = [files[k::n_shards] for k in range(n_shards)]
    names = ("baseline", "ours", "baseline_with_stats", "ours_with_stats")
    times, cpu = {k: [] for k in names}, {k: [] for k in names}
    try:
        with multiprocessing.Pool(workers) as pool:
            pool.map(_warm, range(workers * 4))
            for r in range(repeat):
                order = ("baseline", "ours", "baseline_with_stats", "ours_with_stats")
                for name in order if r % 2 == 0 else order[::-1]:
                    dst = os.path.join(work, f"{name}_{r}")
                    # the build's val/test path (prep + shards) vs its train path (+ exact stats)
                    split = "train" if name == "ours_with_stats" else "val"
                    os.makedirs(os.path.join(dst, split))
                    t = time.perf_counter()
                    if name.startswith("baseline"):
                        saved = [os.path.join(dst, "%08d.JPEG" % i) for i in range(n)]
                        used = sum(pool.map(baseline_one, list(zip(image_paths, saved)), chunksize=8))
                        if name == "baseline_with_stats":  # then a second pass for the statistics
                            used += sum(pool.map(baseline_stats_chunk,
                                                 [saved[k::n_shards] for k in range(n_shards)]))
                    else:
                        jobs = [(FileShard(split, k, f), dst) for k, f in enumerate(shards)]
                        res = list(pool.imap_unordered(_ours, jobs))
                        done, used = sum(c for c, _ in res), sum(u for _, u in res)
                    times[name].append(time.perf_counter() - t)
                    cpu[name].append(used)
                    shutil.rmtree(dst)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {k: min(v) for k, v in times.items()}
    cpu_best = {k: min(v) for k, v in cpu.items()}
    return {
        "stage": "prep",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores visible",
        "images": n,
        "workers": workers,
        "repeats": repeat,
        # wall clock, best of the repeats, all `workers` processes busy
        "baseline_images_per_s": n / best["baseline"],
        "ours_images_per_s": n / best["ours"],
        "speedup": best["baseline"] / best["ours"],
        "baseline_with_stats_images_per_s": n / best["baseline_with_stats"],
        "ours_with_stats_images_per_s": n / best["ours_with_stats"],
        "speedup_with_stats": best["baseline_with_stats"] / best["ours_with_stats"],
        # CPU seconds the workers spent (robust when other jobs share the cores)
        "baseline_images_per_cpu_s": n / cpu_best["baseline"],
        "ours_images_per_cpu_s": n / cpu_best["ours"],
        "baseline_with_stats_images_per_cpu_s": n / cpu_best["baseline_with_stats"],
        "ours_with_stats_images_per_cpu_s": n / cpu_best["ours_with_stats"],
        "speedup_cpu": cpu_best["baseline"] / cpu_best["ours"],
        "speedup_with_stats_cpu": cpu_best["baseline_with_stats"] / cpu_best["ours_with_stats"],
        "ours_with_stats_vs_bare_baseline_cpu": cpu_best["baseline"] / cpu_best["ours_with_stats"],
        "ours_images_stored": done,
        "seconds": times,
        "cpu_seconds": cpu,
        "baseline": "PIL open+convert RGB, resize shorter side 256 (PIL default filter), centre crop, "
                    "JPEG q90 file per image, multiprocessing.Pool",
        "ours": f"process_shard (build's val path): crop box resized directly, area (BOX) when "
                f"shrinking / bicubic when enlarging, JPEG draft for >= 1024 px images, JPEG "
                f"q{JPEG_QUALITY} {JPEG_SUBSAMPLING} into shards",
        "baseline_with_stats": "the baseline, then a first-try statistics pass over its saved JPEGs "
                               "(PIL open, numpy float64 mean-image and RGB x x^T sums) in the same pool",
        "ours_with_stats": "process_shard (build's train path): the same as ours plus decoding every "
                           "stored image back and exact mean-image / RGB-covariance sums",
    }


def run(args):
    """The figures of the benchmark the parsed `args` describe, its scratch files removed."""
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        return bench_prep(find_images(args.source, args.limit), args.workers, tmp, repeat=args.repeat)


def get_args_parser():
    """The command-line arguments of the prep benchmark."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", metavar="DIR", required=True,
                   help="folder of source images (*.JPEG, *.jpg, *.jpeg, *.png directly in it)")
    p.add_argument("--workers", metavar="N", type=int, default=os.cpu_count(),
                   help="processes of the pool both sides run in (default: all cores, here %(default)s)")
    p.add_argument("--limit", metavar="N", type=int, default=None,
                   help="use at most this many images (default: all)")
    p.add_argument("--repeat", metavar="N", type=int, default=3,
                   help="interleaved repeats; the best of each is kept (default: %(default)s)")
    p.add_argument("--tmp", metavar="DIR", default=None,
                   help="where both sides write their outputs (default: the system temp folder)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the JSON here, atomically")
    return p


def main(args):
    """Run the benchmark, print its JSON, and write it to --json if given."""
    result = run(args)
    return print_json(result, args.json, indent=2)


if __name__ == "__main__":
    cli.run(PROG, main, get_args_parser().parse_args())

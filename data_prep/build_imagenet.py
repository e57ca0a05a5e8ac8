"""Build the image store (256x256 shards, raw pixels or JPEG; CIFAR-10: 32x32 PNG), the mean image and the RGB PCA.

python data_prep/build_imagenet.py --source DIR --out STORE [--format auto|raw|jpeg] [--year 2012|2010] [--workers N]
    [--verify]

DIR holds, told apart by their files (data_prep/source_layouts.py):
  the official ILSVRC archives (read in place, streaming, nothing extracted to disk),
  the extracted layout DIR/train/<wnid>/*.JPEG, DIR/val/<wnid>/*.JPEG [, DIR/test/<wnid>/*.JPEG], or
  the extracted Tiny ImageNet layout (DIR/wnids.txt, words.txt, train/<wnid>/images/, val/images/), or
  CIFAR-10: cifar-10-python.tar.gz, its extracted cifar-10-batches-py/, or DIR/train/<class>/*.png|jpg and
  DIR/test/<class>/*.png|jpg of 32x32 images (data_prep/cifar_sources.py).
Every image: shorter side rescaled to 256 (area averaging when shrinking, bicubic when enlarging,
as the authors' tool), central 256x256 crop, RGB, stored as raw pixels or JPEG (--format, below;
results/store_format.md).
CIFAR-10 keeps its native 32x32 pixels, stored losslessly as PNG; its splits are train and test.
Resumable: killed at any point, the same command finishes the job with the same bytes.
--format raw keeps the pixels (uint8 arrays, read without decoding), jpeg encodes them; auto (the default): raw
if they fit in 8 GiB, else JPEG.
"""
import argparse
import json
import multiprocessing
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

if __package__ in (None, ""):
    # `python data_prep/build_imagenet.py` in a checkout that is not pip-installed: the package
    # imports below need the checkout on sys.path first (the one import allowed to follow code).
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_prep.image_recipe import SIZE, SkipImage, encode_jpeg, prepare_image  # noqa: E402
from data_prep.raw_shards import (FORMAT_HELP, FORMATS, choose_format, process_raw_shard, recorded_format,  # noqa: E402
                                  settings_for, verify_raw_job)
from data_prep.shard_tasks import SourceError  # noqa: E402
from data_prep.source_layouts import detect_format, plan  # noqa: E402
from data_prep.store_settings import build_settings, summary_text  # noqa: E402
from data_prep.store_stats import PixelSums  # noqa: E402
from paper_repro.core import cli  # noqa: E402
from paper_repro.core.atomic import atomic_write, atomic_write_bytes, atomic_write_json  # noqa: E402
from paper_repro.data.class_names import manifest_entries  # noqa: E402
from paper_repro.data.raw import RAW, raw_shard_name, store_format  # noqa: E402
from paper_repro.data.store import (MANIFEST, SPLITS, ImageNetStore, decode_image, read_manifest,  # noqa: E402
                                    shard_name)

FORMAT = "paper_repro-imagenet-store-v1"
PROG = "python data_prep/build_imagenet.py"


# ---------------------------------------------------------------------------- one shard

def shard_paths(out, split, k):
    """(data, index json, partial sums) paths of shard k."""
    data = os.path.join(out, split, shard_name(k))  # the name ImageNetStore reads
    base = data[:-len(".bin")]
    return data, base + ".json", base + ".sums.npy"


def _write_npy(path, arr):
    atomic_write(path, lambda f: np.save(f, arr))


def init_worker():
    """Pool initializer: one torch thread per worker process."""
    torch.set_num_threads(1)  # one image at a time per process: no intra-op threads to oversubscribe


def process_shard(task, out, fmt="jpeg"):
    """Prepare every image of one shard task and write the shard (data, then sums, then index last)."""
    data_path, index_path, sums_path = shard_paths(out, task.split, task.shard)
    if fmt == RAW:
        return process_raw_shard(task, os.path.join(out, task.split, raw_shard_name(task.shard)), sums_path,
                                 lambda idx: atomic_write_bytes(index_path, json.dumps(idx, sort_keys=True).encode()),
                                 _write_npy)
    blobs, names, labels, skipped = [], [], [], []
    is_train = task.split == "train"
    # A task may store its images its own way (CIFAR: native 32x32 PNG); the default is the 256x256 JPEG recipe.
    prepare = getattr(task, "prepare", prepare_image)
    sums = PixelSums()
    for name, where, label, data in task.images():
        try:
            if isinstance(data, SkipImage):
                raise data
            jpeg = prepare(data)
        except SkipImage as e:
            skipped.append({"file": where, "reason": str(e)})
            continue
        if is_train:
            sums.add_image(decode_image(jpeg))  # statistics over the pixels as the loader will read them
        blobs.append(jpeg)
        names.append(name)
        labels.append(int(label))
    lengths = [len(b) for b in blobs]
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist() if blobs else []
    atomic_write_bytes(data_path, b"".join(blobs))
    index = {"split": task.split, "shard": task.shard, "count": len(blobs), "filenames": names,
             "labels": labels, "offsets": offsets, "lengths": lengths, "skipped": skipped}
    if is_train:
        index["pixel_sum"] = sums.pixel_sum.tolist()
        index["outer_sum"] = sums.outer_sum.tolist()
        size = getattr(task, "image_size", SIZE)
        image_sum = sums.image_sum if sums.image_sum is not None else np.zeros((size, size, 3), np.int64)
        _write_npy(sums_path, image_sum.astype(np.uint32))  # < 2**32 for < 16.8M images a shard
    atomic_write_bytes(index_path, json.dumps(index, sort_keys=True).encode())  # the shard's commit mark
    return task.split, task.shard, len(blobs), skipped


def _process_shard_star(args):
    return process_shard(*args)


def _load_shard_index(out, split, k):
    with open(shard_paths(out, split, k)[1]) as f:
        return json.load(f)


def merge_shards(out, split, shards, with_sums=False):
    """(index int64 [N, 4], file names, skipped, PixelSums or None) of a split from its shard indexes."""
    rows, names, skipped = [], [], []
    sums = PixelSums() if with_sums else None
    for k in shards:
        idx = _load_shard_index(out, split, k)
        rows += [(k, o, n, lab) for o, n, lab in zip(idx["offsets"], idx["lengths"], idx["labels"])]
        names += idx["filenames"]
        skipped += idx["skipped"]
        if with_sums:
            sums.add(PixelSums(idx["count"], idx["pixel_sum"], idx["outer_sum"],
                               np.load(shard_paths(out, split, k)[2])))
    return np.asarray(rows, np.int64).reshape(-1, 4), names, skipped, sums


# ---------------------------------------------------------------------------- whole build

def _remove_files(folders, suffix):
    for folder in folders:
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.endswith(suffix):
                    os.unlink(os.path.join(folder, name))


def _clean_temps(out):
    """Remove the temp files of writes a killed build left half done."""
    _remove_files([out] + [os.path.join(out, s) for s in SPLITS], ".tmp")


def _remove_partial_sums(out):
    """Remove the per-shard training sums once stats.json holds their total."""
    _remove_files([os.path.join(out, "train")], ".sums.npy")


def finalize(out, source_plan, settings):
    """Merge shard indexes into per-split indexes, write stats, skipped.json, then the manifest."""
    splits, skipped = {}, list(source_plan.skipped)
    train_sums = None
    for split in SPLITS:
        ks = sorted(t.shard for t in source_plan.tasks if t.split == split)
        if not ks:
            continue
        index, names, sk, sums = merge_shards(out, split, ks, with_sums=split == "train")
        skipped += sk
        train_sums = sums if split == "train" else train_sums
        _write_npy(os.path.join(out, split, "index.npy"), index)
        atomic_write_bytes(os.path.join(out, split, "filenames.txt"), "".join(n + "\n" for n in names).encode())
        splits[split] = {"count": len(index), "shards": len(ks)}
    if splits.get("train", {}).get("count") == 0:  # before any statistics: a mean over no image is no number
        # (A val or test split whose files all fail is stored empty and named by ImageNetStore when opened.)
        atomic_write_json(os.path.join(out, "skipped.json"), skipped)
        where = [sk for sk in skipped if "/train/" in sk["file"] or "_train" in sk["file"]] or skipped
        example = f", e.g. {where[0]['file']}: {where[0]['reason']}" if where else ""
        raise SourceError(f"the train split of {settings.get('source')} has no image the build could store: every "
                          f"file was skipped{example} (all in {os.path.join(out, 'skipped.json')})")
    if train_sums is not None:
        stats, mean_image = train_sums.stats()
        atomic_write_json(os.path.join(out, "stats.json"), stats)
        _write_npy(os.path.join(out, "mean_image.npy"), mean_image)
    atomic_write_json(os.path.join(out, "skipped.json"), skipped)
    # The classes in words (the shipped ILSVRC-2012 table fills in what the source lacks); a generated set's own.
    names = ({"class_words": source_plan.class_words} if settings.get("demo")
             else manifest_entries(source_plan.classes, source_plan.class_words))
    manifest = {"format": FORMAT, "classes": source_plan.classes, **names,
                "splits": splits, "settings": settings, "skipped": len(skipped), "notes": source_plan.notes}
    atomic_write_json(os.path.join(out, MANIFEST), manifest)  # last: the build is complete
    _remove_partial_sums(out)
    return manifest, skipped


def _same_settings(old, new):
    """True if a store's recorded settings match this build's (stores from before source_format count)."""
    if "source_format" not in old:
        new = {k: v for k, v in new.items() if k != "source_format"}
    return old == new


def _finished(out, settings):
    """The manifest of a finished store at `out` built with `settings`, None if not finished."""
    manifest_path = os.path.join(out, MANIFEST)
    if not os.path.isfile(manifest_path):
        return None
    with open(manifest_path) as f:
        manifest = json.load(f)
    if not _same_settings(manifest.get("settings", {}), settings):
        raise SourceError(f"{out} is a finished store built with {manifest.get('settings')}, "
                          f"not {settings}; choose another --out")
    return manifest


def _start(out, settings):
    """Record `settings` for a new build at `out`, or check a partial build's; remove stale temp files."""
    settings_path = os.path.join(out, "build.json")
    os.makedirs(out, exist_ok=True)
    if os.path.isfile(settings_path):
        with open(settings_path) as f:
            old = json.load(f)
        if not _same_settings(old, settings):
            raise SourceError(f"{out} holds a partial build with {old}, not {settings}; "
                              f"re-run with those settings or choose another --out")
    else:
        atomic_write_json(settings_path, settings)
    _clean_temps(out)


def _run_shards(pending, out, workers, bar, fmt="jpeg"):
    """Process the pending shard tasks (in a pool of `workers` processes); returns the images stored."""
    jobs = [(t, out, fmt) for t in pending]
    pool = None
    if workers == 1 or len(pending) <= 1:
        results = map(_process_shard_star, jobs)
    else:
        if any(t.split == "train" for t in pending) and fmt != RAW:
            decode_image(encode_jpeg(Image.new("RGB", (8, 8))))  # load the JPEG decoder once; forked workers share it
        pool = multiprocessing.Pool(min(workers, len(pending)), initializer=init_worker)
        results = pool.imap_unordered(_process_shard_star, jobs)
    done = 0
    try:
        for _, _, n, sk in results:
            done += n
            bar.update(1)
            bar.set_postfix(images=done, skipped=len(sk), refresh=False)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        bar.close()
    return done


def build(source, out, year=2012, workers=None, progress=True, fmt="jpeg"):
    """Build (or finish, or confirm) the store at `out` from `source` in format `fmt` (FORMATS; this function's
    default is jpeg, the command's auto: data_prep/raw_shards.py); returns the manifest."""
    source, out = os.path.abspath(source), os.path.abspath(out)
    source_format = detect_format(source, year)
    settings = build_settings(source, source_format, year)
    fmt = (recorded_format(out) or fmt) if fmt == "auto" else fmt  # auto: a store at `out` keeps its format
    manifest = _finished(out, settings_for(settings, fmt)) if fmt != "auto" else None
    if manifest is not None:
        _clean_temps(out)
        _remove_partial_sums(out)
        with open(os.path.join(out, "skipped.json")) as f:
            skipped = json.load(f)
        print(f"{out} is already complete; nothing to do")
        print(summary_text(manifest, skipped, out))
        return manifest
    source_plan = plan(source, source_format, year)
    fmt, why = choose_format(fmt, source_plan.tasks, settings.get("size", SIZE))
    settings = settings_for(settings, fmt)
    _start(out, settings)
    print(f"building {out}: {why}", flush=True)
    for split in {t.split for t in source_plan.tasks}:
        os.makedirs(os.path.join(out, split), exist_ok=True)
    tasks = source_plan.tasks
    pending = [t for t in tasks if not os.path.isfile(shard_paths(out, t.split, t.shard)[1])]
    workers = max(1, workers or os.cpu_count() or 1)
    t0 = time.time()
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(pending), unit="shard",
               desc=f"building {os.path.basename(out)}", disable=not progress)
    done = _run_shards(pending, out, workers, bar, fmt)
    manifest, skipped = finalize(out, source_plan, settings)
    dt = time.time() - t0
    print(summary_text(manifest, skipped, out))
    if pending:
        print(f"  {done} images prepared in {dt:.1f} s ({done / max(dt, 1e-9):.1f} images/s, "
              f"{workers} workers, {source_format} layout)")
    return manifest


# ---------------------------------------------------------------------------- verify

def _verify_shard(args):
    out, split, k, num_classes, image_size = args
    problems = []
    idx = _load_shard_index(out, split, k)
    data_path = shard_paths(out, split, k)[0]
    size = os.path.getsize(data_path)
    if size != sum(idx["lengths"]):
        problems.append(f"{data_path}: {size} bytes, index says {sum(idx['lengths'])}")
        return problems, None
    sums = PixelSums()
    with open(data_path, "rb") as f:
        for name, o, n, lab in zip(idx["filenames"], idx["offsets"], idx["lengths"], idx["labels"]):
            if not 0 <= lab < num_classes:
                problems.append(f"{split} {name}: label {lab} out of range")
            f.seek(o)
            try:
                img = decode_image(f.read(n))
            except Exception as e:
                problems.append(f"{split} {name}: not decodable ({e})")
                continue
            if img.shape != (image_size, image_size, 3) or img.dtype != np.uint8:
                problems.append(f"{split} {name}: shape {img.shape} {img.dtype}")
                continue
            if split == "train":
                sums.add_image(img)
    return problems, (sums if split == "train" else None)


def _verify_split(out, split, s, num_classes):
    """Problems of a split's merged index, file names and class coverage against its shard indexes."""
    problems = []
    index = np.load(os.path.join(out, split, "index.npy"))
    if len(index) != s["count"]:
        problems.append(f"{split}: index has {len(index)} images, manifest says {s['count']}")
    rows, names, _, _ = merge_shards(out, split, range(s["shards"]))
    if not np.array_equal(rows, index):
        problems.append(f"{split}: index.npy (offsets/labels) differs from the shard indexes")
    with open(os.path.join(out, split, "filenames.txt")) as f:
        if f.read().splitlines() != names:
            problems.append(f"{split}: filenames.txt differs from the shard indexes")
    if s["count"]:
        store = ImageNetStore(out, split)
        if len(store.filenames) != s["count"]:
            problems.append(f"{split}: {len(store.filenames)} file names for {s['count']} images")
        counts = np.bincount(store.labels, minlength=num_classes)
        if split == "train" and (counts == 0).any():
            problems.append(f"train: {int((counts == 0).sum())} classes have no images")
    return problems


def _verify_stats(out, sums):
    """Problems of stats.json and mean_image.npy against the sums of the stored training pixels."""
    problems = []
    stats, mean_image = sums.stats()
    with open(os.path.join(out, "stats.json")) as f:
        stored = json.load(f)
    for key in ("rgb_mean", "pca_eigval", "pca_eigvec"):
        if not np.allclose(stored[key], stats[key], rtol=1e-9, atol=1e-9):
            problems.append(f"stats.json {key} = {stored[key]}, recomputed {stats[key]}")
    if stored.get("num_images") != sums.count:
        problems.append(f"stats.json num_images {stored.get('num_images')}, images read {sums.count}")
    if not np.array_equal(np.load(os.path.join(out, "mean_image.npy")), mean_image):
        problems.append("mean_image.npy differs from the recomputed mean image")
    return problems


def verify(out, workers=None):
    """Re-read every image of the store and check counts, decodability, labels and stats; problems list."""
    manifest = read_manifest(out)
    num_classes = len(manifest["classes"])
    size = manifest["settings"].get("size", SIZE)
    problems, jobs = [], []
    for split, s in manifest["splits"].items():
        problems += _verify_split(out, split, s, num_classes)
        jobs += [(out, split, k, num_classes, size) for k in range(s["shards"])]
    workers = max(1, workers or os.cpu_count() or 1)
    check = verify_raw_job if store_format(manifest["settings"]) == RAW else _verify_shard
    if workers > 1 and len(jobs) > 1:
        with multiprocessing.Pool(min(workers, len(jobs)), initializer=init_worker) as pool:
            results = pool.map(check, jobs)
    else:
        results = list(map(check, jobs))
    total = PixelSums()
    for p, sums in results:
        problems += p
        if sums is not None:
            total.add(sums)
    if "train" in manifest["splits"]:
        problems += _verify_stats(out, total)
    return problems


# ---------------------------------------------------------------------------- command line

class HelpFormatter(cli.HelpFormatter):
    """The module docstring as written, and the default of every option that has one, once (core/cli.py)."""


def get_args_parser():
    """The command-line arguments of the build."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--source", metavar="DIR", default=None,
                   help="folder with the ILSVRC archives, the extracted train/ val/ folders, Tiny ImageNet or "
                        "CIFAR-10; symbolic links to files and to class folders are followed (a subset made with "
                        "ln -s builds like a copy); without it: only --verify STORE")
    p.add_argument("--out", metavar="STORE", required=True, help="store folder to write (or finish, or verify)")
    p.add_argument("--year", type=int, choices=(2012, 2010), default=2012,
                   help="which ILSVRC archives --source holds (not used for Tiny ImageNet)")
    p.add_argument("--workers", metavar="N", type=int, default=os.cpu_count(),
                   help="processes (default: all cores, here %(default)s)")
    p.add_argument("--verify", action="store_true",
                   help="re-read the store and check it (after building it if --source is given)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    g = p.add_argument_group("how the images are stored")
    g.add_argument("--format", choices=FORMATS, default="auto", help=FORMAT_HELP)
    return p


def main(argv=None):
    """CLI entry point; returns the exit status (0 done, 1 verify found problems, 2 bad source or store)."""
    args = get_args_parser().parse_args(argv)
    try:
        if args.source:
            build(args.source, args.out, args.year, args.workers, not args.no_progress, args.format)
        elif not args.verify:
            raise SourceError("give --source DIR to build, or --verify to check an existing store")
        if args.verify:
            problems = verify(args.out, args.workers)
            if problems:
                print(f"verify {args.out}: {len(problems)} problems")
                for p in problems:
                    print("  " + p)
                return 1
            print(f"verify {args.out}: OK")
    except (SourceError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(PROG, main))

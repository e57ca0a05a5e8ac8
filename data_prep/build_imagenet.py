"""Build the 256x256 ImageNet store (JPEG shards), the mean image and the RGB PCA from ILSVRC data.

python data_prep/build_imagenet.py --source DIR --out STORE [--year 2012|2010] [--workers N] [--verify]

DIR holds the official archives (read in place, streaming, nothing extracted to disk) or the
extracted layout DIR/train/<wnid>/*.JPEG, DIR/val/<wnid>/*.JPEG [, DIR/test/<wnid>/*.JPEG].
Every image: shorter side rescaled to 256 (area averaging when shrinking, bicubic when enlarging,
as the authors' tool), central 256x256 crop, RGB, stored as JPEG (results/store_format.md).
Resumable: killed at any point, the same command finishes the job with the same bytes.
"""
import argparse
import io
import json
import os
import sys
import time

import numpy as np
from PIL import Image

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_prep.ilsvrc_sources import (ARCHIVES, DEMO_MARK, HELD_OUT_SHARD, SourceError,  # noqa: E402,F401
                                      iter_task_images, plan)
from data_prep.image_recipe import (JPEG_QUALITY, JPEG_SUBSAMPLING, SIZE, SkipImage,  # noqa: E402,F401
                                    encode_jpeg, image_sums, prepare_image, prepare_pixels)
from paper_repro.data import MANIFEST, SPLITS, decode_image, shard_name  # noqa: E402

FORMAT = "paper_repro-imagenet-store-v1"


# ---------------------------------------------------------------------------- one shard (worker)

def _atomic_bytes(path, data):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def shard_paths(out, split, k):
    """(data, index json, partial sums) paths of shard k."""
    data = os.path.join(out, split, shard_name(k))  # the name ImageNetStore reads
    base = data[:-len(".bin")]
    return data, base + ".json", base + ".sums.npy"


def init_worker():
    """Pool initializer: one torch thread per worker process."""
    import torch

    torch.set_num_threads(1)  # one image at a time per process: no intra-op threads to oversubscribe


def process_shard(task, out, quality=JPEG_QUALITY):
    """Prepare every image of one shard and write the shard (data, then sums, then index last)."""
    split, k = task["split"], task["shard"]
    data_path, index_path, sums_path = shard_paths(out, split, k)
    blobs, names, labels, skipped = [], [], [], []
    is_train = split == "train"
    pixel_sum = np.zeros(3, np.int64)
    outer_sum = np.zeros((3, 3), np.int64)
    image_sum = np.zeros((SIZE, SIZE, 3), np.uint32) if is_train else None
    for name, where, label, data in iter_task_images(task):
        try:
            if isinstance(data, SkipImage):
                raise data
            jpeg = prepare_image(data, quality)
        except SkipImage as e:
            skipped.append({"file": where, "reason": str(e)})
            continue
        if is_train:
            img = decode_image(jpeg)  # statistics over the pixels as the loader will read them
            ps, os_ = image_sums(img)
            pixel_sum += ps
            outer_sum += os_
            image_sum += img
        blobs.append(jpeg)
        names.append(name)
        labels.append(int(label))
    lengths = [len(b) for b in blobs]
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist() if blobs else []
    _atomic_bytes(data_path, b"".join(blobs))
    index = {"split": split, "shard": k, "count": len(blobs), "filenames": names, "labels": labels,
             "offsets": offsets, "lengths": lengths, "skipped": skipped}
    if is_train:
        index["pixel_sum"] = pixel_sum.tolist()
        index["outer_sum"] = outer_sum.tolist()
        _atomic_bytes(sums_path, _npy_bytes(image_sum))
    _atomic_bytes(index_path, json.dumps(index, sort_keys=True).encode())  # the shard's commit mark
    return split, k, len(blobs), skipped


def _process_shard_star(args):
    return process_shard(*args)


# ---------------------------------------------------------------------------- whole build

def _clean_temps(out):
    for folder in [out] + [os.path.join(out, s) for s in SPLITS]:
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.endswith(".tmp"):
                    os.unlink(os.path.join(folder, name))


def _load_shard_index(out, split, k):
    with open(shard_paths(out, split, k)[1]) as f:
        return json.load(f)


def stats_from_sums(count, pixel_sum, outer_sum, image_sum):
    """stats.json content and the mean image from exact training-set sums."""
    n = float(count) * SIZE * SIZE
    mean = np.asarray(pixel_sum, np.float64) / n
    cov = np.asarray(outer_sum, np.float64) / n - np.outer(mean, mean)
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = eigval[order], eigvec[:, order]
    # sign convention: the largest-magnitude component of each eigenvector is positive
    signs = np.sign(eigvec[np.abs(eigvec).argmax(0), np.arange(3)])
    eigvec = eigvec * np.where(signs == 0, 1, signs)
    stats = {"rgb_mean": mean.tolist(), "pca_eigval": eigval.tolist(), "pca_eigvec": eigvec.tolist(),
             "rgb_cov": cov.tolist(), "num_images": int(count), "num_pixels": int(n),
             "layout": "pca_eigvec[:, j] is the eigenvector of pca_eigval[j] (columns), 0-255 scale"}
    mean_image = (np.asarray(image_sum, np.float64) / max(count, 1)).astype(np.float32)
    return stats, mean_image


def _write_json(path, obj):
    _atomic_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def finalize(out, classes, tasks, pre_skipped, settings):
    """Merge shard indexes into per-split indexes, write stats, skipped.json, then the manifest."""
    splits, skipped = {}, list(pre_skipped)
    count, pixel_sum = 0, np.zeros(3, np.int64)
    outer_sum, image_sum = np.zeros((3, 3), np.int64), np.zeros((SIZE, SIZE, 3), np.int64)
    for split in SPLITS:
        ks = sorted(t["shard"] for t in tasks if t["split"] == split)
        if not ks:
            continue
        rows, names = [], []
        for k in ks:
            idx = _load_shard_index(out, split, k)
            skipped += idx["skipped"]
            for o, n, lab in zip(idx["offsets"], idx["lengths"], idx["labels"]):
                rows.append((k, o, n, lab))
            names += idx["filenames"]
            if split == "train":
                count += idx["count"]
                pixel_sum += np.asarray(idx["pixel_sum"], np.int64)
                outer_sum += np.asarray(idx["outer_sum"], np.int64)
                image_sum += np.load(shard_paths(out, split, k)[2])
        index = np.asarray(rows, np.int64).reshape(-1, 4)
        _atomic_bytes(os.path.join(out, split, "index.npy"), _npy_bytes(index))
        _atomic_bytes(os.path.join(out, split, "filenames.txt"),
                      "".join(n + "\n" for n in names).encode())
        splits[split] = {"count": len(rows), "shards": len(ks)}
    if "train" in splits:
        stats, mean_image = stats_from_sums(count, pixel_sum, outer_sum, image_sum)
        _write_json(os.path.join(out, "stats.json"), stats)
        _atomic_bytes(os.path.join(out, "mean_image.npy"), _npy_bytes(mean_image))
    _write_json(os.path.join(out, "skipped.json"), skipped)
    manifest = {"format": FORMAT, "classes": classes, "splits": splits, "settings": settings,
                "skipped": len(skipped)}
    _write_json(os.path.join(out, MANIFEST), manifest)  # last: the build is complete
    _remove_partial_sums(out)
    return manifest, skipped


def _remove_partial_sums(out):
    folder = os.path.join(out, "train")
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.endswith(".sums.npy"):
                os.unlink(os.path.join(folder, name))


def summary_text(manifest, skipped, out):
    """The end-of-build summary: images per split, classes, skipped files with reasons."""
    lines = [f"store {out}: {len(manifest['classes'])} classes"]
    for split, s in manifest["splits"].items():
        lines.append(f"  {split}: {s['count']} images in {s['shards']} shards")
    lines.append(f"  skipped: {len(skipped)} files (list in {os.path.join(out, 'skipped.json')})")
    for s in skipped[:50]:
        lines.append(f"    {s['file']}: {s['reason']}")
    if len(skipped) > 50:
        lines.append(f"    ... and {len(skipped) - 50} more")
    return "\n".join(lines)


def build(source, out, year=2012, workers=None, quality=JPEG_QUALITY, progress=True):
    """Build (or finish, or confirm) the store at `out` from `source`; returns the manifest."""
    from tqdm import tqdm

    source, out = os.path.abspath(source), os.path.abspath(out)
    settings = {"source": source, "year": int(year), "jpeg_quality": int(quality),
                "jpeg_subsampling": JPEG_SUBSAMPLING, "size": SIZE}
    if os.path.isfile(os.path.join(source, DEMO_MARK)):
        settings["demo"] = True  # read by the report: a generated set is never called ImageNet
    manifest_path = os.path.join(out, MANIFEST)
    if os.path.isfile(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
        if manifest.get("settings") != settings:
            raise SourceError(f"{out} is a finished store built with {manifest.get('settings')}, "
                              f"not {settings}; choose another --out")
        _clean_temps(out)
        _remove_partial_sums(out)
        with open(os.path.join(out, "skipped.json")) as f:
            skipped = json.load(f)
        print(f"{out} is already complete; nothing to do")
        print(summary_text(manifest, skipped, out))
        return manifest
    classes, tasks, pre_skipped, layout = plan(source, year)
    settings_path = os.path.join(out, "build.json")
    os.makedirs(out, exist_ok=True)
    if os.path.isfile(settings_path):
        with open(settings_path) as f:
            old = json.load(f)
        if old != settings:
            raise SourceError(f"{out} holds a partial build with {old}, not {settings}; "
                              f"re-run with those settings or choose another --out")
    else:
        _write_json(settings_path, settings)
    _clean_temps(out)
    for split in {t["split"] for t in tasks}:
        os.makedirs(os.path.join(out, split), exist_ok=True)
    pending = [t for t in tasks if not os.path.isfile(shard_paths(out, t["split"], t["shard"])[1])]
    workers = max(1, workers or os.cpu_count() or 1)
    t0 = time.time()
    done_images = 0
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(pending), unit="shard",
               desc=f"building {os.path.basename(out)}", disable=not progress)
    jobs = [(t, out, quality) for t in pending]
    if workers == 1 or len(pending) <= 1:
        results = map(_process_shard_star, jobs)
        pool = None
    else:
        import multiprocessing

        if any(t["split"] == "train" for t in pending):
            decode_image(encode_jpeg(Image.new("RGB", (8, 8))))  # import torch once; forked workers share it
        pool = multiprocessing.Pool(min(workers, len(pending)), initializer=init_worker)
        results = pool.imap_unordered(_process_shard_star, jobs)
    try:
        for split, k, n, sk in results:
            done_images += n
            bar.update(1)
            bar.set_postfix(images=done_images, skipped=len(sk), refresh=False)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        bar.close()
    manifest, skipped = finalize(out, classes, tasks, pre_skipped, settings)
    dt = time.time() - t0
    print(summary_text(manifest, skipped, out))
    if pending:
        print(f"  {done_images} images prepared in {dt:.1f} s ({done_images / max(dt, 1e-9):.1f} images/s, "
              f"{workers} workers, {layout} layout)")
    return manifest


# ---------------------------------------------------------------------------- verify

def _verify_shard(args):
    out, split, k, num_classes = args
    problems = []
    idx = _load_shard_index(out, split, k)
    data_path = shard_paths(out, split, k)[0]
    size = os.path.getsize(data_path)
    if size != sum(idx["lengths"]):
        problems.append(f"{data_path}: {size} bytes, index says {sum(idx['lengths'])}")
        return problems, None
    sums = [0, np.zeros(3, np.int64), np.zeros((3, 3), np.int64), np.zeros((SIZE, SIZE, 3), np.int64)]
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
            if img.shape != (SIZE, SIZE, 3) or img.dtype != np.uint8:
                problems.append(f"{split} {name}: shape {img.shape} {img.dtype}")
                continue
            if split == "train":
                ps, os_ = image_sums(img)
                sums[0] += 1
                sums[1] += ps
                sums[2] += os_
                sums[3] += img
    return problems, (sums if split == "train" else None)


def verify(out, workers=None):
    """Re-read every image of the store and check counts, decodability, labels and stats; problems list."""
    from paper_repro.data import ImageNetStore, read_manifest

    manifest = read_manifest(out)
    problems = []
    num_classes = len(manifest["classes"])
    jobs = []
    for split, s in manifest["splits"].items():
        index = np.load(os.path.join(out, split, "index.npy"))
        if len(index) != s["count"]:
            problems.append(f"{split}: index has {len(index)} images, manifest says {s['count']}")
        rows, names = [], []
        for k in range(s["shards"]):
            idx = _load_shard_index(out, split, k)
            rows += [(k, o, n, lab) for o, n, lab in zip(idx["offsets"], idx["lengths"], idx["labels"])]
            names += idx["filenames"]
        if not np.array_equal(np.asarray(rows, np.int64).reshape(-1, 4), index):
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
        jobs += [(out, split, k, num_classes) for k in range(s["shards"])]
    workers = max(1, workers or os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 1:
        import multiprocessing

        with multiprocessing.Pool(min(workers, len(jobs)), initializer=init_worker) as pool:
            results = pool.map(_verify_shard, jobs)
    else:
        results = list(map(_verify_shard, jobs))
    total = [0, np.zeros(3, np.int64), np.zeros((3, 3), np.int64), np.zeros((SIZE, SIZE, 3), np.int64)]
    for p, sums in results:
        problems += p
        if sums is not None:
            for i in range(4):
                total[i] = total[i] + sums[i]
    if "train" in manifest["splits"]:
        stats, mean_image = stats_from_sums(*total)
        with open(os.path.join(out, "stats.json")) as f:
            stored = json.load(f)
        for key in ("rgb_mean", "pca_eigval", "pca_eigvec"):
            if not np.allclose(stored[key], stats[key], rtol=1e-9, atol=1e-9):
                problems.append(f"stats.json {key} = {stored[key]}, recomputed {stats[key]}")
        if stored.get("num_images") != total[0]:
            problems.append(f"stats.json num_images {stored.get('num_images')}, images read {total[0]}")
        if not np.array_equal(np.load(os.path.join(out, "mean_image.npy")), mean_image):
            problems.append("mean_image.npy differs from the recomputed mean image")
    return problems


def get_args_parser():
    """The command-line arguments of the build."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", help="folder with the ILSVRC archives or the extracted train/ val/ folders")
    p.add_argument("--out", required=True, help="store folder to write (or finish, or verify)")
    p.add_argument("--year", type=int, choices=(2012, 2010), default=2012)
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="processes (default: all cores)")
    p.add_argument("--verify", action="store_true",
                   help="re-read the store and check it (after building it if --source is given)")
    p.add_argument("--quality", type=int, default=JPEG_QUALITY, help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p


def main(argv=None):
    """CLI entry point; returns the exit status."""
    args = get_args_parser().parse_args(argv)
    try:
        if args.source:
            build(args.source, args.out, args.year, args.workers, args.quality, not args.no_progress)
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
    sys.exit(main())

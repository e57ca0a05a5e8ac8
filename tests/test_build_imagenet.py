"""data_prep/build_imagenet.py: layouts, labels, odd images, stats, resume, safety, errors, verify."""
import gzip
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import time
import warnings
import zlib

import numpy as np
import pytest
from conftest import ROOT, store_files
from PIL import Image
from scipy.io import loadmat

from data_prep import build_imagenet as B
from data_prep import image_recipe
from data_prep.bench_prep import bench_prep, find_images
from data_prep.make_demo_imagenet import class_params, make_demo_imagenet
from paper_repro.data.store import ImageNetStore, load_stats

SCRIPT = os.path.join(ROOT, "data_prep", "build_imagenet.py")




def _build(source, out, **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return B.build(str(source), str(out), **kw)


def _jpeg(arr, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def _two_colour(h, w, left=(200, 40, 30), right=(20, 120, 220)):
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = left
    a[:, w // 2:] = right
    return a


# ---------------------------------------------------------------------------- layouts and labels

def test_archive_and_folder_layouts_build_the_same_store(tmp_path):
    make_demo_imagenet(tmp_path / "arch", 3, 5, 3, seed=7, layout="archives")
    make_demo_imagenet(tmp_path / "fold", 3, 5, 3, seed=7, layout="folders")
    _build(tmp_path / "arch", tmp_path / "s_arch", workers=2)
    _build(tmp_path / "fold", tmp_path / "s_fold")
    a, f = store_files(tmp_path / "s_arch"), store_files(tmp_path / "s_fold")
    data_files = [k for k in a if k.endswith((".bin", ".npy", ".txt")) or k == "stats.json"]
    assert sorted(k for k in a if k in data_files) == sorted(k for k in f if k in data_files)
    assert len([k for k in data_files if k.endswith(".bin")]) == 4  # 3 train shards + 1 val
    for k in data_files:
        assert a[k] == f[k], k
    assert ImageNetStore(tmp_path / "s_arch", "val").filenames[0] == "ILSVRC2012_val_00000001.JPEG"


def test_a_generated_source_is_marked_demo_in_the_store_and_a_real_one_is_not(tmp_path):
    make_demo_imagenet(tmp_path / "src", 2, 2, 1, seed=3, layout="folders")
    _build(tmp_path / "src", tmp_path / "demo_store")
    assert json.loads((tmp_path / "demo_store" / "manifest.json").read_text())["settings"]["demo"] is True
    (tmp_path / "src" / "GENERATED_DEMO_DATASET.txt").unlink()  # now it looks like extracted ILSVRC folders
    _build(tmp_path / "src", tmp_path / "plain_store")
    assert "demo" not in json.loads((tmp_path / "plain_store" / "manifest.json").read_text())["settings"]


def test_manifest_records_the_source_format_and_the_class_words(tmp_path):
    src = make_demo_imagenet(tmp_path / "arch", 3, 2, 1, seed=9)
    with tarfile.open(os.path.join(src, "ILSVRC2012_devkit_t12.tar.gz")) as t:
        meta = loadmat(t.extractfile("ILSVRC2012_devkit_t12/data/meta.mat"), squeeze_me=True)["synsets"]
    words = {str(s["WNID"]): str(s["words"]) for s in meta if int(s["num_children"]) == 0}
    arch = _build(src, tmp_path / "s_arch")
    assert arch["settings"]["source_format"] == "ilsvrc-archives"
    assert arch["classes"] == sorted(words) and arch["class_words"] == [words[w] for w in sorted(words)]
    fold = _build(make_demo_imagenet(tmp_path / "fold", 3, 2, 1, seed=9, layout="folders"), tmp_path / "s_fold")
    assert fold["settings"]["source_format"] == "folders"
    assert fold["class_words"] == fold["classes"] == arch["classes"]
    on_disk = json.loads((tmp_path / "s_fold" / "manifest.json").read_text())
    assert on_disk["class_words"] == fold["classes"] and on_disk["settings"]["source_format"] == "folders"


def test_a_store_from_before_source_format_is_still_complete(tmp_path, capsys):
    src = make_demo_imagenet(tmp_path / "src", 2, 2, 1, seed=1)
    _build(src, tmp_path / "s")
    path = tmp_path / "s" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["settings"]["source_format"]  # as the build wrote it before it recorded the format
    path.write_text(json.dumps(manifest))
    assert B.main(["--source", str(src), "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    assert "already complete; nothing to do" in capsys.readouterr().out


def test_shuffled_devkit_ids_give_sorted_wnid_labels(tmp_path):
    src = make_demo_imagenet(tmp_path / "src", 4, 6, 5, seed=3)
    with tarfile.open(os.path.join(src, "ILSVRC2012_devkit_t12.tar.gz")) as t:
        meta = loadmat(t.extractfile("ILSVRC2012_devkit_t12/data/meta.mat"), squeeze_me=True)["synsets"]
        gt = [int(x) for x in t.extractfile(
            "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt").read().split()]
    leaves = [(int(s["ILSVRC2012_ID"]), str(s["WNID"])) for s in meta if int(s["num_children"]) == 0]
    by_id = [w for _, w in sorted(leaves)]
    assert by_id != sorted(by_id), "the devkit ID order must differ from the sorted-wnid order"
    _build(src, tmp_path / "store")
    val = ImageNetStore(tmp_path / "store", "val")
    assert val.classes == sorted(by_id)
    expected = [sorted(by_id).index(dict(leaves)[k]) for k in gt]
    assert val.labels.tolist() == expected
    # and the labels agree with the pixels: each val image is nearest to its own class colour
    hits = 0
    for i in range(len(val)):
        img, label = val[i]
        colour = img.reshape(-1, 3).mean(0) / 255
        dists = [np.linalg.norm(colour / colour.sum() - c / c.sum())
                 for c in (class_params(k)[0] for k in range(4))]
        hits += int(np.argmin(dists) == label)
    assert hits >= 0.8 * len(val)


# ---------------------------------------------------------------------------- odd images

def _png(im):
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _png_bomb(w=60000, h=60000):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))


def _jpeg_bomb(w=50000, h=50000):
    data = bytearray(_jpeg(np.zeros((16, 16, 3), np.uint8)))
    i = data.index(b"\xff\xc0")  # SOF0: length(2) precision(1) height(2) width(2)
    data[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


ODD_GOOD = {
    # name: (bytes, expected RGB at the left-centre and right-centre of the stored image)
    "cmyk.JPEG": (lambda: _jpeg_cmyk(), ((200, 40, 30), (20, 120, 220))),
    "png_named.JPEG": (lambda: _png(Image.fromarray(_two_colour(300, 400))), ((200, 40, 30), (20, 120, 220))),
    "grey.JPEG": (lambda: _jpeg(_two_colour(300, 400, (60,) * 3, (190,) * 3)[..., 0]),
                  ((60,) * 3, (190,) * 3)),
    "palette.JPEG": (lambda: _png(Image.fromarray(_two_colour(300, 400)).quantize(4)),
                     ((200, 40, 30), (20, 120, 220))),
    "rgba.JPEG": (lambda: _png(Image.fromarray(_two_colour(300, 400)).convert("RGBA")),
                  ((200, 40, 30), (20, 120, 220))),
    "greyalpha.JPEG": (lambda: _png(Image.fromarray(_two_colour(300, 400, (60,) * 3, (190,) * 3)[..., 0])
                                    .convert("LA")), ((60,) * 3, (190,) * 3)),
    "tiny.JPEG": (lambda: _jpeg(_two_colour(60, 100)), ((200, 40, 30), (20, 120, 220))),
    "portrait.JPEG": (lambda: _jpeg(_two_colour(900, 500)), ((200, 40, 30), (20, 120, 220))),
}


def _jpeg_cmyk():
    im = Image.fromarray(_two_colour(300, 400)).convert("CMYK")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    data = buf.getvalue()
    assert b"Adobe" in data  # Adobe-style (inverted) CMYK, as in the real train set
    return data


ODD_BAD = {
    "truncated.JPEG": (lambda: _jpeg(np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8))[:3000],
                       "truncated or corrupt"),
    "empty.JPEG": (lambda: b"", "empty file"),
    "text.JPEG": (lambda: b"this is not an image\n" * 10, "not a decodable image"),
    "bomb_png.JPEG": (_png_bomb, "decompression bomb"),
    "bomb_jpeg.JPEG": (_jpeg_bomb, "decompression bomb"),
}


def test_odd_images_become_correct_rgb_or_are_skipped_with_reason(tmp_path):
    src = make_demo_imagenet(tmp_path / "src", 2, 2, 1, seed=0, layout="folders")
    odd_class = sorted(os.listdir(os.path.join(src, "train")))[0]
    for name, (make, _) in {**ODD_GOOD, **ODD_BAD}.items():
        with open(os.path.join(src, "train", odd_class, name), "wb") as f:
            f.write(make())
    _build(src, tmp_path / "store")
    train = ImageNetStore(tmp_path / "store", "train")
    assert len(train) == 4 + len(ODD_GOOD)
    for name, (_, (left, right)) in ODD_GOOD.items():
        img, label = train[train.filenames.index(name)]
        assert img.shape == (256, 256, 3) and img.dtype == np.uint8 and label == 0
        np.testing.assert_allclose(img[128, 40], left, atol=6, err_msg=name)
        np.testing.assert_allclose(img[128, 215], right, atol=6, err_msg=name)
    with open(tmp_path / "store" / "skipped.json") as f:
        skipped = {os.path.basename(s["file"]): s["reason"] for s in json.load(f)}
    assert set(skipped) == set(ODD_BAD)
    for name, (_, reason) in ODD_BAD.items():
        assert reason in skipped[name], (name, skipped[name])


def test_recipe_equals_resize_then_centre_crop():
    rng = np.random.default_rng(1)
    for (h, w), resample in (((300, 512), Image.Resampling.BOX), ((200, 130), Image.Resampling.BICUBIC),
                             ((256, 400), None), ((700, 300), Image.Resampling.BOX)):
        a = rng.integers(0, 256, (h, w, 3), np.uint8)
        out = np.asarray(image_recipe.prepare_pixels(_png(Image.fromarray(a)))).astype(int)
        s = 256 / min(h, w)
        nw, nh = max(256, round(w * s)), max(256, round(h * s))
        ref = Image.fromarray(a) if resample is None else Image.fromarray(a).resize((nw, nh), resample)
        left, top = (nw - 256) // 2, (nh - 256) // 2
        ref = np.asarray(ref.crop((left, top, left + 256, top + 256))).astype(int)
        assert np.abs(out - ref).max() <= 1, (h, w)


# ---------------------------------------------------------------------------- statistics

def test_stats_equal_numpy_over_the_stored_pixels(tiny_store):
    train = ImageNetStore(tiny_store, "train")
    imgs = np.stack([train[i][0] for i in range(len(train))]).astype(np.float64)
    px = imgs.reshape(-1, 3)
    mean = px.mean(0)
    cov = np.cov(px, rowvar=False, bias=True)
    val, vec = np.linalg.eigh(cov)
    s = load_stats(tiny_store)
    np.testing.assert_allclose(s["rgb_mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(s["pca_eigval"], val[::-1], rtol=1e-9)
    assert s["pca_eigval"][0] >= s["pca_eigval"][1] >= s["pca_eigval"][2]
    for j in range(3):  # columns are the eigenvectors (sign free)
        np.testing.assert_allclose(abs(s["pca_eigvec"][:, j] @ vec[:, 2 - j]), 1, rtol=1e-9)
        np.testing.assert_allclose(cov @ s["pca_eigvec"][:, j], s["pca_eigval"][j] * s["pca_eigvec"][:, j],
                                   atol=1e-6)
    np.testing.assert_allclose(s["mean_image"], imgs.mean(0), rtol=1e-6)
    assert s["mean_image"].dtype == np.float32 and s["mean_image"].shape == (256, 256, 3)


# ---------------------------------------------------------------------------- resume, no-op

def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, SCRIPT, *args, "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, **kw)


@pytest.mark.parametrize("fmt", ["jpeg", "raw"])
def test_sigkill_mid_build_then_rerun_equals_uninterrupted_build(tmp_path, fmt):
    src = make_demo_imagenet(tmp_path / "src", 8, 10, 2, seed=5)
    ref, out = tmp_path / "ref", tmp_path / "out"
    _build(src, ref, workers=2, fmt=fmt)
    p = _cli("--source", src, "--out", str(out), "--workers", "2", "--format", fmt)
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "train" / "shard-00000.json").exists():
        time.sleep(0.002)
    os.killpg(p.pid, signal.SIGKILL)  # the whole process group: the build and its workers
    p.wait()
    assert not (out / "manifest.json").exists(), "killed too late to test resuming"
    assert p.returncode == -signal.SIGKILL
    done_before = len(list((out / "train").glob("shard-*.json")))
    q = _cli("--source", src, "--out", str(out), "--workers", "2")  # --format auto: the partial build's
    stdout, stderr = q.communicate(timeout=120)
    assert q.returncode == 0, stderr.decode()
    assert 1 <= done_before < 9
    got, want = store_files(out), store_files(ref)
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k] == want[k], k
    assert not [k for k in got if k.endswith(".tmp")]


def test_rerun_of_finished_build_is_a_quick_noop(tmp_path, capsys):
    src = make_demo_imagenet(tmp_path / "src", 2, 3, 2, seed=1)
    _build(src, tmp_path / "s")
    before = {p: os.stat(p).st_mtime_ns for p in (tmp_path / "s").rglob("*")}
    t = time.time()
    assert B.main(["--source", str(src), "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    assert time.time() - t < 2.0
    assert "already complete; nothing to do" in capsys.readouterr().out
    assert {p: os.stat(p).st_mtime_ns for p in (tmp_path / "s").rglob("*")} == before


def test_stale_temp_files_are_removed_on_start(tmp_path):
    src = make_demo_imagenet(tmp_path / "src", 2, 3, 2, seed=1)
    os.makedirs(tmp_path / "s" / "train")
    (tmp_path / "s" / "train" / "shard-00000.bin.999.tmp").write_bytes(b"junk")
    _build(src, tmp_path / "s")
    assert not list((tmp_path / "s").rglob("*.tmp"))


# ---------------------------------------------------------------------------- unsafe archives

def _tar_bytes(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(name, data=b"", kind=tarfile.REGTYPE, linkname=""):
    i = tarfile.TarInfo(name)
    i.size = len(data) if kind == tarfile.REGTYPE else 0
    i.type, i.linkname = kind, linkname
    return i


def test_unsafe_tar_members_never_escape_and_are_reported(tmp_path, monkeypatch):
    src = make_demo_imagenet(tmp_path / "src", 2, 3, 2, seed=2)
    train = os.path.join(src, "ILSVRC2012_img_train.tar")
    with tarfile.open(train) as t:
        inner = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    img = _jpeg(_two_colour(300, 300))
    evil_inner = tarfile.open(fileobj=io.BytesIO(inner[0][1]))
    members = [(m, evil_inner.extractfile(m).read()) for m in evil_inner.getmembers()]
    members += [(_info("../../escaped.JPEG", img), img), (_info("/tmp/absolute_escape.JPEG", img), img),
                (_info("link.JPEG", kind=tarfile.SYMTYPE, linkname="/etc/passwd"), None),
                (_info("dev.JPEG", kind=tarfile.CHRTYPE), None)]
    new_inner = _tar_bytes(members)
    outer = [(_info(inner[0][0].name, new_inner), new_inner), (inner[1][0], inner[1][1]),
             (_info("../evil.tar", new_inner), new_inner)]
    with open(train, "wb") as f:
        f.write(_tar_bytes(outer))
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    _build(src, tmp_path / "store")
    assert not os.path.exists("/tmp/absolute_escape.JPEG")
    for d in (tmp_path, workdir, tmp_path / "store", tmp_path.parent):
        assert not list(d.rglob("escaped.JPEG"))
    assert len(ImageNetStore(tmp_path / "store", "train")) == 6
    with open(tmp_path / "store" / "skipped.json") as f:
        reasons = {s["file"].split(":")[-1]: s["reason"] for s in json.load(f)}
    assert "unsafe path" in reasons["../../escaped.JPEG"]
    assert "unsafe path" in reasons["/tmp/absolute_escape.JPEG"]
    assert "unsafe path" in reasons["../evil.tar"]
    assert "symlink" in reasons["link.JPEG"] and "device" in reasons["dev.JPEG"]


# ---------------------------------------------------------------------------- errors

def test_missing_devkit_error_names_the_file_and_the_layout(tmp_path, capsys):
    src = make_demo_imagenet(tmp_path / "src", 2, 2, 1, seed=0)
    os.unlink(os.path.join(src, "ILSVRC2012_devkit_t12.tar.gz"))
    assert B.main(["--source", str(src), "--out", str(tmp_path / "s"), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"error: missing {src}/ILSVRC2012_devkit_t12.tar.gz\n"
        f"expected the ILSVRC-2012 archives in {src}:\n"
        f"  ILSVRC2012_img_train.tar\n"
        f"  ILSVRC2012_img_val.tar\n"
        f"  ILSVRC2012_devkit_t12.tar.gz\n"
        f"or the extracted layout {src}/train/<wnid>/*.JPEG and {src}/val/<wnid>/*.JPEG\n")


def test_wrong_year_is_a_clear_error(tmp_path, capsys):
    src = make_demo_imagenet(tmp_path / "src", 2, 2, 1, seed=0, year=2010)
    assert B.main(["--source", str(src), "--out", str(tmp_path / "s"), "--year", "2012"]) == 2
    assert capsys.readouterr().err == (
        f"error: --year 2012 but {src} holds the ILSVRC-2010 files (ILSVRC2010_images_train.tar, "
        f"ILSVRC2010_images_val.tar, ILSVRC2010_images_test.tar, ILSVRC2010_devkit-1.0.tar.gz); "
        f"pass --year 2010\n")


def test_ilsvrc2010_archives_with_test_ground_truth(tmp_path):
    make_demo_imagenet(tmp_path / "a", 3, 4, 2, seed=4, year=2010)
    make_demo_imagenet(tmp_path / "f", 3, 4, 2, seed=4, year=2010, layout="folders")
    _build(tmp_path / "a", tmp_path / "sa", year=2010)
    _build(tmp_path / "f", tmp_path / "sf", year=2010)
    for split, n in (("train", 12), ("val", 6), ("test", 6)):
        a, f = ImageNetStore(tmp_path / "sa", split), ImageNetStore(tmp_path / "sf", split)
        assert len(a) == n
        assert a.labels.tolist() == f.labels.tolist() and a.filenames == f.filenames
        assert all(np.array_equal(a[i][0], f[i][0]) for i in range(n))
    assert ImageNetStore(tmp_path / "sa", "test").filenames[0] == "ILSVRC2010_test_00000001.JPEG"


def test_ilsvrc2010_patch_images_and_gzippedstore_files(tmp_path):
    src = make_demo_imagenet(tmp_path / "a", 2, 3, 2, seed=8, year=2010)
    fixed_train, fixed_test = _jpeg(_two_colour(300, 350)), _jpeg(_two_colour(280, 300, (9, 9, 9)))
    with tarfile.open(os.path.join(src, "ILSVRC2010_images_train.tar")) as t:
        first_inner = tarfile.open(fileobj=io.BytesIO(t.extractfile(t.getmembers()[0]).read()))
        train_name = sorted(first_inner.getnames())[1]
    patch = [(_info(f"patch_images/train/{train_name}", fixed_train), fixed_train),
             (_info("patch_images/test/ILSVRC2010_test_00000002.JPEG", fixed_test), fixed_test)]
    with open(os.path.join(src, "patch_images.tar"), "wb") as f:
        f.write(_tar_bytes(patch))
    val_tar = os.path.join(src, "ILSVRC2010_images_val.tar")
    with tarfile.open(val_tar) as t:
        val = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    gz = gzip.compress(val[0][1])
    val[0] = (_info(val[0][0].name, gz), gz)
    with open(val_tar, "wb") as f:
        f.write(_tar_bytes(val))
    _build(src, tmp_path / "s", year=2010)
    train, test = ImageNetStore(tmp_path / "s", "train"), ImageNetStore(tmp_path / "s", "test")
    assert train.read_encoded(train.filenames.index(train_name)) == image_recipe.prepare_image(fixed_train)
    assert test.read_encoded(1) == image_recipe.prepare_image(fixed_test)
    assert test.read_encoded(0) != image_recipe.prepare_image(fixed_test)
    v = ImageNetStore(tmp_path / "s", "val")
    assert len(v) == 4 and v.read_encoded(0) == image_recipe.prepare_image(gzip.decompress(gz))


# ---------------------------------------------------------------------------- verify

def test_verify_reports_ok_then_detects_damage(tmp_path, capsys):
    src = make_demo_imagenet(tmp_path / "src", 2, 3, 2, seed=6)
    store = tmp_path / "s"
    assert B.main(["--source", str(src), "--out", str(store), "--verify", "--workers", "1", "--format", "jpeg",
                   "--no-progress"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"verify {store}: OK")
    stats = json.loads((store / "stats.json").read_text())
    stats["rgb_mean"][0] += 0.5
    (store / "stats.json").write_text(json.dumps(stats))
    shard = store / "train" / "shard-00001.bin"
    shard.write_bytes(shard.read_bytes()[:-100])
    assert B.main(["--out", str(store), "--verify", "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "stats.json rgb_mean" in out and "shard-00001.bin" in out and "problems" in out


# ---------------------------------------------------------------------------- benchmark

def test_bench_prep_times_both_on_the_same_images(tmp_path):
    src = make_demo_imagenet(tmp_path / "src", 1, 6, 1, seed=0, layout="folders")
    cls = os.listdir(os.path.join(src, "train"))[0]
    res = bench_prep(find_images(os.path.join(src, "train", cls)), 1, str(tmp_path / "work"), repeat=1)
    assert res["images"] == 6 and res["workers"] == 1 and res["ours_images_stored"] == 6
    assert abs(res["speedup"] - res["ours_images_per_s"] / res["baseline_images_per_s"]) < 1e-9
    json.dumps(res)
    assert os.listdir(tmp_path / "work") == []


# ---------------------------------------------------------------------------- subsets made of symbolic links

def _linked_copy(source, dest, link_class_folder=None):
    """DIR/<split>/<wnid>/* of `source` as symbolic links under `dest` (one class folder linked whole, if named)."""
    for split in ("train", "val"):
        for wnid in sorted(os.listdir(source / split)):
            if wnid == link_class_folder:
                os.makedirs(dest / split, exist_ok=True)
                os.symlink(source / split / wnid, dest / split / wnid)
                continue
            os.makedirs(dest / split / wnid)
            for name in os.listdir(source / split / wnid):
                os.symlink(source / split / wnid / name, dest / split / wnid / name)


def test_a_subset_of_symbolic_links_builds_the_store_a_copy_builds(tmp_path):
    make_demo_imagenet(tmp_path / "fold", 3, 4, 2, seed=5, layout="folders")
    wnid = sorted(os.listdir(tmp_path / "fold" / "train"))[1]
    _linked_copy(tmp_path / "fold", tmp_path / "links", link_class_folder=wnid)
    os.symlink(tmp_path / "nowhere.JPEG", tmp_path / "links" / "train" / sorted(os.listdir(
        tmp_path / "fold" / "train"))[0] / "broken.JPEG")
    _build(tmp_path / "fold", tmp_path / "s_copy")
    _build(tmp_path / "links", tmp_path / "s_links")
    a, b = store_files(tmp_path / "s_copy"), store_files(tmp_path / "s_links")
    data_files = [k for k in a if k.endswith((".bin", ".npy", ".txt")) or k == "stats.json"]
    assert len(ImageNetStore(tmp_path / "s_links", "train")) == 12 and data_files
    for k in data_files:
        assert a[k] == b[k], k
    with open(tmp_path / "s_links" / "skipped.json") as f:
        (skipped,) = json.load(f)
    assert skipped["file"].endswith("broken.JPEG") and skipped["reason"].startswith(
        f"a symbolic link to '{tmp_path / 'nowhere.JPEG'}' that cannot be read (No such file or directory)")


def _main(capsys, *argv):
    """data_prep/build_imagenet.py's main in this process, any warning an error: (status, stdout, stderr)."""
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "invalid value encountered in divide" must not happen
        status = B.main([*argv, "--no-progress", "--workers", "1"])
    out, err = capsys.readouterr()
    return status, out, err


def test_a_split_with_no_image_is_one_line_naming_the_folder_before_any_statistics(tmp_path, capsys):
    make_demo_imagenet(tmp_path / "fold", 2, 2, 1, seed=5, layout="folders")
    for split in ("train", "val"):
        empty = tmp_path / f"empty_{split}"
        _linked_copy(tmp_path / "fold", empty)
        for d in os.listdir(empty / split):
            for name in os.listdir(empty / split / d):
                os.unlink(empty / split / d / name)
        status, out, err = _main(capsys, "--source", str(empty), "--out", str(tmp_path / f"s_{split}"))
        assert (status, out) == (2, "")
        assert err == (f"error: {empty / split} has no image: its 2 class folders hold no file. Put the images (or "
                       f"symbolic links to them) in {empty / split}/<wnid>/\n")
    # Files that are there but none of them an image: the build stores none, and says so before the statistics.
    broken = tmp_path / "broken"
    _linked_copy(tmp_path / "fold", broken)
    for d in os.listdir(broken / "train"):
        for name in os.listdir(broken / "train" / d):
            os.unlink(broken / "train" / d / name)
            (broken / "train" / d / name).write_bytes(b"not an image")
    status, out, err = _main(capsys, "--source", str(broken), "--out", str(tmp_path / "s_broken"))
    assert status == 2 and err.count("\n") == 1 and not os.path.exists(tmp_path / "s_broken" / "stats.json")
    assert err.startswith(f"error: the train split of {broken} has no image the build could store: every file was "
                          f"skipped, e.g. {broken / 'train'}/")
    assert err.endswith(f"(all in {tmp_path / 's_broken' / 'skipped.json'})\n")


def test_an_empty_training_class_folder_is_one_line(tmp_path, capsys):
    make_demo_imagenet(tmp_path / "fold", 3, 2, 1, seed=5, layout="folders")
    wnid = sorted(os.listdir(tmp_path / "fold" / "train"))[2]
    for name in os.listdir(tmp_path / "fold" / "train" / wnid):
        os.unlink(tmp_path / "fold" / "train" / wnid / name)
    status, out, err = _main(capsys, "--source", str(tmp_path / "fold"), "--out", str(tmp_path / "s"))
    assert (status, out) == (2, "")
    assert err == (f"error: {tmp_path / 'fold' / 'train' / wnid} has no image (class {wnid}; 1 of the 3 training "
                   f"class folders is empty): every class needs training images\n")


def test_a_source_with_one_class_is_one_line(tmp_path, capsys):
    make_demo_imagenet(tmp_path / "fold", 2, 2, 1, seed=5, layout="folders")
    kept, dropped = sorted(os.listdir(tmp_path / "fold" / "train"))
    for split in ("train", "val"):
        shutil.rmtree(tmp_path / "fold" / split / dropped)
    status, out, err = _main(capsys, "--source", str(tmp_path / "fold"), "--out", str(tmp_path / "s"))
    assert (status, out) == (2, "")
    assert err == (f"error: {tmp_path / 'fold'}: its training set has one class ({kept}); a classifier needs at "
                   f"least two: put each class's training images in a folder of its own beside it\n")
    assert not os.path.exists(tmp_path / "s" / "stats.json")

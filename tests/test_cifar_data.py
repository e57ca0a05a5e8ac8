"""CIFAR-10 stores: the python archive (tar.gz and extracted) and 32x32 folders, at native size, lossless."""
import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest
from conftest import store_files
from PIL import Image

from data_prep import build_imagenet as B
from data_prep.cifar_sources import TRAIN_BATCHES, load_pickle
from data_prep.shard_tasks import SourceError
from paper_repro.data.loader import BatchLoader
from paper_repro.data.store import ImageNetStore, dataset_identity, load_stats

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_pixels(n, seed, classes=10):
    """(uint8 n x 32 x 32 x 3, labels): each class a colour and a stripe direction, plus noise (learnable)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    yy, xx = np.mgrid[0:32, 0:32]
    images = np.empty((n, 32, 32, 3), np.uint8)
    for i, c in enumerate(labels):
        colour = np.array([(c * 70) % 256, (c * 130 + 60) % 256, (255 - c * 25) % 256], float)
        stripes = np.sin((xx if c % 2 else yy) * (0.5 + 0.15 * c))[..., None] * 60
        images[i] = np.clip(colour * 0.6 + stripes + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
    return images, labels


def _batch_bytes(images, labels, protocol, names=True):
    """An official-format python batch: dict with b'data' uint8 N x 3072 (R, G, B planes), b'labels', b'filenames'."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    batch = {b"batch_label": b"testing batch", b"data": data, b"labels": [int(x) for x in labels]}
    if names:
        batch[b"filenames"] = [f"img_{i:05d}.png".encode() for i in range(len(images))]
    return pickle.dumps(batch, protocol=protocol)


def make_cifar(root, per_batch=8, test=10, layout="dir", seed=0, protocol=2):
    """Write a small CIFAR-10 in the official python format; layout "dir" (cifar-10-batches-py/), "tar" (the
    .tar.gz) or "folders" (train/<class>/*.png, test/<class>/*.png).

    Returns (source folder, {split: (images, labels)})."""
    root = os.fspath(root)
    os.makedirs(root, exist_ok=True)
    batches = {}
    for k, name in enumerate(TRAIN_BATCHES):
        batches[name] = cifar_pixels(per_batch, seed * 100 + k)
    batches["test_batch"] = cifar_pixels(test, seed * 100 + 9)
    truth = {"train": tuple(np.concatenate([batches[b][j] for b in TRAIN_BATCHES]) for j in (0, 1)),
             "test": batches["test_batch"]}
    if layout == "folders":
        for split, (images, labels) in truth.items():
            for i, (img, lab) in enumerate(zip(images, labels)):
                d = os.path.join(root, split, CLASSES[lab])
                os.makedirs(d, exist_ok=True)
                Image.fromarray(img).save(os.path.join(d, f"{i:04d}.png"))
        return root, truth
    files = {name: _batch_bytes(*batches[name], protocol) for name in batches}
    files["batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072},
                                         protocol=protocol)
    files["readme.html"] = b"<html></html>"
    if layout == "dir":
        folder = os.path.join(root, "cifar-10-batches-py")
        os.makedirs(folder, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        return folder, truth
    with tarfile.open(os.path.join(root, "cifar-10-python.tar.gz"), "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo("cifar-10-batches-py/" + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return root, truth


def _build(source, out, **kw):
    return B.build(str(source), str(out), workers=kw.pop("workers", 1), progress=False, **kw)


@pytest.mark.parametrize("fmt", ["jpeg", "raw"])  # jpeg: the shard format, holding PNGs for CIFAR
def test_python_batches_become_a_32x32_lossless_store(tmp_path, fmt):
    source, truth = make_cifar(tmp_path / "src", per_batch=6, test=7)
    manifest = _build(source, tmp_path / "store", fmt=fmt)
    assert manifest["classes"] == CLASSES and manifest["class_words"] == CLASSES
    assert manifest["splits"] == {"train": {"count": 30, "shards": 5}, "test": {"count": 7, "shards": 1}}
    assert manifest["settings"]["source_format"] == "cifar-python" and manifest["settings"]["size"] == 32
    for split in ("train", "test"):
        store = ImageNetStore(tmp_path / "store", split)
        assert store.image_shape == (32, 32, 3)
        images, labels = truth[split]
        got = np.stack([store[i][0] for i in range(len(store))])
        np.testing.assert_array_equal(got, images)  # every pixel as in the pickle: lossless, same order
        np.testing.assert_array_equal(store.labels, labels)
    assert ImageNetStore(tmp_path / "store", "train").filenames[0] == "data_batch_1/00000_img_00000.png"
    stats = load_stats(tmp_path / "store")
    train = truth["train"][0].astype(np.float64)
    np.testing.assert_allclose(stats["mean_image"], train.mean(0), rtol=0, atol=1e-4)
    np.testing.assert_allclose(stats["rgb_mean"], train.reshape(-1, 3).mean(0), rtol=1e-12)
    cov = np.cov(train.reshape(-1, 3).T, bias=True)
    np.testing.assert_allclose(stats["pca_eigval"], np.linalg.eigvalsh(cov)[::-1], rtol=1e-9)
    assert B.verify(str(tmp_path / "store"), workers=1) == []
    assert dataset_identity(str(tmp_path / "store"))["name"].startswith("CIFAR-10 (10 classes of 32x32")


def test_tar_gz_dir_and_folders_give_the_same_pixels(tmp_path):
    stores = {}
    for layout in ("tar", "dir", "folders"):
        source, truth = make_cifar(tmp_path / layout, layout=layout, per_batch=4, test=5, protocol=4)
        manifest = _build(source, tmp_path / f"store_{layout}")
        assert manifest["settings"]["source_format"] == ("cifar-folders" if layout == "folders" else "cifar-python")
        stores[layout] = {s: ImageNetStore(tmp_path / f"store_{layout}", s) for s in ("train", "test")}
    for split in ("train", "test"):
        images, labels = truth[split]
        for layout in ("tar", "dir"):
            store = stores[layout][split]
            np.testing.assert_array_equal(np.stack([store[i][0] for i in range(len(store))]), images)
        # Folders: stored by class then name; the same image set and labels in another order.
        store = stores["folders"][split]
        order = np.lexsort((np.arange(len(labels)), labels))
        np.testing.assert_array_equal(np.stack([store[i][0] for i in range(len(store))]), images[order])
        np.testing.assert_array_equal(store.labels, labels[order])
    np.testing.assert_array_equal(load_stats(tmp_path / "store_tar")["mean_image"],
                                  load_stats(tmp_path / "store_folders")["mean_image"])


@pytest.mark.parametrize("fmt", ["jpeg", "raw"])
def test_build_is_resumable_byte_for_byte_and_a_rerun_is_a_no_op(tmp_path, capsys, monkeypatch, fmt):
    source, _ = make_cifar(tmp_path / "src", per_batch=5, test=6)
    _build(source, tmp_path / "full", fmt=fmt)
    real, done = B.process_shard, []

    def dies_after_two(task, out, *rest):
        if len(done) == 2:
            raise KeyboardInterrupt  # the build is killed after two shards
        done.append(task.shard)
        return real(task, out, *rest)

    monkeypatch.setattr(B, "process_shard", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        _build(source, tmp_path / "part", fmt=fmt)
    assert not os.path.exists(tmp_path / "part" / "manifest.json")
    monkeypatch.setattr(B, "process_shard", real)
    _build(source, tmp_path / "part", fmt=fmt)

    assert store_files(tmp_path / "full") == store_files(tmp_path / "part")  # every byte: shards, indexes, stats, manifest
    capsys.readouterr()
    _build(source, tmp_path / "full", fmt=fmt)
    assert "already complete; nothing to do" in capsys.readouterr().out


def test_bad_labels_and_odd_files_are_skipped_and_reported(tmp_path):
    source, truth = make_cifar(tmp_path / "src", per_batch=4, test=4)
    path = os.path.join(source, "data_batch_2")
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    batch[b"labels"][1] = 10  # not a class
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    manifest = _build(source, tmp_path / "store")
    assert manifest["splits"]["train"]["count"] == 19 and manifest["skipped"] == 1
    with open(tmp_path / "store" / "skipped.json") as f:
        skipped = json.load(f)
    assert skipped == [{"file": f"{path}[1]", "reason": "label 10 is not a class index 0..9"}]
    # Folders: a 33x32 image and a text file are skipped, each with its reason.
    fsrc, _ = make_cifar(tmp_path / "folders", layout="folders", per_batch=3, test=3)
    some_class = os.path.join(fsrc, "train", sorted(os.listdir(os.path.join(fsrc, "train")))[0])
    Image.fromarray(np.zeros((32, 33, 3), np.uint8)).save(os.path.join(some_class, "wide.png"))
    with open(os.path.join(some_class, "notes.txt"), "w") as f:
        f.write("hello")
    manifest = _build(fsrc, tmp_path / "fstore")
    with open(tmp_path / "fstore" / "skipped.json") as f:
        reasons = {os.path.basename(s["file"]): s["reason"] for s in json.load(f)}
    assert reasons == {"wide.png": "33x32 image: a CIFAR store holds 32x32 images only",
                       "notes.txt": "not a decodable image (no image format PIL reads)"}
    assert manifest["splits"]["train"]["count"] == 15


def test_a_pickle_with_code_in_it_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    with pytest.raises(SourceError, match=r"x: not a readable CIFAR python batch \(UnpicklingError: refused global "
                                          r"(posix|os|nt)\.system"):
        load_pickle(pickle.dumps({b"data": Evil()}), "x")


def test_broken_sources_are_one_line_naming_the_file(tmp_path, capsys):
    source, _ = make_cifar(tmp_path / "src", per_batch=2, test=2)
    os.unlink(os.path.join(source, "data_batch_3"))
    assert B.main(["--source", source, "--out", str(tmp_path / "s1"), "--workers", "1", "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {source} lacks data_batch_3\n")
    with open(os.path.join(source, "data_batch_3"), "wb") as f:
        f.write(b"\x80\x02}q\x00(U\x04data")  # cut short
    assert B.main(["--source", source, "--out", str(tmp_path / "s2"), "--workers", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {source}/data_batch_3: not a readable CIFAR python batch (")


def test_the_loader_reads_32x32_batches(tmp_path):
    source, truth = make_cifar(tmp_path / "src", per_batch=4, test=5)
    _build(source, tmp_path / "store")
    store = ImageNetStore(tmp_path / "store", "test")
    batches = list(BatchLoader(store, np.arange(5), 3))
    np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in batches]), truth["test"][0])
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), truth["test"][1])

"""paper_repro/data/store.py: ImageNetStore, decode_image, load_stats and their errors."""
import io
import json
import os
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from data_prep.build_imagenet import build
from data_prep.make_demo_imagenet import make_demo_imagenet
from paper_repro.data.store import (ImageNetStore, dataset_identity, decode_image, is_generated, load_stats,
                                    read_manifest, store_classes)


def test_store_items_labels_and_filenames(tiny_store):
    train, val = ImageNetStore(tiny_store, "train"), ImageNetStore(tiny_store, "val")
    assert (len(train), len(val)) == (48, 16)
    assert train.classes == sorted(train.classes) and len(train.classes) == 4
    assert np.bincount(train.labels).tolist() == [12] * 4 and train.labels.dtype == np.int64
    img, label = train[13]
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8 and label == int(train.labels[13])
    assert train.filenames[13].startswith(train.classes[label] + "_")
    assert val.filenames == sorted(val.filenames) and val.filenames[-1] == "ILSVRC2012_val_00000016.JPEG"
    assert np.array_equal(train[-1][0], train[len(train) - 1][0])
    with pytest.raises(IndexError):
        train[48]


def test_decode_image_equals_pil_and_read_encoded_is_jpeg(tiny_store):
    val = ImageNetStore(tiny_store, "val")
    for i in (0, 5, 15):
        buf = val.read_encoded(i)
        assert buf[:3] == b"\xff\xd8\xff"
        pil = np.asarray(Image.open(io.BytesIO(buf)).convert("RGB"))
        assert np.array_equal(decode_image(buf), pil)
        assert np.array_equal(val[i][0], pil)
    png = io.BytesIO()
    Image.fromarray(np.full((4, 5), 7, np.uint8)).save(png, "PNG")
    assert decode_image(png.getvalue()).shape == (4, 5, 3)


def test_store_pickles_for_dataloader_workers(tiny_store):
    train = ImageNetStore(tiny_store, "train")
    first = train[3][0]
    clone = pickle.loads(pickle.dumps(train))
    assert np.array_equal(clone[3][0], first) and clone.filenames == train.filenames


def test_load_stats_shapes(tiny_store):
    s = load_stats(tiny_store)
    assert s["rgb_mean"].shape == (3,) and s["pca_eigval"].shape == (3,)
    assert s["pca_eigvec"].shape == (3, 3) and s["mean_image"].shape == (256, 256, 3)
    np.testing.assert_allclose(s["pca_eigvec"].T @ s["pca_eigvec"], np.eye(3), atol=1e-9)
    np.testing.assert_allclose(s["mean_image"].reshape(-1, 3).mean(0), s["rgb_mean"], rtol=1e-5)


def test_clear_errors_for_missing_store_split_and_manifest(tiny_store, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image store .*nope does not exist; build it with"):
        ImageNetStore(tmp_path / "nope", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"is not a finished image store \(no manifest.json\)"):
        ImageNetStore(tmp_path / "empty", "train")
    with pytest.raises(ValueError, match=r"has no 'test' split \(it has: train, val\)"):
        ImageNetStore(tiny_store, "test")
    with pytest.raises(ValueError, match="split must be one of train, val, test"):
        ImageNetStore(tiny_store, "training")


def test_empty_split_is_a_clear_error(tmp_path):
    src = make_demo_imagenet(tmp_path / "src", 2, 2, 1, seed=0, layout="folders")
    for d in os.listdir(os.path.join(src, "val")):
        for f in os.listdir(os.path.join(src, "val", d)):
            open(os.path.join(src, "val", d, f), "wb").close()  # every val file empty -> all skipped
    build(str(src), str(tmp_path / "s"), workers=1, progress=False)
    with pytest.raises(ValueError, match=r"split 'val' of image store .* is empty \(0 images\)"):
        ImageNetStore(tmp_path / "s", "val")
    assert len(ImageNetStore(tmp_path / "s", "train")) == 4


def relabelled_store(tmp_path, store, **manifest_changes):
    """A copy of `store` whose manifest differs by `manifest_changes` (settings merged, None deletes a key)."""
    copy = str(tmp_path / "relabelled")
    shutil.copytree(store, copy)
    path = os.path.join(copy, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    settings = {**manifest["settings"], **manifest_changes.pop("settings", {})}
    manifest = {**manifest, **manifest_changes, "settings": {k: v for k, v in settings.items() if v is not None}}
    with open(path, "w") as f:
        json.dump({k: v for k, v in manifest.items() if v is not None}, f)
    return copy


def test_class_words_aligned_with_classes_or_none(tiny_store, tmp_path):
    store = ImageNetStore(tiny_store, "train")
    manifest = read_manifest(tiny_store)
    assert store.class_words == manifest["class_words"] and len(store.class_words) == len(store.classes) == 4
    assert ImageNetStore(relabelled_store(tmp_path, tiny_store, class_words=None), "train").class_words is None


def manifest_only(tmp_path, name, classes, **settings):
    root = tmp_path / name
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({"classes": classes, "settings": {"year": 2012, **settings},
                                                    "splits": {}}))
    return str(root)


def test_each_kind_of_store_is_named_for_what_it_is(tiny_store, tmp_path):
    ilsvrc12 = ["n01440764"] + ["n%08d" % (2000000 + i) for i in range(998)] + ["n15075141"]
    not_ilsvrc = {"imagenet": False, "year": None}
    assert dataset_identity(tiny_store) == {"name": "a generated demo data set (4 classes; not ImageNet)", **not_ilsvrc}
    assert is_generated(tiny_store)
    tiny = manifest_only(tmp_path, "tiny", ["n%08d" % i for i in range(100)], source_format="tiny-imagenet")
    assert dataset_identity(tiny) == {
        "name": "Tiny ImageNet (100 classes of 64x64 photographs; not ILSVRC, the paper's data)", **not_ilsvrc}
    assert not is_generated(tiny)
    ten = manifest_only(tmp_path, "ten", ilsvrc12[:10], source_format="folders")
    assert dataset_identity(ten) == {
        "name": "an image folder store of 10 classes (not ILSVRC: ILSVRC has 1000 classes)", **not_ilsvrc}
    other = manifest_only(tmp_path, "other", sorted("n%08d" % (3000000 + i) for i in range(1000)))
    assert dataset_identity(other) == {
        "name": "an image folder store of 1000 classes (not ILSVRC: its classes are not ILSVRC-2012's)", **not_ilsvrc}
    assert dataset_identity(manifest_only(tmp_path, "real", ilsvrc12)) == {
        "name": "ILSVRC-2012", "imagenet": True, "year": 2012}
    # a Tiny ImageNet store never gets the ILSVRC name, even with 1000 ILSVRC-looking classes
    assert not dataset_identity(manifest_only(tmp_path, "t1000", ilsvrc12, source_format="tiny-imagenet"))["imagenet"]
    assert store_classes(ten) == 10 and store_classes(str(tmp_path / "nowhere")) is None

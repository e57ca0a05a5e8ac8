"""paper_repro/data.py: ImageNetStore, decode_image, load_stats and their errors."""
import io
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from paper_repro.data import ImageNetStore, decode_image, load_stats


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
    from data_prep.build_imagenet import build
    from data_prep.make_demo_imagenet import make_demo_imagenet

    src = make_demo_imagenet(tmp_path / "src", 2, 2, 1, seed=0, layout="folders")
    for d in os.listdir(os.path.join(src, "val")):
        for f in os.listdir(os.path.join(src, "val", d)):
            open(os.path.join(src, "val", d, f), "wb").close()  # every val file empty -> all skipped
    build(str(src), str(tmp_path / "s"), workers=1, progress=False)
    with pytest.raises(ValueError, match=r"split 'val' of image store .* is empty \(0 images\)"):
        ImageNetStore(tmp_path / "s", "val")
    assert len(ImageNetStore(tmp_path / "s", "train")) == 4

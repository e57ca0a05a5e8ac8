"""data_prep/build_imagenet.py on the Tiny ImageNet layout: detection, labels, words, pixels, resume, errors."""
import io
import json
import os

import numpy as np
import pytest
from conftest import store_files
from PIL import Image

from data_prep import build_imagenet as B
from data_prep import image_recipe
from paper_repro.data.store import ImageNetStore, load_stats

WNIDS = ["n03000000", "n01000000", "n02000000"]  # wnids.txt order is not the label order
WORDS = {"n01000000": "goldfish, Carassius auratus", "n02000000": "tabby, tabby cat",
         "n03000000": "school bus", "n09999999": "a class this copy does not hold"}


def _jpeg(arr, quality=90):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _photo(seed, grey=False):
    """A smooth 64x64 image (a colour gradient plus a disc), as a Tiny ImageNet JPEG."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64] / 63.0
    colour = rng.uniform(40, 215, 3)
    img = colour * (0.6 + 0.4 * xx[..., None]) * (0.7 + 0.3 * yy[..., None])
    cy, cx = rng.uniform(16, 48, 2)
    img[(np.mgrid[:64, :64][0] - cy) ** 2 + (np.mgrid[:64, :64][1] - cx) ** 2 < 100] = rng.uniform(0, 255, 3)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return _jpeg(img[..., 0] if grey else img)


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def make_tiny(root):
    """A 3-class Tiny ImageNet layout: 3 train images a class (one greyscale, plus one broken file),
    5 val images (one not annotated), 2 unlabelled test images. Returns (root, val labels by file)."""
    root = str(root)
    _write(os.path.join(root, "wnids.txt"), "".join(w + "\n" for w in WNIDS))
    _write(os.path.join(root, "words.txt"), "".join(f"{w}\t{t}\n" for w, t in WORDS.items()))
    seed = 0
    for wnid in WNIDS:
        boxes = []
        for k in range(3):
            seed += 1
            name = f"{wnid}_{k}.JPEG"
            _write(os.path.join(root, "train", wnid, "images", name), _photo(seed, grey=(wnid, k) == (WNIDS[1], 2)))
            boxes.append(f"{name}\t0\t0\t63\t63\n")
        _write(os.path.join(root, "train", wnid, f"{wnid}_boxes.txt"), "".join(boxes))
    _write(os.path.join(root, "train", WNIDS[2], "images", f"{WNIDS[2]}_9.JPEG"), b"this is not an image\n")
    val = {"val_0.JPEG": WNIDS[2], "val_1.JPEG": WNIDS[0], "val_2.JPEG": WNIDS[1], "val_10.JPEG": WNIDS[0]}
    for name in list(val) + ["val_3.JPEG"]:
        seed += 1
        _write(os.path.join(root, "val", "images", name), _photo(seed))
    _write(os.path.join(root, "val", "val_annotations.txt"),
           "".join(f"{n}\t{w}\t0\t0\t63\t63\n" for n, w in val.items()))
    for k in range(2):
        seed += 1
        _write(os.path.join(root, "test", "images", f"test_{k}.JPEG"), _photo(seed))
    return root, val


def _json(store, name):
    with open(os.path.join(store, name)) as f:
        return json.load(f)




@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(source, store, val labels) of the fixture layout, built once."""
    base = tmp_path_factory.mktemp("tiny")
    src, val = make_tiny(base / "tiny-imagenet-200")
    B.build(src, str(base / "store"), workers=1, progress=False)
    return src, str(base / "store"), val


def test_layout_is_detected_and_labels_are_sorted_wnid_indexes(tiny):
    src, store, val = tiny
    manifest = _json(store, "manifest.json")
    classes = sorted(WNIDS)
    assert manifest["classes"] == classes
    assert manifest["class_words"] == [WORDS[w] for w in classes]
    assert manifest["settings"]["source_format"] == "tiny-imagenet"
    assert sorted(manifest["splits"]) == ["train", "val"]  # the unlabelled test images are not stored
    assert manifest["notes"] == [f"test: 2 unlabelled images in {src}/test/images not stored "
                                 f"(a store image has a label)"]
    train = ImageNetStore(store, "train")
    assert train.filenames == [f"{w}_{k}.JPEG" for w in classes for k in range(3)]
    assert train.labels.tolist() == [i for i in range(3) for _ in range(3)]
    v = ImageNetStore(store, "val")
    assert v.filenames == sorted(val)
    assert v.labels.tolist() == [classes.index(val[n]) for n in sorted(val)]


def test_bad_files_are_skipped_and_reported(tiny):
    src, store, _ = tiny
    skipped = _json(store, "skipped.json")
    assert [s["file"] for s in skipped] == [f"{src}/val/images/val_3.JPEG",
                                            f"{src}/train/{WNIDS[2]}/images/{WNIDS[2]}_9.JPEG"]
    assert skipped[0]["reason"] == "no entry in val/val_annotations.txt: not used"
    assert skipped[1]["reason"] == "not a decodable image (no image format PIL reads)"


def test_pixels_are_the_64px_photo_enlarged_bicubic_to_256(tiny):
    src, store, _ = tiny
    train = ImageNetStore(store, "train")
    for i, name in enumerate(train.filenames):
        with open(os.path.join(src, "train", name.split("_")[0], "images", name), "rb") as f:
            data = f.read()
        assert train.read_encoded(i) == image_recipe.prepare_image(data), name  # the ILSVRC recipe, to the byte
        ref = Image.open(io.BytesIO(data)).convert("RGB").resize((256, 256), Image.Resampling.BICUBIC)
        got = np.asarray(image_recipe.prepare_pixels(data)).astype(int)
        assert np.abs(got - np.asarray(ref).astype(int)).max() <= 1, name
    grey = train[train.filenames.index(f"{WNIDS[1]}_2.JPEG")][0].astype(int)
    assert grey.shape == (256, 256, 3)
    assert np.abs(grey[..., 0] - grey[..., 1]).max() <= 2 and np.abs(grey[..., 0] - grey[..., 2]).max() <= 2


def test_stats_and_verify(tiny, capsys):
    _, store, _ = tiny
    train = ImageNetStore(store, "train")
    imgs = np.stack([train[i][0] for i in range(len(train))]).astype(np.float64)
    np.testing.assert_allclose(load_stats(store)["rgb_mean"], imgs.reshape(-1, 3).mean(0), rtol=1e-12)
    assert B.main(["--out", store, "--verify", "--workers", "1"]) == 0
    assert capsys.readouterr().out == f"verify {store}: OK\n"


def test_interrupted_build_resumes_to_the_same_bytes(tiny, tmp_path, monkeypatch, capsys):
    src, ref, _ = tiny
    calls = []

    def dies_on_the_third_shard(args):
        calls.append(args[0].shard)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return B.process_shard(*args)

    monkeypatch.setattr(B, "_process_shard_star", dies_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        B.build(src, str(tmp_path / "s"), workers=1, progress=False)
    assert not (tmp_path / "s" / "manifest.json").exists()
    monkeypatch.undo()
    B.build(src, str(tmp_path / "s"), workers=1, progress=False)
    got, want = store_files(tmp_path / "s"), store_files(ref)
    assert sorted(got) == sorted(want)
    assert all(got[k] == want[k] for k in want)
    capsys.readouterr()
    assert B.main(["--source", src, "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{tmp_path / 's'} is already complete; nothing to do\n")
    assert f"  test: 2 unlabelled images in {src}/test/images not stored" in out


def _error(src, tmp_path, capsys):
    assert B.main(["--source", src, "--out", str(tmp_path / "store"), "--no-progress"]) == 2
    return capsys.readouterr().err


def test_val_wnid_missing_from_wnids_txt_is_a_clear_error(tmp_path, capsys):
    src, _ = make_tiny(tmp_path / "t")
    ann = os.path.join(src, "val", "val_annotations.txt")
    with open(ann, "a") as f:
        f.write("val_3.JPEG\tn09999999\t0\t0\t63\t63\n")
    assert _error(src, tmp_path, capsys) == f"error: {ann} line 5: wnid n09999999 is not in {src}/wnids.txt\n"


def test_missing_val_image_is_a_clear_error(tmp_path, capsys):
    src, _ = make_tiny(tmp_path / "t")
    os.unlink(os.path.join(src, "val", "images", "val_1.JPEG"))
    ann = os.path.join(src, "val", "val_annotations.txt")
    assert _error(src, tmp_path, capsys) == f"error: {ann} line 2: missing image {src}/val/images/val_1.JPEG\n"


def test_empty_class_is_a_clear_error(tmp_path, capsys):
    src, _ = make_tiny(tmp_path / "t")
    folder = os.path.join(src, "train", WNIDS[0], "images")
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))
    assert _error(src, tmp_path, capsys) == (
        f"error: {folder} has no images: class {WNIDS[0]} of wnids.txt is empty; every class needs training images\n")


def test_missing_annotations_names_the_file_and_the_layout(tmp_path, capsys):
    src, _ = make_tiny(tmp_path / "t")
    os.unlink(os.path.join(src, "val", "val_annotations.txt"))
    assert _error(src, tmp_path, capsys) == (
        f"error: missing {src}/val/val_annotations.txt\n"
        f"expected the Tiny ImageNet layout in {src}:\n"
        f"  wnids.txt, words.txt\n"
        f"  train/<wnid>/images/*.JPEG\n"
        f"  val/images/*.JPEG and val/val_annotations.txt\n"
        f"  test/images/*.JPEG (optional; unlabelled, not stored)\n")


def test_the_folder_above_the_layout_is_named_in_the_error(tmp_path, capsys):
    src, _ = make_tiny(tmp_path / "t" / "tiny-imagenet-200")
    parent = str(tmp_path / "t")
    assert _error(parent, tmp_path, capsys).endswith(
        f"\n{src} holds the Tiny ImageNet layout: pass --source {src}\n")

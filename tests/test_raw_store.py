"""The raw store format (issue 18): build --format raw|jpeg|auto, the same store as JPEG's but pixels, resume,
verify, the loader without decoding, native sizes, and the commands on a raw store."""
import io
import json
import os
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import store_files
from PIL import Image

from data_prep import build_imagenet as B
from data_prep import raw_shards
from data_prep.image_recipe import encode_jpeg, prepare_pixels
from data_prep.make_demo_imagenet import make_demo_imagenet
from data_prep.shard_tasks import SourcePlan
from paper_repro.core.cli import RunFailed
from paper_repro.data.loader import BatchLoader, epoch_order, image_batches
from paper_repro.data.store import ImageNetStore, load_stats


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(source, raw store, JPEG store) of one generated source in the folder layout."""
    base = tmp_path_factory.mktemp("raw_pair")
    src = make_demo_imagenet(str(base / "src"), 3, 4, 2, seed=7, layout="folders")
    raw, jpeg = str(base / "raw"), str(base / "jpeg")
    B.build(src, raw, workers=1, progress=False, fmt="raw")
    B.build(src, jpeg, workers=1, progress=False, fmt="jpeg")
    return src, raw, jpeg


def _copy_of(store_root, root):
    """A byte-for-byte copy of the store at `root` (to damage without touching the module's store)."""
    for rel, data in store_files(store_root).items():
        os.makedirs(os.path.dirname(root / rel), exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _source_bytes(src, store, i):
    path = os.path.join(src, store.split, store.classes[int(store.labels[i])], store.filenames[i])
    with open(path, "rb") as f:
        return f.read()


# ---------------------------------------------------------------------------- the store

def test_raw_and_jpeg_stores_of_one_source_hold_the_same_images(pair):
    src, raw_root, jpeg_root = pair
    for split in ("train", "val"):
        raw, jpeg = ImageNetStore(raw_root, split), ImageNetStore(jpeg_root, split)
        assert (raw.store_format, jpeg.store_format) == ("raw", "jpeg")
        assert raw.classes == jpeg.classes and raw.class_words == jpeg.class_words
        assert raw.filenames == jpeg.filenames and np.array_equal(raw.labels, jpeg.labels)
        assert len(raw) == len(jpeg) == {"train": 12, "val": 6}[split]
        for i in range(len(raw)):
            pixels = raw[i][0]
            # exactly the recipe's 256x256 pixels before encoding ...
            assert np.array_equal(pixels, np.asarray(prepare_pixels(_source_bytes(src, raw, i))))
            # ... and the JPEG store holds exactly those pixels encoded, so its decoded pixels differ by JPEG error only
            assert jpeg.read_encoded(i) == encode_jpeg(Image.fromarray(pixels))
            assert np.abs(jpeg[i][0].astype(int) - pixels.astype(int)).mean() < 3
        with pytest.raises(ValueError, match="is a raw store: its images are stored as pixels"):
            raw.read_encoded(0)
    train = ImageNetStore(raw_root, "train")
    pixels = train.read_batch(np.arange(len(train))).astype(np.float64)
    stats = load_stats(raw_root)
    np.testing.assert_array_equal(stats["mean_image"], pixels.mean(0).astype(np.float32))
    np.testing.assert_allclose(stats["rgb_mean"], pixels.reshape(-1, 3).mean(0), rtol=1e-12)


def test_auto_takes_raw_for_a_small_store_and_says_so_with_the_size_on_disk(pair, tmp_path, capsys):
    src, raw_root, _ = pair
    out = tmp_path / "auto"
    assert B.main(["--source", src, "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert f"building {out}: format raw (auto: 18 images x 256x256x3 uint8 = 0.00 GiB, under 8 GiB)\n" in text
    size = sum(len(b) for b in store_files(out).values())
    assert f"  format raw: uint8 pixel arrays, read as they are, no decoding; {size / 2 ** 30:.3f} GiB on disk\n" in text
    assert store_files(out) == store_files(raw_root)
    # a store keeps its format: auto again is a no-op, another format is refused in one line
    assert B.main(["--source", src, "--out", str(out), "--no-progress"]) == 0
    assert "already complete; nothing to do" in capsys.readouterr().out
    assert B.main(["--source", src, "--out", str(out), "--format", "jpeg", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out} is a finished store built with {{") and "'store_format': 'raw'" in err
    assert err.count("\n") == 1


def test_auto_counts_only_until_the_limit_is_passed():
    @dataclass
    class Counted:
        files: list

    @dataclass
    class Unknown:
        n: int
        read: list

        def images(self):
            self.read.append(1)
            return iter(range(self.n))

    read = []
    tasks = [Counted([0] * 10), Unknown(5, read), Unknown(5, read)]
    per = 256 * 256 * 3
    assert raw_shards.choose_format("auto", tasks, limit=20 * per)[0] == "raw" and len(read) == 2
    read.clear()
    fmt, why = raw_shards.choose_format("auto", tasks, limit=12 * per)
    assert fmt == "jpeg" and len(read) == 1  # stopped at the second task: the third is never read
    assert why == "format jpeg (auto: more than 12 images of 256x256x3 would take over 0 GiB raw)"
    assert raw_shards.choose_format("auto", tasks, image_size=32, limit=20 * per)[1] == (
        "format raw (auto: 20 images x 32x32x3 uint8 = 0.00 GiB, under 0 GiB)")
    assert raw_shards.choose_format("jpeg", tasks) == ("jpeg", "format jpeg (--format jpeg)")
    with pytest.raises(ValueError, match="store format must be one of auto, raw, jpeg, not 'png'"):
        raw_shards.choose_format("png", tasks)


def test_interrupted_raw_build_resumes_to_the_same_bytes(pair, tmp_path, monkeypatch):
    src, raw_root, _ = pair
    calls = []

    def dies_on_the_third_shard(args):
        calls.append(args[0].shard)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return B.process_shard(*args)

    monkeypatch.setattr(B, "_process_shard_star", dies_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        B.build(src, str(tmp_path / "s"), workers=1, progress=False, fmt="raw")
    assert not (tmp_path / "s" / "manifest.json").exists()
    assert len(list((tmp_path / "s").rglob("shard-[0-9][0-9][0-9][0-9][0-9].npy"))) == 2
    monkeypatch.undo()
    B.build(src, str(tmp_path / "s"), workers=1, progress=False, fmt="auto")  # auto: the partial build's format
    got, want = store_files(tmp_path / "s"), store_files(raw_root)
    assert sorted(got) == sorted(want)
    assert all(got[k] == want[k] for k in want)


def test_verify_names_a_damaged_raw_shard_in_one_line(pair, tmp_path, capsys):
    src, _, _ = pair
    store = tmp_path / "s"
    assert B.main(["--source", src, "--out", str(store), "--format", "raw", "--verify", "--workers", "1",
                   "--no-progress"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"verify {store}: OK")
    shard = store / "val" / "shard-00000.npy"
    data = bytearray(shard.read_bytes())
    data[-1000] ^= 0xFF  # one pixel of the last image: nothing but a checksum can tell
    shard.write_bytes(bytes(data))
    last = ImageNetStore(store, "val").filenames[-1]
    assert B.main(["--out", str(store), "--verify", "--workers", "1"]) == 1
    assert capsys.readouterr().out == (
        f"verify {store}: 1 problems\n  {shard}: 1 of 6 images differ from the checksums written when the shard "
        f"was built (first: {last}); the shard is damaged: rebuild the store\n")
    train = store / "train" / "shard-00001.npy"
    train.write_bytes(train.read_bytes()[:-100])
    assert B.main(["--out", str(store), "--verify", "--workers", "2"]) == 1
    out = capsys.readouterr().out
    assert f"  {train}: not a readable raw shard (" in out and "rebuild the store" in out


# ---------------------------------------------------------------------------- the loader

def test_loader_gives_raw_batches_in_this_process_or_in_workers(pair):
    _, raw_root, jpeg_root = pair
    store = ImageNetStore(raw_root, "train")
    order = epoch_order(len(store), 3, 1)
    want = [(np.stack([store[i][0] for i in order[k:k + 5]]), store.labels[order[k:k + 5]])
            for k in range(0, len(order), 5)]
    here = BatchLoader(store, order, 5, workers=2)  # workers do not apply to a raw store: it is read here
    assert here.workers == 0
    for loader in (here, BatchLoader(store, order, 5, raw_workers=1)):
        got = list(loader)
        assert len(got) == len(want) == 3
        for (images, labels), (w_images, w_labels) in zip(got, want):
            # stored channel by channel, as on disk: the [B, H, W, 3] batch is a view of a contiguous planar one
            assert images.dtype == torch.uint8 and images.permute(0, 3, 1, 2).is_contiguous()
            assert np.array_equal(images.numpy(), w_images) and np.array_equal(labels.numpy(), w_labels)
    here.set_indices(order, start=2)
    assert [b[1].tolist() for b in here] == [want[2][1].tolist()]
    val = ImageNetStore(raw_root, "val")
    images = torch.cat([x for x, _ in image_batches(val, batch_size=4)])
    assert np.array_equal(images.numpy(), np.stack([val[i][0] for i in range(len(val))]))
    jpeg = torch.cat([x for x, _ in image_batches(ImageNetStore(jpeg_root, "val"), batch_size=4)])
    assert (jpeg.int() - images.int()).abs().float().mean() < 3


@pytest.mark.parametrize("raw_workers", [0, 1])
def test_damaged_raw_shard_stops_the_loader_naming_shard_and_image(pair, tmp_path, raw_workers):
    src, raw_root, _ = pair
    root = _copy_of(raw_root, tmp_path / "s")
    shard = root / "train" / "shard-00002.npy"
    shard.write_bytes(shard.read_bytes()[:-10])
    store = ImageNetStore(str(root), "train")
    i = int(np.flatnonzero(store.shards == 2)[0])
    with pytest.raises(RunFailed) as e:
        list(BatchLoader(store, [0, i, 1], 3, raw_workers=raw_workers))
    assert str(e.value).startswith(
        f"image store {root} is damaged: train image {i} ({store.filenames[i]}) in {shard} cannot be read: ")
    assert "mmap length is greater than file size" in str(e.value)


def test_raw_batches_read_by_preadv_or_from_the_map_are_the_images(pair, tmp_path):
    from paper_repro.data.raw import empty_batch
    _, raw_root, _ = pair
    store = ImageNetStore(raw_root, "train")
    order = np.array([5, 6, 7, 0, 11, 3, 4, 2])  # runs within a shard and jumps between shards
    planar = store.read_batch(order, empty_batch(len(order), store.image_shape))  # preadv into the planar buffer
    hwc = store.read_batch(order, np.empty((len(order), *store.image_shape), np.uint8))  # copies from the map
    want = np.stack([store[int(i)][0] for i in order])
    assert np.array_equal(planar, want) and np.array_equal(hwc, want)
    assert store._raw._files and all(k in store._raw._maps for k in store._raw._files)
    # a shard cut short after it was opened: one line, naming the file and the rows
    root = _copy_of(raw_root, tmp_path / "s")
    cut = ImageNetStore(str(root), "train")
    last = int(np.flatnonzero(cut.shards == cut.shards[-1])[-1])
    cut.read_batch([last])  # opens the shard
    path = root / "train" / ("shard-%05d.npy" % cut.shards[last])
    os.truncate(path, os.path.getsize(path) - 10)
    with pytest.raises(ValueError) as e:
        cut.read_batch([last], empty_batch(1, cut.image_shape))
    row = int(cut._raw.rows[last])
    assert str(e.value) == (f"{path}: rows {row}..{row} could not be read whole (196598 of 196608 bytes); "
                            "the file changed after it was opened")
    cut.close()


# ---------------------------------------------------------------------------- small native images

@dataclass
class _NativeShard:
    """A shard task of 32x32 images stored at their own size (as CIFAR's, issue 17): prepare() gives PNG bytes."""
    split: str
    shard: int
    pixels: list
    image_size: int = 32

    def images(self):
        for k, p in enumerate(self.pixels):
            buf = io.BytesIO()
            Image.fromarray(p).save(buf, "PNG")
            yield f"img{k}.png", f"memory[{k}]", k % 2, buf.getvalue()

    def prepare(self, data):
        return data  # the image is stored as given: lossless PNG, decoded back for a raw store


def test_raw_store_keeps_a_native_image_size(tmp_path):
    g = np.random.default_rng(0)
    pixels = [g.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(5)]
    out = str(tmp_path / "s")
    task = _NativeShard("val", 0, pixels)
    os.makedirs(os.path.join(out, "val"))
    B.process_shard(task, out, "raw")
    settings = {"source": "memory", "size": 32, "store_format": "raw"}
    B.finalize(out, SourcePlan("memory", ["a", "b"], ["a", "b"], [task], []), settings)
    store = ImageNetStore(out, "val")
    assert store.image_shape == (32, 32, 3) and store.labels.tolist() == [0, 1, 0, 1, 0]
    assert all(np.array_equal(store[i][0], pixels[i]) for i in range(5))
    (images, labels), = list(BatchLoader(store, [4, 0, 1, 2, 3], 5))
    assert images.shape == (5, 32, 32, 3) and np.array_equal(images[0].numpy(), pixels[4])
    assert B.verify(out, workers=1) == []
    index = json.loads((tmp_path / "s" / "val" / "shard-00000.json").read_text())
    assert index["crc32"] == [zlib.crc32(p.transpose(2, 0, 1).tobytes()) for p in pixels]  # of the planar bytes
    assert np.array_equal(np.load(tmp_path / "s" / "val" / "shard-00000.npy"), np.stack(pixels).transpose(0, 3, 1, 2))


# ---------------------------------------------------------------------------- the commands on a raw store

def test_evaluate_on_a_raw_store_is_the_ten_view_average_of_its_pixels(pair):
    from test_evaluate import make_net, manual_probs

    from paper_repro.evaluation.scoring import evaluate
    _, raw_root, _ = pair
    store, mean = ImageNetStore(raw_root, "val"), load_stats(raw_root)["mean_image"]
    net = make_net(3, seed=3)
    got = evaluate([net], store, mean, views=10, batch_size=4, workers=2, progress=False)
    torch.testing.assert_close(got, manual_probs(net, store, mean, 10), rtol=0, atol=1e-5)


def test_train_runs_on_a_raw_store(pair, tmp_path, one_thread):
    from paper_repro.train import run_cli
    _, raw_root, _ = pair
    run = str(tmp_path / "run")
    run_cli(["--data", raw_root, "--out", run, "--gpus", "cpu", "--width", "0.125", "--batch-size", "4",
             "--epochs", "1", "--workers", "2", "--no-progress"])
    with open(os.path.join(run, "log.jsonl")) as f:
        log = [json.loads(line) for line in f]
    assert len(log) == 1 and log[0]["steps"] == 3 and np.isfinite(log[0]["train_loss"])
    with open(os.path.join(run, "config.json")) as f:
        assert json.load(f)["train_images"] == 12


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_raw_batches_on_a_gpu_equal_the_cpu_ones_and_augment_alike(pair):
    from paper_repro.data.augment import TrainPatch, batch_generator
    _, raw_root, _ = pair
    store, stats = ImageNetStore(raw_root, "train"), load_stats(raw_root)
    order = epoch_order(len(store), 0, 0)
    cpu = list(BatchLoader(store, order, 5))
    gpu = list(BatchLoader(store, order, 5, pin_memory=True, device="cuda", decode="gpu"))  # nothing to decode
    patch = TrainPatch(stats["mean_image"], stats["pca_eigval"], stats["pca_eigvec"])
    for k, ((a, la), (b, lb)) in enumerate(zip(cpu, gpu)):
        assert b.is_cuda and torch.equal(b.cpu(), a) and torch.equal(lb.cpu(), la)
        # the device's gather on the planar batch gives the CPU slices' numbers
        torch.testing.assert_close(patch(b, batch_generator(0, 0, k)).cpu(), patch(a, batch_generator(0, 0, k)),
                                   rtol=0, atol=0)

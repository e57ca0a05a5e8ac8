"""paper_repro/data/loader.py and decode.py: /dev/shm sizing, --decode gpu's CPU twin, the side-stream prefetch,
default_workers, and a damaged store named in one line."""
import contextlib
import mmap
import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
import torch

from data_prep.build_imagenet import build
from data_prep.make_demo_imagenet import make_demo_imagenet
from paper_repro.core.cli import RunFailed, UsageError
from paper_repro.data.decode import decode_batch
from paper_repro.data.loader import (MB, BatchLoader, ahead, default_workers, image_batches, plan_shared_memory,
                                     shm_footprint)
from paper_repro.data.store import ImageNetStore, shard_name

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _encoded(store, indices):
    return [torch.frombuffer(bytearray(store.read_encoded(int(i))), dtype=torch.uint8) for i in indices]


def _reference(store, indices):
    """The workers' decode, image by image: store[i]."""
    return torch.stack([torch.from_numpy(store[int(i)][0]) for i in indices])


# ---------------------------------------------------------------------------- /dev/shm

def test_plan_shared_memory_shrinks_prefetch_then_workers():
    b = 10 * MB  # 8 workers x 4 prefetched + 2 held = 34 batches = 340 MB
    assert plan_shared_memory(340 * MB, b, 8, 4) == (8, 4, None)
    assert plan_shared_memory(0, b, 0, 4) == (0, 4, None)  # no workers: nothing crosses /dev/shm
    assert plan_shared_memory(339 * MB, b, 8, 4)[:2] == (8, 3)  # 26 batches
    assert plan_shared_memory(200 * MB, b, 8, 4)[:2] == (8, 2)  # 18 batches
    assert plan_shared_memory(100 * MB, b, 8, 4)[:2] == (8, 1)  # 10 batches
    workers, prefetch, notice = plan_shared_memory(99 * MB, b, 8, 4)
    assert (workers, prefetch) == (7, 1)  # 9 batches
    assert notice == ("note: /dev/shm has room for 99 MB of batches in this process (10.0 MB each): 7 workers "
                      "prefetching 1 instead of 8 prefetching 4; give it more (docker run --shm-size) to load faster")
    assert plan_shared_memory(30 * MB, b, 8, 4)[:2] == (1, 1)


def test_plan_shared_memory_error_names_dev_shm_sizes_and_fixes():
    # Docker's default 64 MB /dev/shm (the loader plans for half of it), 128-image batches, 8 workers
    b = 128 * 256 * 256 * 3 + mmap.PAGESIZE
    with pytest.raises(UsageError) as e:
        plan_shared_memory(32 * MB, b, 8, 4)
    assert str(e.value) == (
        "/dev/shm is too small for the data loader: it has room for 32 MB of batches in this process, one worker "
        "needs 72 MB (3 batches of 24.0 MB). Give the container more shared memory (docker run --shm-size=2g for "
        "8 workers prefetching 4), or load in the main process with --workers 0")
    assert shm_footprint(b, 8, 4) * 2 / (1 << 30) == pytest.approx(1.59, abs=0.01)  # hence 2g


def test_loader_sizes_prefetch_to_the_free_shared_memory(tiny_store, monkeypatch, capsys):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    store = ImageNetStore(tiny_store, "val")
    order = np.arange(len(store))
    b = 4 * 256 * 256 * 3 + mmap.PAGESIZE  # 4 images + the labels' page
    loader = BatchLoader(store, order, 4, workers=2, prefetch=4, planar=False, shm_free=2 * 5 * b)
    assert (loader.workers, loader.prefetch, loader.batch_bytes()) == (2, 1, b)  # 5 batches of room: 2 x 1 + 2
    assert "2 workers prefetching 1 instead of 2 prefetching 4" in capsys.readouterr().err
    got = list(loader)
    assert torch.equal(torch.cat([x for x, _ in got]), _reference(store, order))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two processes share the room
    with pytest.raises(UsageError, match=r"^/dev/shm is too small for the data loader"):
        BatchLoader(store, order, 4, workers=2, prefetch=4, shm_free=2 * 5 * b)


def _shm_bytes(pids):
    """/dev/shm pages held by torch's shared tensors of `pids` (mapped or held as file descriptors)."""
    sizes = {}
    for pid in pids:
        paths = []
        with contextlib.suppress(OSError):
            paths = [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
        for path in paths:
            with contextlib.suppress(OSError):
                if "/dev/shm/torch_" in os.readlink(path):
                    st = os.stat(path)
                    sizes[st.st_dev, st.st_ino] = -(-st.st_size // mmap.PAGESIZE) * mmap.PAGESIZE
        with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as f:
            for line in f:
                if "/dev/shm/torch_" in line:
                    fields = line.split()
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    major, minor = (int(x, 16) for x in fields[3].split(":"))
                    key = (os.makedev(major, minor), int(fields[4]))
                    sizes[key] = max(sizes.get(key, 0), end - start)
    return sum(sizes.values())


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc")
def test_measured_shared_memory_stays_within_the_footprint(tiny_store):
    store = ImageNetStore(tiny_store, "train")
    loader = BatchLoader(store, np.tile(np.arange(len(store)), 2), 8, workers=2, prefetch=2)
    peak, done = [0], threading.Event()

    def sample():
        me = os.getpid()
        while not done.is_set():
            kids = [int(p) for t in os.listdir(f"/proc/{me}/task")
                    for p in open(f"/proc/{me}/task/{t}/children").read().split()]
            peak[0] = max(peak[0], _shm_bytes([me, *kids]))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for _ in loader:
            time.sleep(0.1)  # a slow consumer: the workers fill every prefetch slot
    finally:
        done.set()
        sampler.join()
    assert 0 < peak[0] <= shm_footprint(loader.batch_bytes(), 2, 2)


def test_default_workers_shares_the_cores_among_local_processes(monkeypatch):
    assert default_workers(cores=16, processes=4) == 4
    assert default_workers(cores=3, processes=4) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_workers(cores=16) == 8
    assert default_workers() == max(1, len(os.sched_getaffinity(0)) // 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert default_workers() == len(os.sched_getaffinity(0))


# ---------------------------------------------------------------------------- --decode gpu, its CPU twin

def test_cpu_twin_of_gpu_decode_equals_the_workers_decode_exactly(tiny_store):
    store = ImageNetStore(tiny_store, "train")
    indices = np.arange(len(store))
    images = decode_batch(_encoded(store, indices), device="cpu")
    assert images.dtype == torch.uint8 and images.shape == (len(store), 256, 256, 3) and images.is_contiguous()
    assert torch.equal(images, _reference(store, indices))  # the same libjpeg-turbo call: bit-identical


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_decode_gpu_on_the_cpu_gives_the_workers_batches(tiny_store, workers):
    store = ImageNetStore(tiny_store, "val")
    order = np.arange(len(store))[::-1].copy()
    cpu = list(BatchLoader(store, order, 5, workers=workers, planar=False))
    gpu = list(BatchLoader(store, order, 5, workers=workers, decode="gpu"))
    assert [len(y) for _, y in gpu] == [5, 5, 5, 1]
    for (x, y), (x2, y2) in zip(cpu, gpu):
        assert torch.equal(x, x2) and torch.equal(y, y2) and x2.is_contiguous()
    on_cpu = list(BatchLoader(store, order, 5, workers=workers, device="cpu"))  # a CPU device: as device=None
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(cpu, on_cpu))


def test_image_batches_yields_the_store_in_order(tiny_store):
    store = ImageNetStore(tiny_store, "val")
    got = list(image_batches(store, [3, 1, 2], batch_size=2))
    assert [y.tolist() for _, y in got] == [[int(store.labels[3]), int(store.labels[1])], [int(store.labels[2])]]
    assert torch.equal(torch.cat([x for x, _ in got]), _reference(store, [3, 1, 2]))


# ---------------------------------------------------------------------------- the side stream

class FakeStream:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def wait_stream(self, other):
        self.log.append(("wait", self.name, other.name))


class FakeStreams:
    """CudaStreams' methods on CPU tensors, recording each call."""

    def __init__(self):
        self.log = []
        self.active = [FakeStream("compute", self.log)]

    def new(self):
        self.log.append(("new",))
        return FakeStream("side", self.log)

    def current(self):
        return self.active[-1]

    @contextlib.contextmanager
    def use(self, stream):
        self.active.append(stream)
        try:
            yield
        finally:
            self.active.pop()

    def record(self, tensor, stream):
        self.log.append(("record", int(tensor[0]), stream.name))


def test_ahead_copies_the_next_batch_on_a_side_stream_while_this_one_computes():
    streams = FakeStreams()
    log = streams.log
    batches = [(torch.full((2,), k), torch.full((2,), 10 + k)) for k in range(3)]

    def load(batch):
        log.append(("load", int(batch[0][0]), streams.current().name))
        return tuple(t.clone() for t in batch)

    for k, got in enumerate(ahead(batches, load, streams)):
        assert torch.equal(got[0], batches[k][0]) and torch.equal(got[1], batches[k][1])
        log.append(("compute", k))

    def hand_over(k):  # the compute stream waits for the side stream, then claims the batch's memory
        return [("wait", "compute", "side"), ("record", k, "compute"), ("record", 10 + k, "compute")]

    assert log == [("new",), ("load", 0, "side"),
                   *hand_over(0), ("load", 1, "side"), ("compute", 0),
                   *hand_over(1), ("load", 2, "side"), ("compute", 1),
                   *hand_over(2), ("compute", 2)]
    assert list(ahead([], load, FakeStreams())) == []


@needs_cuda
@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_cuda_loader_matches_the_cpu_batches(tiny_store, decode):
    store = ImageNetStore(tiny_store, "val")
    order = np.arange(len(store))
    cpu = list(BatchLoader(store, order, 5, planar=False))
    gpu = list(BatchLoader(store, order, 5, workers=1, pin_memory=True, decode=decode, device="cuda"))
    for (x, y), (x2, y2) in zip(cpu, gpu):
        assert x2.device.type == "cuda" and x2.shape == x.shape and torch.equal(y, y2.cpu())
        diff = (x.int() - x2.cpu().int()).abs()
        if decode == "cpu":
            assert torch.equal(x, x2.cpu())
        else:  # nvJPEG is another IDCT: not measured yet (no GPU where this was written); the figure is printed
            print(f"nvJPEG vs libjpeg-turbo: max |diff| {int(diff.max())}, mean {diff.float().mean():.4f}")
            assert diff.float().mean() < 1.0


# ---------------------------------------------------------------------------- a damaged store

@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """(store, source) of a pristine 2-class store (8 train, 4 val images) that tests copy before damaging."""
    base = tmp_path_factory.mktemp("small_store")
    source = make_demo_imagenet(str(base / "source"), 2, 4, 2, 0)
    build(source, str(base / "store"), workers=1, progress=False)
    return str(base / "store"), os.path.abspath(source)


def _damaged_copy(pristine, tmp_path, how):
    """Copy the store and damage train image 2 (in shard 0): 'truncate' the shard inside it or 'corrupt' it."""
    root = str(tmp_path / "store")
    shutil.copytree(pristine, root)
    store = ImageNetStore(root, "train")
    i = 2
    assert int(store.shards[i]) == 0 and int(store.shards[i + 1]) == 0
    shard = os.path.join(root, "train", shard_name(0))
    offset, length = int(store._offset[i]), int(store.encoded_lengths[i])
    if how == "truncate":
        os.truncate(shard, offset + length // 2)
    else:  # zero the quantisation tables: the JPEG markers stay, the decoder refuses it
        with open(shard, "r+b") as f:
            f.seek(offset + 10)
            f.write(bytes(20))
    return root, i, shard


def _expected(root, source, i, shard, why):
    name = ImageNetStore(root, "train").filenames[i]
    return (f"image store {root} is damaged: train image {i} ({name}) in {shard} cannot be read: {why}. "
            f"Check the store with `python data_prep/build_imagenet.py --out {root} --verify`; rebuild it into a "
            f"new folder with `python data_prep/build_imagenet.py --source {source} --out NEW_STORE --verify` "
            f"(a finished store is never rebuilt in place)")


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("how", ["truncate", "corrupt"])
def test_damaged_shard_stops_with_one_line_naming_shard_and_image(small_store, tmp_path, how, workers, decode):
    pristine, source = small_store
    root, i, shard = _damaged_copy(pristine, tmp_path, how)
    store = ImageNetStore(root, "train")
    if how == "truncate":  # the store's own complaint, read here directly
        with pytest.raises(OSError) as read:
            store.read_encoded(i)
        why = str(read.value)
    else:
        why = "Quantization table 0x00 was not defined"  # libjpeg-turbo's words for zeroed tables
    message = _failure(BatchLoader(store, np.arange(len(store)), 3, workers=workers, decode=decode))
    assert message == _expected(root, source, i, shard, why)


def _failure(loader):
    """The RunFailed text a pass over `loader` ends with (None if it ends well). Not pytest.raises: its
    traceback would keep the workers alive until a garbage collection, whose shutdown waits 5 s."""
    try:
        for _ in loader:
            pass
    except RunFailed as e:
        return str(e)


class _BusErrorStore:
    """A store whose every read kills the worker with SIGBUS, as a write to a full /dev/shm does."""

    labels, filenames = np.zeros(2, np.int64), ["a", "b"]

    def __len__(self):
        return 2

    def __getitem__(self, i):
        os.kill(os.getpid(), signal.SIGBUS)


def test_a_worker_bus_error_is_blamed_on_dev_shm():
    message = _failure(BatchLoader(_BusErrorStore(), [0, 1], 2, workers=1))
    assert message.startswith("a data loader worker died of a bus error, most likely /dev/shm ran full (")
    assert message.endswith(" MB free now): give the container more shared memory (docker run --shm-size) "
                            "or use --workers 0")

"""Epoch orders and a batch loader over an ImageNetStore (workers decode or read, the main process augments)."""
import mmap
import os
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate, get_worker_info
from torch.utils.data.distributed import DistributedSampler

from paper_repro.core.cli import RunFailed, UsageError
from paper_repro.data.decode import IMAGE_SHAPE, decode_batch, reason
from paper_repro.data.raw import RAW, first_unreadable, raw_shard_name, read_raw_batch
from paper_repro.data.store import decode_image, read_manifest, shard_name

SHM = "/dev/shm"
SHM_SHARE = 0.5  # of /dev/shm's free space a loader plans for: NCCL's intra-node transport uses it too
HELD = 2  # batches in /dev/shm beyond workers x prefetch, measured: the one in use and the one being received
MB = 1 << 20


def epoch_order(n, seed, epoch):
    """The shuffled order of n images in `epoch`: the permutation DistributedSampler(shuffle=True) uses."""
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    return torch.randperm(n, generator=g).numpy()


def shard_order(n, seed, epoch, rank=0, world_size=1):
    """This rank's share of epoch_order(n, seed, epoch), by DistributedSampler itself (padded to equal shares)."""
    sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))


def split_order(n, rank=0, world_size=1):
    """Indices 0..n-1 dealt round-robin, without padding: every image evaluated exactly once overall."""
    return np.arange(rank, n, world_size)


def local_processes():
    """Training processes on this machine (torchrun's LOCAL_WORLD_SIZE; 1 without it)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))


def default_workers(cores=None, processes=None):
    """--workers default: the cores this process may run on, shared among the machine's processes, at least 1."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // (local_processes() if processes is None else processes))


# ---------------------------------------------------------------------------- shared memory

def _pages(n):
    """n bytes rounded up to whole pages: each tensor a worker sends is its own /dev/shm file."""
    return -(-n // mmap.PAGESIZE) * mmap.PAGESIZE


def shm_footprint(batch_bytes, workers, prefetch):
    """Most bytes of /dev/shm one loader holds: workers x prefetch batches in flight, plus HELD in the main process."""
    return batch_bytes * (workers * prefetch + HELD)


def plan_shared_memory(free_bytes, batch_bytes, workers, prefetch, processes=1):
    """(workers, prefetch, notice or None) whose batches fit in free_bytes of /dev/shm; UsageError if none does.

    Worker batches cross to the main process through /dev/shm (under both of torch.multiprocessing's
    sharing strategies, file_descriptor and file_system: each maps a /dev/shm file), and a full /dev/shm
    kills a worker with a bus error. So: fewer batches in flight per worker first, then fewer workers.
    """
    if workers == 0 or shm_footprint(batch_bytes, workers, prefetch) <= free_bytes:
        return workers, prefetch, None
    for w, p in [(workers, p) for p in range(prefetch - 1, 0, -1)] + [(w, 1) for w in range(workers - 1, 0, -1)]:
        if shm_footprint(batch_bytes, w, p) <= free_bytes:
            return w, p, (f"note: /dev/shm has room for {free_bytes / MB:.0f} MB of batches in this process "
                          f"({batch_bytes / MB:.1f} MB each): {w} worker{'s' * (w > 1)} prefetching {p} "
                          f"instead of {workers} prefetching {prefetch}; give it more (docker run --shm-size) "
                          f"to load faster")
    want = shm_footprint(batch_bytes, workers, prefetch) * processes / SHM_SHARE
    raise UsageError(
        f"/dev/shm is too small for the data loader: it has room for {free_bytes / MB:.0f} MB of batches in this "
        f"process, one worker needs {shm_footprint(batch_bytes, 1, 1) / MB:.0f} MB ({1 + HELD} batches of "
        f"{batch_bytes / MB:.1f} MB). Give the container more shared memory (docker run --shm-size="
        f"{-(-want // (1 << 30)):.0f}g for {workers} workers prefetching {prefetch}), or load in the main "
        f"process with --workers 0")


def shm_free_bytes(path=SHM):
    """Bytes free in /dev/shm (None where there is none)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


# ---------------------------------------------------------------------------- a damaged store

class BadImage:
    """What a worker returns instead of a batch when an image cannot be read or decoded (picklable)."""

    def __init__(self, index, error):
        self.index, self.reason = int(index), reason(error)


def damaged_store_message(store, index, why):
    """One line naming the shard file and image that failed, and how to check and rebuild the store."""
    name_of = raw_shard_name if _is_raw(store) else shard_name
    shard = os.path.join(store.root, store.split, name_of(int(store.shards[index])))
    name = store.filenames[index] if 0 <= index < len(store.filenames) else "?"
    try:
        source = read_manifest(store.root)["settings"]["source"]
    except (OSError, ValueError, KeyError, TypeError):
        source = "SOURCE"
    return (f"image store {store.root} is damaged: {store.split} image {index} ({name}) in {shard} cannot be "
            f"read: {why}. Check the store with `python data_prep/build_imagenet.py --out {store.root} --verify`; "
            f"rebuild it into a new folder with `python data_prep/build_imagenet.py --source {source} "
            f"--out NEW_STORE --verify` (a finished store is never rebuilt in place)")


def _is_raw(store):
    return getattr(store, "store_format", "jpeg") == RAW


def raw_batch(store, indices, pin_memory=False):
    """read_raw_batch (in shared memory inside a worker), or a BadImage naming the first image that cannot be read."""
    try:
        return read_raw_batch(store, indices, pin_memory, shared=get_worker_info() is not None)
    except (OSError, ValueError) as e:
        return BadImage(*first_unreadable(store, indices, e))


# ---------------------------------------------------------------------------- what the workers do

class _GatherBatch(Dataset):
    """A raw store's batches read by worker processes (raw_workers > 0): value = raw_batch(store, indices)."""

    def __init__(self, store):
        self.store = store

    def __len__(self):
        return len(self.store)

    def __getitem__(self, indices):
        return raw_batch(self.store, indices)


class _DecodeBatch(Dataset):
    """Item = a list of store indices; value = (uint8 [B, H, W, 3], int64 [B]) or a BadImage. Runs in the workers.

    planar: store the batch channel by channel (its [B, H, W, 3] shape is a permuted view), which
    makes cutting and converting patches on the CPU much cheaper; the values are the same.
    """

    def __init__(self, store, planar=False):
        self.store, self.planar = store, planar

    def __len__(self):
        return len(self.store)

    def __getitem__(self, indices):
        images, labels = [], np.empty(len(indices), dtype=np.int64)
        for j, i in enumerate(indices):
            try:
                image, labels[j] = self.store[int(i)]
            except (OSError, RuntimeError, ValueError) as e:  # returned, not raised: the main process names it
                return BadImage(i, e)
            shape = getattr(self.store, "image_shape", IMAGE_SHAPE)  # 256x256x3, or a CIFAR store's 32x32x3
            if image.shape != shape:
                return BadImage(i, ValueError(f"it decodes to {image.shape}, not {shape}"))
            images.append(torch.from_numpy(image).permute(2, 0, 1) if self.planar else torch.from_numpy(image))
        # default_collate stacks straight into shared memory inside a worker, so the batch crosses to
        # the main process without the extra copy a plain tensor would get.
        batch = default_collate(images)
        return batch.permute(0, 2, 3, 1) if self.planar else batch, torch.from_numpy(labels)


class _ReadBatch(Dataset):
    """--decode gpu: value = (the batch's JPEG bytes concatenated (uint8), their lengths, labels, store indices)
    or a BadImage."""

    def __init__(self, store):
        self.store = store

    def __len__(self):
        return len(self.store)

    def __getitem__(self, indices):
        blobs = []
        for i in indices:
            try:
                blobs.append(self.store.read_encoded(int(i)))
            except (OSError, ValueError) as e:
                return BadImage(i, e)
        # One tensor per batch, not one per image: each tensor crossing from a worker is its own /dev/shm file.
        data = torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8)
        lengths = torch.tensor([len(b) for b in blobs], dtype=torch.int64)
        indices = np.asarray(indices, dtype=np.int64)
        return data, lengths, torch.from_numpy(self.store.labels[indices]), torch.from_numpy(indices)


class _BatchList(Sampler):
    """The index batches of the current epoch; the loader swaps them between epochs (workers persist)."""

    def __init__(self):
        self.batches = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


# ---------------------------------------------------------------------------- the next batch on the device

class CudaStreams:
    """The CUDA calls of ahead(); a test passes an object with the same methods that records them.

    These few lines are the loader's only CUDA-only code.
    """

    def __init__(self, device):
        self.device = torch.device(device)

    def new(self):
        """A side stream for the copies."""
        return torch.cuda.Stream(self.device)

    def current(self):
        """The stream the consumer computes on."""
        return torch.cuda.current_stream(self.device)

    def use(self, stream):
        """Context in which work (and allocation) goes to `stream`."""
        return torch.cuda.stream(stream)

    def record(self, tensor, stream):
        """Tell the caching allocator that `stream` uses `tensor`."""
        tensor.record_stream(stream)


def ahead(batches, load, streams=None):
    """Yield load(batch) for each batch, loading batch k+1 on a side stream before batch k is handed over.

    streams: CudaStreams(device) on a GPU (None: load in line). What is relied on (torch 2.x docs/source):
    - Work issued inside `with torch.cuda.stream(side)` is queued on `side`, and tensors allocated there
      belong to `side` in the caching allocator; the compute stream runs concurrently with it.
    - compute.wait_stream(side) (torch/cuda/streams.py: wait_event(side.record_event())) makes all work
      queued on compute later wait for what is queued on side now -- batch k's copy -- without blocking
      the host.
    - Tensor.record_stream(compute): "the caching allocator is aware of only the stream where a tensor was
      allocated"; without it, batch k's memory could be reused by the side stream's next copy while compute
      still reads it.
    - The pinned source of a non_blocking copy may be freed at once: the caching host allocator records an
      event on the copying stream and reuses the block only after it (aten/src/ATen/cuda/CachingHostAllocator.h).
    - decode_jpeg(device='cuda') decodes on torchvision's own stream and makes the current stream (here
      `side`) wait for it (torchvision/csrc/io/image/cuda/decode_jpegs_cuda.cpp), so --decode gpu composes.
    """
    if streams is None:
        for batch in batches:
            yield load(batch)
        return
    side = streams.new()
    batches = iter(batches)
    try:
        batch = next(batches)
    except StopIteration:
        return
    with streams.use(side):
        ready = load(batch)
    for batch in batches:
        current = _hand_over(ready, side, streams)  # before the next copy: compute waits for batch k's only
        with streams.use(side):
            ready = load(batch)
        yield current
    yield _hand_over(ready, side, streams)


def _hand_over(loaded, side, streams):
    compute = streams.current()
    compute.wait_stream(side)
    for t in loaded:
        streams.record(t, compute)
    return loaded


# ---------------------------------------------------------------------------- the loader

class BatchLoader:
    """Yields (uint8 tensor [B, 256, 256, 3], int64 labels [B]) in the order of `indices`.

    len() is the number of batches in the whole order; set_indices(indices, start=k) begins the
    next pass at batch k (resume). Workers persist across epochs and prefetch `prefetch` batches each
    (fewer, or fewer workers, where /dev/shm is small: plan_shared_memory; shm_free overrides its reading).
    decode="cpu": the workers decode with store[i]; "gpu": the workers only read the JPEG bytes and the
    main process decodes each batch on `device` with decode.decode_batch (on the CPU where device is None
    or the CPU: its tested twin).
    device: None yields CPU batches; a device yields batches there, batch k+1's copy (or decode) queued on
    a side stream while batch k computes (ahead()). pin_memory: for fast non_blocking copies to a GPU.
    planar (default: not pin_memory, i.e. for CPU consumers): the batches are stored channel by
    channel, a permuted [B, 256, 256, 3] view; same shape and values, cheaper to cut on the CPU.
    Batches for a GPU stay contiguous [B, 256, 256, 3], the layout the device gather is tuned for.
    A damaged image stops the pass with RunFailed naming the shard file and image (damaged_store_message).
    A raw store (store.store_format "raw") has nothing to decode: its batches are contiguous copies of
    slices (raw_batch), read in this process unless raw_workers > 0 (`workers`, `planar` and `decode` do not
    apply to it), and its images are store.image_shape.
    """

    def __init__(self, store, indices, batch_size, workers=0, pin_memory=False, drop_last=False, prefetch=4,
                 planar=None, decode="cpu", device=None, shm_free=None, raw_workers=0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if decode not in ("cpu", "gpu"):
            raise ValueError(f"decode must be 'cpu' or 'gpu', not {decode!r}")
        self.raw = _is_raw(store)
        if self.raw:
            workers, decode = raw_workers, "cpu"
        self.store, self.decode, self.pin_memory = store, decode, pin_memory
        self.device = None if device is None else torch.device(device)
        self.batch_size, self.drop_last = batch_size, drop_last
        self._batches = _BatchList()
        self.set_indices(indices)
        self.workers, self.prefetch = workers, prefetch
        if workers > 0:
            free = shm_free_bytes() if shm_free is None else shm_free
            if free is not None:
                processes = local_processes()
                self.workers, self.prefetch, notice = plan_shared_memory(
                    int(free * SHM_SHARE) // processes, self.batch_bytes(), workers, prefetch, processes)
                if notice:
                    print(notice, file=sys.stderr, flush=True)
        if self.raw:
            dataset = _GatherBatch(store)
        elif decode == "gpu":
            dataset, pin_memory = _ReadBatch(store), False  # nvJPEG stages the bytes in its own pinned buffers
        else:
            dataset = _DecodeBatch(store, not pin_memory if planar is None else planar)
        self._loader = DataLoader(
            dataset, batch_size=None, sampler=self._batches, num_workers=self.workers,
            pin_memory=pin_memory, persistent_workers=self.workers > 0,
            prefetch_factor=self.prefetch if self.workers > 0 else None,
            # Its own generator, so iterating never draws from the global RNG (dropout's): exact resume.
            generator=torch.Generator(),
        )

    def batch_bytes(self):
        """Most bytes one batch takes in shared memory on its way from a worker."""
        b = self.batch_size
        if self.raw:
            return _pages(b * int(np.prod(self.store.image_shape))) + _pages(8 * b)
        if self.decode == "cpu":  # images, labels
            return _pages(b * int(np.prod(getattr(self.store, "image_shape", IMAGE_SHAPE)))) + _pages(8 * b)
        lengths = np.asarray(self.store.encoded_lengths)  # the store's index of encoded sizes
        return _pages(int(np.sort(lengths)[-b:].sum())) + 3 * _pages(8 * b)  # bytes, lengths, labels, indices

    def set_indices(self, indices, start=0):
        """Use `indices` (in order) for the next pass, skipping its first `start` batches."""
        indices = np.asarray(indices, dtype=np.int64)
        cut = len(indices) // self.batch_size * self.batch_size if self.drop_last else len(indices)
        batches = [indices[i:i + self.batch_size].tolist() for i in range(0, cut, self.batch_size)]
        if not 0 <= start <= len(batches):
            raise ValueError(f"start batch {start} is outside 0..{len(batches)}")
        self.num_batches, self.start = len(batches), start
        self._batches.batches = batches[start:]

    def __len__(self):
        return self.num_batches

    def __iter__(self):
        in_process = self.raw and self.workers == 0
        batches = self._checked(self._raw_batches() if in_process else iter(self._loader))
        if self.decode == "gpu":
            load = self._decode
        elif self.device is None or self.device.type == "cpu":
            return batches
        else:
            load = self._copy
        cuda = self.device is not None and self.device.type == "cuda"
        return ahead(batches, load, CudaStreams(self.device) if cuda else None)

    def _checked(self, loaded):
        """The loaded batches; a BadImage becomes RunFailed naming it, a worker's bus error one about /dev/shm."""
        while True:
            try:
                batch = next(loaded)
            except StopIteration:
                return
            except RuntimeError as e:
                if not _bus_error(e):
                    raise
                raise RunFailed(f"a data loader worker died of a bus error, most likely /dev/shm ran full "
                                f"({(shm_free_bytes() or 0) / MB:.0f} MB free now): give the container more "
                                f"shared memory (docker run --shm-size) or use --workers 0") from None
            if isinstance(batch, BadImage):
                raise RunFailed(damaged_store_message(self.store, batch.index, batch.reason))
            yield batch

    def _raw_batches(self):
        """This pass's batches of a raw store, read in this process (pinned for a GPU)."""
        for indices in list(self._batches.batches):
            yield raw_batch(self.store, indices, self.pin_memory)

    def _copy(self, item):
        images, labels = item
        return images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def _decode(self, item):
        data, lengths, labels, indices = item
        indices = indices.tolist()
        encoded = torch.split(data, lengths.tolist())
        device = self.device or torch.device("cpu")
        try:
            images = decode_batch(encoded, device)
        except (RuntimeError, ValueError) as e:
            raise RunFailed(self._undecodable(encoded, indices, e)) from None
        return images, labels.to(device, non_blocking=True)

    def _undecodable(self, encoded, indices, error):
        """Name the image of a batch the decoder refused: the first the workers' decoder refuses too."""
        for buf, i in zip(encoded, indices):
            try:
                image = decode_image(buf.numpy().tobytes())
            except (OSError, RuntimeError, ValueError) as e:
                return damaged_store_message(self.store, i, reason(e))
            shape = getattr(self.store, "image_shape", IMAGE_SHAPE)
            if image.shape != shape:
                return damaged_store_message(self.store, i, f"it decodes to {image.shape}, not {shape}")
        return (f"the GPU decoder failed on a batch of {self.store.root}/{self.store.split} (images "
                f"{indices[0]}..{indices[-1]}) that the CPU decoder reads: {reason(error)}; use --decode cpu")


def _bus_error(error):
    """Whether a DataLoader failure is a worker killed by SIGBUS (torch chains "killed by signal: Bus error"
    under "exited unexpectedly")."""
    while error is not None:
        if "Bus error" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def image_batches(store, indices=None, batch_size=128, workers=0, pin_memory=False, decode="cpu", device=None):
    """Yield (uint8 B x 256 x 256 x 3, int64 labels) for store[indices] in order, each image decoded once
    (on `device` where one is given: see BatchLoader)."""
    indices = np.arange(len(store)) if indices is None else np.asarray(indices, dtype=np.int64)
    yield from BatchLoader(store, indices, batch_size, workers=workers, pin_memory=pin_memory, decode=decode,
                           device=device)

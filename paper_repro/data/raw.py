"""The raw store format: each shard one uint8 N x 3 x H x W .npy array; batches are runs of rows read with preadv.

A raw store (data_prep/build_imagenet.py --format raw) holds the prepared pixels themselves, so
reading an image is a memory copy, not a JPEG decode. Its index.npy has the JPEG store's columns
(shard, offset, length, label) with offset = the image's row in its shard and length = H*W*3.
Each shard is opened once per process: numpy's memory map (np.load(mmap_mode="r")) checks its
header and serves single images, and batches are read into their planar buffer with preadv, runs of
consecutive rows at a time. A store that fits in the page cache is read at memory speed after its
first epoch either way; preadv spares the first epoch a page fault per 4 KiB and keeps the pages out
of the process's memory (one quarter-width Imagewoof epoch peaked at 3.8 GiB through the map, 1.5 through preadv).

Channel by channel (planar), not H x W x 3: the net takes N x 3 x H x W, and TrainPatch cuts a
planar batch in about 60 % of the time an H x W x 3 one takes (results/benchmarks.md, issue 18),
so the transposition is done once, when the store is built, instead of in every epoch. Every
reader still sees H x W x 3: store[i] is a copy in that order, a batch a permuted view (as
BatchLoader's planar CPU batches of a JPEG store).
"""
import os

import numpy as np
import torch

RAW = "raw"          # settings["store_format"] of a raw store; a store without the key is a JPEG store
RAW_SUFFIX = ".npy"


def raw_shard_name(k):
    """File name of raw data shard k of a split."""
    return "shard-%05d%s" % (k, RAW_SUFFIX)


def store_format(settings):
    """"raw" or "jpeg": the format a store's recorded build settings say (stores from before the key: JPEG)."""
    return RAW if (settings or {}).get("store_format") == RAW else "jpeg"


class RawShards:
    """The shards of one split of a raw store: image(i) (from the memory map) and gather(indices, out) (preadv)."""

    def __init__(self, folder, shards, rows, image_shape):
        """shards, rows: the shard and the row of each image (index.npy's first two columns)."""
        self.folder, self.image_shape = folder, tuple(image_shape)
        self.shards, self.rows = np.asarray(shards, np.int64), np.asarray(rows, np.int64)
        self._maps, self._files, self._pid = {}, {}, None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_maps"], state["_files"], state["_pid"] = {}, {}, None  # maps and files are reopened by each process
        return state

    def path(self, k):
        """The file of shard k."""
        return os.path.join(self.folder, raw_shard_name(int(k)))

    def array(self, k):
        """Shard k as a read-only memory-mapped uint8 [n, 3, H, W] array (opened once per process)."""
        if self._pid != os.getpid():
            self._maps, self._files, self._pid = {}, {}, os.getpid()
        a = self._maps.get(k)
        if a is None:
            # np.load raises ValueError on a truncated file ("mmap length is greater than file size").
            a = np.load(self.path(k), mmap_mode="r")
            h, w, c = self.image_shape
            if a.dtype != np.uint8 or a.ndim != 4 or a.shape[1:] != (c, h, w):
                raise ValueError(f"{self.path(k)} holds {a.dtype} {a.shape}, not uint8 N x {c} x {h} x {w}")
            self._maps[k] = a
        return a

    def image(self, i):
        """A copy of image i (uint8 H x W x 3)."""
        k, r = int(self.shards[i]), int(self.rows[i])
        a = self.array(k)
        if r >= len(a):
            raise ValueError(f"{self.path(k)} has {len(a)} images; the index asks for row {r}")
        return np.ascontiguousarray(a[r].transpose(1, 2, 0))

    def _file(self, k):
        """(file descriptor, byte offset of row 0) of shard k, opened once per process after array(k) checked it."""
        a = self.array(k)
        f = self._files.get(k)
        if f is None:
            f = self._files[k] = (os.open(self.path(k), os.O_RDONLY), a.offset)
        return f

    def gather(self, indices, out):
        """Copy images `indices` into `out` (uint8 [len(indices), H, W, 3], fastest as a permuted view of a planar
        buffer: empty_batch); runs of consecutive rows in one shard are copied as one slice."""
        indices = np.asarray(indices, np.int64)
        if len(indices) == 0:
            return out
        # Into a planar buffer the rows are read with preadv, not copied from the memory map: reading a page
        # through the map first faults it into this process (a minor fault per 4 KiB: 0.78 s against 0.23 s
        # for an epoch of 9,025 images here), and every page so touched counts in the process's memory.
        planar = out.transpose(0, 3, 1, 2)
        direct = hasattr(os, "preadv") and planar.flags.c_contiguous and planar.flags.writeable
        k, r = self.shards[indices], self.rows[indices]
        # A run continues while the shard stays the same and the row goes up by one.
        breaks = np.flatnonzero((np.diff(k) != 0) | (np.diff(r) != 1)) + 1
        starts = np.concatenate([[0], breaks])
        ends = np.concatenate([breaks, [len(indices)]])
        for s, e in zip(starts.tolist(), ends.tolist()):
            a = self.array(int(k[s]))
            lo, hi = int(r[s]), int(r[s]) + (e - s)
            if hi > len(a):
                raise ValueError(f"{self.path(int(k[s]))} has {len(a)} images; the index asks for row {hi - 1}")
            if direct:
                fd, offset = self._file(int(k[s]))
                buf = memoryview(planar[s:e]).cast("B")
                got = os.preadv(fd, [buf], offset + lo * buf.nbytes // (e - s))
                if got != buf.nbytes:
                    raise ValueError(f"{self.path(int(k[s]))}: rows {lo}..{hi - 1} could not be read whole "
                                     f"({got} of {buf.nbytes} bytes); the file changed after it was opened")
            else:
                out[s:e] = a[lo:hi].transpose(0, 2, 3, 1)  # numpy copies in the order both share: planar
        return out

    def close(self):
        """Drop this process's memory maps and close its files."""
        if self._pid == os.getpid():
            for fd, _ in self._files.values():
                os.close(fd)
        self._maps, self._files = {}, {}


def empty_batch(n, image_shape):
    """An uninitialised uint8 [n, H, W, 3] array stored channel by channel (what gather fills fastest)."""
    h, w, c = image_shape
    return np.empty((n, c, h, w), np.uint8).transpose(0, 2, 3, 1)


def read_raw_batch(store, indices, pin_memory=False, shared=False):
    """(uint8 [B, H, W, 3], int64 [B]) of a raw store's images `indices`: slices of its shards copied into one
    planar batch (the [B, H, W, 3] a permuted view), pinned (for a GPU) or in shared memory (inside a DataLoader
    worker) when asked."""
    indices = np.asarray(indices, dtype=np.int64)
    h, w, c = store.image_shape
    out = torch.empty((len(indices), c, h, w), dtype=torch.uint8, pin_memory=pin_memory)
    if shared:
        out.share_memory_()  # before it is filled: the batch then crosses to the main process without a copy
    store.read_batch(indices, out.numpy().transpose(0, 2, 3, 1))
    return out.permute(0, 2, 3, 1), torch.from_numpy(store.labels[indices])


def first_unreadable(store, indices, error):
    """(index, error) of the first of `indices` that cannot be read alone (else the first, with `error`)."""
    for i in np.asarray(indices, dtype=np.int64).tolist():
        try:
            store[i]
        except (OSError, ValueError) as e:
            return i, e
    return int(indices[0]), error

"""Epoch orders and a batch loader over an ImageNetStore (workers decode, the main process augments)."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from torch.utils.data.distributed import DistributedSampler


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


class _DecodeBatch(Dataset):
    """Item = a list of store indices; value = (uint8 [B, H, W, 3], int64 [B]). Runs in the workers.

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
            image, labels[j] = self.store[int(i)]
            images.append(torch.from_numpy(image).permute(2, 0, 1) if self.planar else torch.from_numpy(image))
        # default_collate stacks straight into shared memory inside a worker, so the batch crosses to
        # the main process without the extra copy a plain tensor would get.
        batch = default_collate(images)
        return batch.permute(0, 2, 3, 1) if self.planar else batch, torch.from_numpy(labels)


class _BatchList(Sampler):
    """The index batches of the current epoch; the loader swaps them between epochs (workers persist)."""

    def __init__(self):
        self.batches = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


class BatchLoader:
    """Yields (uint8 tensor [B, 256, 256, 3], int64 labels [B]) in the order of `indices`.

    len() is the number of batches in the whole order; set_indices(indices, start=k) begins the
    next pass at batch k (resume). Workers decode with store[i], persist across epochs and
    prefetch `prefetch` batches each; pin_memory for fast non_blocking copies to a GPU.
    planar (default: not pin_memory, i.e. for CPU consumers): the batches are stored channel by
    channel, a permuted [B, 256, 256, 3] view; same shape and values, cheaper to cut on the CPU.
    Batches for a GPU stay contiguous [B, 256, 256, 3], the layout the device gather is tuned for.
    """

    def __init__(self, store, indices, batch_size, workers=0, pin_memory=False, drop_last=False, prefetch=4,
                 planar=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.drop_last = batch_size, drop_last
        self._batches = _BatchList()
        self.set_indices(indices)
        planar = not pin_memory if planar is None else planar
        self._loader = DataLoader(
            _DecodeBatch(store, planar), batch_size=None, sampler=self._batches, num_workers=workers,
            pin_memory=pin_memory, persistent_workers=workers > 0,
            prefetch_factor=prefetch if workers > 0 else None,
            # Its own generator, so iterating never draws from the global RNG (dropout's): exact resume.
            generator=torch.Generator(),
        )

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
        return iter(self._loader)

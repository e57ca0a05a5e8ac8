"""The store's training-set statistics: exact integer pixel sums, and the mean image and RGB PCA they give.

The build sums each shard as it writes it (PixelSums in the shard index and a .sums.npy beside
it), merges the shards' sums at the end, and --verify sums the stored pixels again the same way.
"""
import numpy as np
import torch

from data_prep.image_recipe import SIZE

SMALL_IMAGE = 64 * 64  # pixels; at most this many: summed in numpy (exact int64), else in torch (float64, exact)


def image_sums(img):
    """Exact integer partial sums of one decoded uint8 image: pixel sum [3], sum of x x^T [3,3]."""
    if img.shape[0] * img.shape[1] <= SMALL_IMAGE:
        # a CIFAR image: numpy's int64 product takes microseconds, torch's threads cost milliseconds to wake
        x = img.reshape(-1, 3).astype(np.int64)
        return x.sum(0), x.T @ x
    # float64 is exact here (every partial sum is an integer < 2**53); torch's matmul is 3x numpy's
    x = torch.from_numpy(img).reshape(-1, 3).to(torch.float64)
    return x.sum(0).numpy().astype(np.int64), (x.T @ x).numpy().astype(np.int64)


class PixelSums:
    """Exact sums over images: count, pixel sum [3], sum of x x^T [3,3], image sum [H,W,3] (the store's size)."""

    def __init__(self, count=0, pixel_sum=None, outer_sum=None, image_sum=None):
        self.count = int(count)
        self.pixel_sum = np.zeros(3, np.int64) if pixel_sum is None else np.asarray(pixel_sum, np.int64)
        self.outer_sum = np.zeros((3, 3), np.int64) if outer_sum is None else np.asarray(outer_sum, np.int64)
        # None until the first image: its shape is the store's (256x256, or CIFAR's native 32x32)
        self.image_sum = None if image_sum is None else np.asarray(image_sum, np.int64)

    def _add_image_sum(self, image_sum):
        if self.image_sum is None:
            self.image_sum = np.zeros(image_sum.shape, np.int64)
        self.image_sum += image_sum

    def add_image(self, img):
        """Add one decoded uint8 [H, W, 3] image (every image of a store has the same size)."""
        ps, os_ = image_sums(img)
        self.count += 1
        self.pixel_sum += ps
        self.outer_sum += os_
        self._add_image_sum(img)

    def add(self, other):
        """Add another PixelSums (a shard's) into this one."""
        self.count += other.count
        self.pixel_sum += other.pixel_sum
        self.outer_sum += other.outer_sum
        if other.image_sum is not None:
            self._add_image_sum(other.image_sum)

    def stats(self):
        """(stats.json content, float32 mean image) of the summed images."""
        return stats_from_sums(self.count, self.pixel_sum, self.outer_sum, self.image_sum)


def stats_from_sums(count, pixel_sum, outer_sum, image_sum):
    """stats.json content and the mean image from exact training-set sums."""
    if image_sum is None:  # no image summed: the store's recipe size
        image_sum = np.zeros((SIZE, SIZE, 3), np.int64)
    image_sum = np.asarray(image_sum)
    n = float(count) * image_sum.shape[0] * image_sum.shape[1]
    mean = np.asarray(pixel_sum, np.float64) / n
    cov = np.asarray(outer_sum, np.float64) / n - np.outer(mean, mean)
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = eigval[order], eigvec[:, order]
    # sign convention: the largest-magnitude component of each eigenvector is positive
    signs = np.sign(eigvec[np.abs(eigvec).argmax(0), np.arange(3)])
    eigvec = eigvec * np.where(signs == 0, 1, signs)
    stats = {"rgb_mean": mean.tolist(), "pca_eigval": eigval.tolist(), "pca_eigvec": eigvec.tolist(),
             "rgb_cov": cov.tolist(), "num_images": int(count), "num_pixels": int(n),
             "layout": "pca_eigvec[:, j] is the eigenvector of pca_eigval[j] (columns), 0-255 scale"}
    mean_image = (np.asarray(image_sum, np.float64) / max(count, 1)).astype(np.float32)
    return stats, mean_image

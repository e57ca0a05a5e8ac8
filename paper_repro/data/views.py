"""The paper's test-time views: four corner patches, the centre patch and their reflections."""
import torch

from paper_repro.data.augment import (centre_crop, check_mean_crop, check_path, cut_patch, cut_patch_centre_mean,
                                      mean_in_layout, one_thread, resolve_path)

# Order of the views in the output (per image). The centre comes first so that `--views 1` is the
# first of the ten; the reflections follow in the same order.
VIEW_NAMES = (
    "centre", "top-left", "top-right", "bottom-left", "bottom-right",
    "centre-flip", "top-left-flip", "top-right-flip", "bottom-left-flip", "bottom-right-flip",
)
IMAGE_SIZE = 256


def view_offsets(input_size, image_size=IMAGE_SIZE):
    """Return the (row, column) offsets of the five unreflected patches, in VIEW_NAMES order."""
    if not 0 < input_size <= image_size:
        raise ValueError(f"patch size {input_size} must be between 1 and the image size {image_size}")
    far = image_size - input_size
    mid = far // 2
    return ((mid, mid), (0, 0), (0, far), (far, 0), (far, far))


def _index_grids(input_size, views, image_size, device):
    """Row and column index grids (V x S x 1, V x 1 x S) that cut all views with one gather."""
    offsets = view_offsets(input_size, image_size)
    ar = torch.arange(input_size, device=device)
    rows, cols = [], []
    for flip in (False, True):
        for r, c in offsets:
            rows.append(r + ar)
            # A reflected patch reads its columns right to left; reading the mean image with the same
            # indices reflects the mean-subtracted patch, as the paper's "reflections of the patches".
            cols.append(c + ar.flip(0) if flip else c + ar)
    rows = torch.stack(rows)[:views]
    cols = torch.stack(cols)[:views]
    return rows[:, :, None], cols[:, None, :]


class TenViews:
    """Cut the paper's 10 test views (or the centre alone) from uint8 N x 256 x 256 x 3 batches.

    Output: float32 (N*V) x 3 x S x S, image-major (the V views of image 0 first), each patch minus
    the mean image at that patch's own location (mean_crop="position", the paper's per-pixel mean)
    or minus its centre crop (mean_crop="centre", the released code, which does so for all ten). Runs on the device of the batch, by one gather
    (path="gather", the GPU's) or by slices into one output (path="slices", the CPU's); "auto"
    picks by device, and the two give the same numbers bit for bit.
    """

    def __init__(self, mean_image, input_size=224, views=10, path="auto", mean_crop="position"):
        """Cut `views` views of size `input_size` from batches whose mean image is `mean_image` (H x H x 3)."""
        check_path(path, "TenViews")
        check_mean_crop(mean_crop, "TenViews")
        self.mean_crop = mean_crop
        if views not in (1, 10):
            raise ValueError(f"views must be 10 (the paper's test) or 1 (centre patch), got {views}")
        mean_image = torch.as_tensor(mean_image, dtype=torch.float32)
        if mean_image.ndim != 3 or mean_image.shape[2] != 3 or mean_image.shape[0] != mean_image.shape[1]:
            raise ValueError(f"mean image must be H x H x 3, got shape {tuple(mean_image.shape)}")
        self.mean_image = mean_image
        self.input_size = input_size
        self.views, self.path = views, path
        self.image_size = mean_image.shape[0]
        self._cache = {}
        self._cpu_mean = None  # the mean image stored channel-first, for the CPU path (made on first use)

    def _grids(self, device):
        key = str(device)
        if key not in self._cache:
            rows, cols = _index_grids(self.input_size, self.views, self.image_size, device)
            if self.mean_crop == "centre":
                mean = centre_crop(self.mean_image.to(device), self.input_size)  # S x S x 3, every view
            else:
                mean = self.mean_image.to(device)[rows, cols]  # V x S x S x 3
            self._cache[key] = (rows, cols, mean)
        return self._cache[key]

    def __call__(self, images, out=None):
        """The views of a uint8 N x 256 x 256 x 3 batch; `out` (CPU only): a float32 (N*V) x 3 x S x S
        tensor to write them into, so that a caller can reuse one buffer for every batch."""
        if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (
            self.image_size, self.image_size, 3,
        ):
            raise ValueError(
                f"expected a uint8 batch N x {self.image_size} x {self.image_size} x 3, "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        if resolve_path(self.path, images, "TenViews") == "slices":
            return self._cut_on_cpu(images, out)
        if out is not None:
            raise ValueError(f"TenViews: out= is for the slices path (CPU batches); this batch on {images.device} "
                             "is cut by the gather")
        rows, cols, mean = self._grids(images.device)
        patches = images[:, rows, cols]  # one gather: N x V x S x S x 3, still uint8
        patches = patches.float() - mean
        n, v, s = patches.shape[0], patches.shape[1], self.input_size
        return patches.permute(0, 1, 4, 2, 3).reshape(n * v, 3, s, s).contiguous()

    def _cut_on_cpu(self, images, out=None):
        """The CPU path: slices written into one preallocated output (the gather is slow on a CPU).

        Equal to the gather's result: each view is the same float32 subtraction, a reflected view
        reading the reflected patch and the reflected mean image (see augment.cut_patch).
        """
        if self._cpu_mean is None:
            self._cpu_mean = mean_in_layout(self.mean_image, channels_last=False)  # stored like the output
        n, v, s = images.shape[0], self.views, self.input_size
        if out is None:
            out = torch.empty(n * v, 3, s, s)
        elif out.shape != (n * v, 3, s, s) or out.dtype != torch.float32 or not out.is_contiguous() or out.is_cuda:
            raise ValueError(f"TenViews: out must be a contiguous float32 CPU tensor of shape {(n * v, 3, s, s)}, "
                             f"got {out.dtype} {tuple(out.shape)} on {out.device}")
        offsets = view_offsets(s, self.image_size)
        cuts = [(top, left, flip) for flip in (False, True) for top, left in offsets][:v]  # VIEW_NAMES order
        centre = centre_crop(self._cpu_mean[0], s) if self.mean_crop == "centre" else None
        with one_thread():  # image by image: one image's patches stay in cache (faster than view by view)
            for i in range(n):
                for k, (top, left, flip) in enumerate(cuts):
                    target = out[i * v + k].permute(1, 2, 0)
                    if centre is not None:
                        cut_patch_centre_mean(images[i], centre, top, left, s, flip, target)
                    else:
                        cut_patch(images[i], *self._cpu_mean, top, left, s, flip, target)
        return out

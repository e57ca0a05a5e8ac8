"""The paper's data augmentation over uint8 batches (N x 256 x 256 x 3), on any device.

Two paths compute the same numbers, bit for bit. "gather": crop and flip are one gather, so the
whole transform is a handful of kernels (the GPU's path). "slices": the CPU cuts each image by
slicing, straight into a preallocated output (there the gather is slow and single-threaded).
path="auto" takes the gather on a GPU and the slices on the CPU; tests run both on CPU tensors.
All randomness comes from an explicit CPU torch.Generator, so a batch's augmentation is the same
on every device and a resumed run can replay it exactly.
"""
import contextlib

import torch

PATHS = ("auto", "gather", "slices")
MEAN_CROPS = ("position", "centre")


def _patch_indices(offset_y, offset_x, flip, size):
    """Row and column indices (N x size each) of each image's patch; flipped patches read columns backwards."""
    ramp = torch.arange(size, device=offset_y.device)
    rows = offset_y[:, None] + ramp
    cols = torch.where(flip[:, None], offset_x[:, None] + (size - 1) - ramp, offset_x[:, None] + ramp)
    return rows, cols


def _gather(images, rows, cols):
    """images[n, rows[n, i], cols[n, j], :] for every n, i, j: N x size x size x C."""
    n = torch.arange(images.shape[0], device=images.device)
    return images[n[:, None, None], rows[:, :, None], cols[:, None, :]]


def _to_nchw(x, channels_last):
    # The NHWC result permuted to NCHW *is* the channels_last layout; copy only for contiguous NCHW.
    x = x.permute(0, 3, 1, 2)
    return x if channels_last else x.contiguous()


@contextlib.contextmanager
def one_thread():
    """Run the block with one intra-op thread: beside worker processes that keep the cores busy decoding,
    waiting for a second thread costs more than it saves (with the cores idle, more threads pay: all_threads)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _empty_patches(n, size, channels_last, pad=0):
    """Float output N x 3 x (size+pad) x (size+pad) in the layout asked for, with `pad` zero rows and columns at
    the bottom and right, and its N x size x size x 3 view of the patches to write into."""
    full = size + pad
    if channels_last:
        hwc = torch.empty(n, full, full, 3)
        out = hwc.permute(0, 3, 1, 2)
    else:
        out = torch.empty(n, 3, full, full)
        hwc = out.permute(0, 2, 3, 1)
    if pad:  # the zeros only where they go, as the net's own PadRightBottom
        hwc[:, size:].zero_()
        hwc[:, :size, size:].zero_()
    return out, hwc[:, :size, :size]


def _check_pad(pad, where):
    """`pad` if it is an integer >= 0, else a ValueError."""
    if not (isinstance(pad, int) and pad >= 0):
        raise ValueError(f"{where}: pad must be an integer >= 0 (zero rows and columns at the bottom and right); "
                         f"got {pad!r}")
    return pad


def _padded(x, pad):
    """N x 3 x H x W `x` with `pad` zero rows below and columns to the right (the gather path's padding)."""
    return torch.nn.functional.pad(x, (0, pad, 0, pad)) if pad else x


def mean_in_layout(mean, channels_last):
    """(mean, mean reflected left-right) as H x W x 3 views stored like an NCHW (or NHWC) output, for cut_patch."""
    # Stored like the output, subtracting a slice runs over both memories in order (vectorised).
    if not channels_last:
        mean = mean.permute(2, 0, 1).contiguous().permute(1, 2, 0)
    return mean, mean.flip(1)  # flip keeps the storage order


def cut_patch(image, mean, mean_flipped, top, left, size, flip, out):
    """out = image[top:top+size, left:left+size] - mean there (H x W x 3 each), reflected if flip.

    Slices instead of a gather: a reflected patch is a reflected copy of the image's patch minus
    the same place of mean_flipped (= mean.flip(1)). Converting to float, then subtracting, gives
    each value the gather's float32 rounding.
    """
    patch = image[top:top + size, left:left + size]
    if flip:
        # Reflect channel-first: cheap when the batch is stored that way (BatchLoader's planar batches).
        patch = patch.permute(2, 0, 1).flip(2).permute(1, 2, 0)
        mean, left = mean_flipped, mean.shape[1] - left - size
    out.copy_(patch)
    return out.sub_(mean[top:top + size, left:left + size])


def cut_patch_centre_mean(image, centre_mean, top, left, size, flip, out):
    """out = image[top:top+size, left:left+size] (reflected if flip) - centre_mean: the released code's mean.

    convdata.py subtracts the mean image's centre crop from every patch, whatever its place or flip.
    """
    patch = image[top:top + size, left:left + size]
    if flip:
        patch = patch.permute(2, 0, 1).flip(2).permute(1, 2, 0)
    out.copy_(patch)
    return out.sub_(centre_mean)


def centre_crop(mean, size):
    """The size x size centre of an H x W x C mean image (the patch CentrePatch cuts)."""
    top, left = (mean.shape[0] - size) // 2, (mean.shape[1] - size) // 2
    return mean[top:top + size, left:left + size]


def check_mean_crop(mean_crop, where):
    """Raise a ValueError unless `mean_crop` is one of MEAN_CROPS."""
    if mean_crop not in MEAN_CROPS:
        raise ValueError(f"{where}: mean_crop must be one of {MEAN_CROPS}; got {mean_crop!r}")


def _check_batch(images, where):
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[3] != 3:
        raise ValueError(f"{where}: expected a uint8 batch N x H x W x 3, got {images.dtype} {tuple(images.shape)}")


def check_path(path, where):
    """Raise a ValueError unless `path` is one of PATHS."""
    if path not in PATHS:
        raise ValueError(f"{where}: path must be one of {PATHS}; got {path!r}")


def resolve_path(path, images, where):
    """The path that cuts `images`: "auto" is the gather off the CPU and the slices on it; slices need a CPU batch."""
    if path == "auto":
        return "slices" if images.device.type == "cpu" else "gather"
    if path == "slices" and images.device.type != "cpu":
        raise ValueError(f"{where}: path='slices' cuts CPU batches; this batch is on {images.device} "
                         "(pass path='auto' or 'gather')")
    return path


def pack_draws(offset_y, offset_x, flip, shift):
    """One float32 N x 6 CPU tensor [offset_y, offset_x, flip, shift (3)]: a batch's draws in one copy to a device.

    Offsets below 2^24 and 0/1 flips are exact in float32, so unpack_draws returns them unchanged.
    """
    return torch.cat([offset_y[:, None].float(), offset_x[:, None].float(), flip[:, None].float(), shift], 1)


def unpack_draws(packed):
    """(offset_y, offset_x, flip, shift) from pack_draws' tensor, on its device."""
    return packed[:, 0].long(), packed[:, 1].long(), packed[:, 2] != 0, packed[:, 3:]


def draws_to(packed, device):
    """`packed` on `device` in one copy: pinned first when the device is a GPU, so the copy does not block the host."""
    if torch.device(device).type == "cuda":
        packed = packed.pin_memory()
    return packed.to(device, non_blocking=True)


class TrainPatch:
    """Random patch, horizontal flip (p=0.5), PCA colour noise, minus the mean image.

    Output: float32 N x 3 x size x size on the 0-255 scale, on the batch's device ((size + pad) square with
    `pad`: zero rows and columns at the bottom and right).
    colour_noise: "sqrt" adds eigvec @ (a * sqrt(eigval)) (the authors' code), "eigval" adds
    eigvec @ (a * eigval) (the paper's words taken literally), None adds nothing; a ~ N(0, noise_std)
    per image per use. mean_crop: "position" subtracts the mean image at the patch's place (the
    paper's per-pixel mean), "centre" its centre crop from every patch (the released code).
    rescale: while colour noise is on, divide the patch by 1 + noise_std (the released code, so the
    noisy training inputs keep the test inputs' scale). crop_chunk: consecutive images sharing one
    offset and flip (the released code's 32). noise_on: switched off by the released schedule.
    all_threads: the slices path cuts with torch's intra-op threads instead of one (for a loader without
    worker processes, whose cores are otherwise idle while it cuts); the same numbers either way.
    """

    def __init__(self, mean_image, eigval, eigvec, size=224, colour_noise="sqrt", noise_std=0.1,
                 flip=True, channels_last=False, path="auto", mean_crop="position", rescale=False, crop_chunk=1, pad=0,
                 all_threads=False):
        """The augmentation of section 4.1 (see the class docstring); `path` picks gather or slices (module docstring);
        `pad` zero rows and columns at the bottom and right (AlexNet's conv1 padding, written with the patch)."""
        if colour_noise not in ("sqrt", "eigval", None):
            raise ValueError(f"colour_noise must be 'sqrt', 'eigval' or None, got {colour_noise!r}")
        check_path(path, "TrainPatch")
        check_mean_crop(mean_crop, "TrainPatch")
        if not (isinstance(crop_chunk, int) and crop_chunk >= 1):
            raise ValueError(f"TrainPatch: crop_chunk must be an integer >= 1; got {crop_chunk!r}")
        self.mean_crop, self.rescale, self.crop_chunk, self.noise_on = mean_crop, bool(rescale), crop_chunk, True
        self.all_threads = bool(all_threads)
        self.mean_image = torch.as_tensor(mean_image, dtype=torch.float32)
        self._cpu_means = None  # (mean image, its reflection) for the slices path, made on first use
        self._device_means = {}  # device -> the mean image there, for the gather path
        self.size, self.flip, self.channels_last, self.path = size, flip, channels_last, path
        self.pad = _check_pad(pad, "TrainPatch")
        self.noise_std, self.colour_noise = noise_std, colour_noise
        eigval = torch.as_tensor(eigval, dtype=torch.float64)
        scale = {"sqrt": eigval.sqrt(), "eigval": eigval, None: torch.zeros(3, dtype=torch.float64)}[colour_noise]
        # shift = eigvec @ (a * scale) = (eigvec * scale) @ a: one 3x3 matrix applied to each image's a.
        self.noise_matrix = (torch.as_tensor(eigvec, dtype=torch.float64) * scale).float()
        h, w = self.mean_image.shape[:2]
        if size > min(h, w):
            raise ValueError(f"patch size {size} is larger than the {h}x{w} images")

    def draw(self, n, generator):
        """The random choices for n images: (offset_y, offset_x, flip, a) on the CPU."""
        h, w = self.mean_image.shape[:2]
        chunks = -(-n // self.crop_chunk)  # one offset and flip per chunk of consecutive images
        oy = torch.randint(0, h - self.size + 1, (chunks,), generator=generator)
        ox = torch.randint(0, w - self.size + 1, (chunks,), generator=generator)
        flip = torch.rand(chunks, generator=generator) < 0.5
        if self.crop_chunk > 1:
            oy, ox, flip = (t.repeat_interleave(self.crop_chunk)[:n] for t in (oy, ox, flip))
        if not self.flip:
            flip = torch.zeros_like(flip)
        a = torch.randn(n, 3, generator=generator) * self.noise_std
        return oy, ox, flip, a

    def shift(self, a):
        """Each image's colour shift eigvec @ (a * scale) (N x 3, on the CPU), from its draws `a`."""
        return a @ self.noise_matrix.T

    def __call__(self, images, generator):
        """Augment a uint8 N x 256 x 256 x 3 batch (any device) with randomness from `generator` (CPU)."""
        _check_batch(images, "TrainPatch")
        h, w = images.shape[1:3]
        if (h, w) != tuple(self.mean_image.shape[:2]):
            raise ValueError(f"TrainPatch: images are {h}x{w} but the mean image is "
                             f"{self.mean_image.shape[0]}x{self.mean_image.shape[1]}; pass the mean image "
                             f"of the store the batches come from (load_stats(STORE)['mean_image'])")
        oy, ox, flip, a = self.draw(images.shape[0], generator)
        # The shift is computed here, on the CPU, for both paths: every device adds the same numbers.
        noisy = self.colour_noise is not None and self.noise_on
        shift = self.shift(a) if noisy else None
        if resolve_path(self.path, images, "TrainPatch") == "slices":
            x = self._slices(images, oy, ox, flip, shift)
        else:
            x = self._gather(images, oy, ox, flip, shift)
        if noisy and self.rescale:
            x.div_(1.0 + self.noise_std)  # convdata.py: cropped /= 1 + color_noise_coeff
        return x

    def _gather(self, images, oy, ox, flip, shift):
        """The gather path: the draws reach the device in one copy, then crop + flip is one gather."""
        dev = images.device
        packed = pack_draws(oy, ox, flip, shift if shift is not None else torch.zeros(len(oy), 3))
        oy, ox, flip, shift_here = unpack_draws(draws_to(packed, dev))
        if str(dev) not in self._device_means:
            self._device_means[str(dev)] = self.mean_image.to(dev)
        mean = self._device_means[str(dev)]
        rows, cols = _patch_indices(oy, ox, flip, self.size)
        if self.mean_crop == "centre":
            x = _gather(images, rows, cols).float() - centre_crop(mean, self.size)
        else:
            x = _gather(images, rows, cols).float() - mean[rows[:, :, None], cols[:, None, :]]
        if shift is not None:
            x += shift_here[:, None, None, :]
        return _padded(_to_nchw(x, self.channels_last), self.pad)

    def _slices(self, images, oy, ox, flip, shift):
        """The slices path (CPU): per-image slices written into one preallocated output (equal to the gather's)."""
        if self._cpu_means is None:
            self._cpu_means = mean_in_layout(self.mean_image, self.channels_last)
        centre = centre_crop(self._cpu_means[0], self.size) if self.mean_crop == "centre" else None
        out, hwc = _empty_patches(images.shape[0], self.size, self.channels_last, self.pad)
        # One thread beside decoding workers; all of them when nothing else runs (batch of 128, two cores:
        # 46 -> 32 ms, results/benchmarks.md).
        with contextlib.nullcontext() if self.all_threads else one_thread():
            for n, (top, left, flipped) in enumerate(zip(oy.tolist(), ox.tolist(), flip.tolist())):
                if centre is not None:
                    cut_patch_centre_mean(images[n], centre, top, left, self.size, flipped, hwc[n])
                else:
                    cut_patch(images[n], *self._cpu_means, top, left, self.size, flipped, hwc[n])
                if shift is not None:
                    hwc[n].add_(shift[n])  # not hwc[n] += ...: its __setitem__ copies the patch onto itself
        return out


class CentrePatch:
    """The central patch minus the mean image there (per-epoch validation; no randomness)."""

    def __init__(self, mean_image, size=224, channels_last=False, path="auto", pad=0):
        """The centre `size` patch; `path`: "gather" (one kernel chain, the GPU's) or "slices" (CPU), and `pad`, as
        TrainPatch."""
        check_path(path, "CentrePatch")
        self.pad = _check_pad(pad, "CentrePatch")
        self.mean_image = torch.as_tensor(mean_image, dtype=torch.float32)
        self._device_means = {}
        self.size, self.channels_last, self.path = size, channels_last, path
        h, w = self.mean_image.shape[:2]
        self.top, self.left = (h - size) // 2, (w - size) // 2

    def __call__(self, images, generator=None):
        """Centre patch of a uint8 N x 256 x 256 x 3 batch as float N x 3 x size x size (+ `pad`, as TrainPatch)."""
        _check_batch(images, "CentrePatch")
        t, l, s = self.top, self.left, self.size
        if resolve_path(self.path, images, "CentrePatch") == "slices":
            out, hwc = _empty_patches(images.shape[0], s, self.channels_last, self.pad)
            # Convert, then subtract: one torch.sub of uint8 and float takes torch's unvectorised
            # casting loop, 1.5x slower on the CPU than these two passes (results/benchmarks.md).
            hwc.copy_(images[:, t:t + s, l:l + s, :])
            hwc.sub_(self.mean_image[t:t + s, l:l + s, :])
            return out
        if str(images.device) not in self._device_means:
            self._device_means[str(images.device)] = self.mean_image.to(images.device)
        mean = self._device_means[str(images.device)]
        x = images[:, t:t + s, l:l + s, :].float() - mean[t:t + s, l:l + s, :]
        return _padded(_to_nchw(x, self.channels_last), self.pad)


def batch_generator(seed, epoch, step, rank=0):
    """A CPU generator whose state depends only on (seed, epoch, step, rank): resume replays it exactly."""
    # Mix the four numbers with distinct odd multipliers (64-bit), so nearby batches get unrelated seeds.
    mixed = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + step * 0x94D049BB133111EB
             + rank * 0xD6E8FEB86659FD93) % (1 << 63)
    return torch.Generator().manual_seed(mixed)


"""CIFAR-10's data paths: cuda-convnet's cropped provider, its plain provider, and the paper's recipe at 32x32.

    convnet-crops  (convdata.py r561 CroppedCIFARDataProvider, --crop-border 4) training: a 24x24
                   crop at a uniform offset 0..8 on each axis and a horizontal flip with p = 0.5,
                   drawn afresh for every image every time; the mean subtracted is the CENTRE 24x24
                   of the per-pixel training mean, wherever the crop lies, after the flip (the mean
                   is not reflected); pixels stay 0-255.
                   Validation: the centre crop. Test (--multiview-test): ten views, the crops at
                   (y, x) = (0,0), (0,8), (4,4), (8,0), (8,8) and their reflections, softmax averaged.
    whole          (CIFARDataProvider) the whole 32x32 image minus the mean image; no augmentation.
    paper          the paper's recipe (data/augment.py TrainPatch, data/views.py TenViews): random
                   patches with flips and PCA colour noise, the mean image at the patch's own place,
                   the ten-view test; the tutorial net takes 28x28 patches (28/32 = 224/256).

Every class here takes uint8 batches N x 32 x 32 x 3 (any strides) and returns float32
N x 3 x S x S (N*V for the views) on the batch's device; randomness comes from an explicit CPU
generator, as the project's other transforms, so a resumed run replays it exactly.
"""
import torch

from paper_repro.data.augment import CentrePatch, TrainPatch, draws_to
from paper_repro.data.views import TenViews

INPUTS = ("convnet-crops", "whole", "paper")
BORDER = 4  # cuda-convnet's --crop-border default (convnet.py l.180)


def _check(images, size, where):
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[3] != 3:
        raise ValueError(f"{where}: expected a uint8 batch N x H x W x 3, got {images.dtype} {tuple(images.shape)}")
    if tuple(images.shape[1:3]) != (size, size):
        raise ValueError(f"{where}: images are {images.shape[1]}x{images.shape[2]} but the mean image is "
                         f"{size}x{size}; pass the mean image of the store the batches come from")


def _cut(images, mean, top, left, flip, size):
    """images[n, top[n]:+size, left[n]:+size], reflected where flip[n], minus `mean` (S x S x 3): N x 3 x S x S."""
    n = images.shape[0]
    # The CPU draws reach the device in one copy that does not block the host (draws_to)
    top, left, flip = draws_to(torch.stack([top.long(), left.long(), flip.long()]), images.device)
    ramp = torch.arange(size, device=images.device)
    rows = top[:, None] + ramp
    cols = left[:, None] + ramp
    cols = torch.where(flip[:, None] != 0, cols.flip(1), cols)
    idx = torch.arange(n, device=images.device)
    patches = images[idx[:, None, None], rows[:, :, None], cols[:, None, :]].float()  # N x S x S x 3
    # Not reflected with the crop: cuda-convnet flips the crop, then subtracts the (centre) mean (convdata.py l.85).
    return (patches - mean).permute(0, 3, 1, 2).contiguous()


class ConvnetCrops:
    """Training crops of cuda-convnet's cropped CIFAR provider (module docstring): random offset, flip, centre mean."""

    def __init__(self, mean_image, border=BORDER):
        self.mean_image = torch.as_tensor(mean_image, dtype=torch.float32)
        self.image, self.border = self.mean_image.shape[0], border
        self.size = self.image - 2 * border
        b = border
        self.centre_mean = self.mean_image[b:b + self.size, b:b + self.size]
        self._means = {}

    def _mean(self, device):
        if str(device) not in self._means:
            self._means[str(device)] = self.centre_mean.to(device)
        return self._means[str(device)]

    def draw(self, n, generator):
        """(top, left, flip) for n images: offsets uniform in 0..2*border, flip with p = 0.5 (CPU tensors)."""
        top = torch.randint(0, 2 * self.border + 1, (n,), generator=generator)
        left = torch.randint(0, 2 * self.border + 1, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5
        return top, left, flip

    def __call__(self, images, generator):
        """Float N x 3 x 24 x 24 crops of a uint8 N x 32 x 32 x 3 batch."""
        _check(images, self.image, "ConvnetCrops")
        top, left, flip = self.draw(images.shape[0], generator)
        return _cut(images, self._mean(images.device), top, left, flip, self.size)


class ConvnetViews(ConvnetCrops):
    """cuda-convnet's test views: the centre crop (views=1) or ten (corners, centre, reflections), centre mean.

    Output image-major (N*V) x 3 x 24 x 24, the centre first (as data/views.py orders the paper's ten),
    so that `evaluate --views 1` is the first view.
    """

    def __init__(self, mean_image, views=10, border=BORDER):
        super().__init__(mean_image, border)
        if views not in (1, 10):
            raise ValueError(f"views must be 10 (cuda-convnet's --multiview-test) or 1 (centre crop); got {views}")
        self.views = views
        b2 = 2 * border
        offsets = [(border, border), (0, 0), (0, b2), (b2, 0), (b2, b2)]  # centre, corners
        cuts = [(t, l, False) for t, l in offsets] + [(t, l, True) for t, l in offsets]
        self.cuts = cuts[:views]

    def __call__(self, images, generator=None, out=None):
        """The views of a uint8 batch; `out`: a float32 (N*V) x 3 x 24 x 24 tensor to write them into."""
        _check(images, self.image, "ConvnetViews")
        n, v = images.shape[0], self.views
        top = torch.tensor([c[0] for c in self.cuts]).repeat(n)
        left = torch.tensor([c[1] for c in self.cuts]).repeat(n)
        flip = torch.tensor([c[2] for c in self.cuts]).repeat(n)
        src = images.repeat_interleave(v, 0) if v > 1 else images
        result = _cut(src, self._mean(images.device), top, left, flip, self.size)
        if out is None:
            return result
        return out.copy_(result)


class WholeImage:
    """cuda-convnet's plain CIFAR provider: the whole image minus the mean image (training, validation and test)."""

    views = 1

    def __init__(self, mean_image):
        self.mean_image = torch.as_tensor(mean_image, dtype=torch.float32)
        self.size = self.mean_image.shape[0]
        self._means = {}

    def __call__(self, images, generator=None, out=None):
        """Float N x 3 x 32 x 32: every pixel minus the mean image's."""
        _check(images, self.size, "WholeImage")
        if str(images.device) not in self._means:
            self._means[str(images.device)] = self.mean_image.to(images.device)
        result = (images.float() - self._means[str(images.device)]).permute(0, 3, 1, 2).contiguous()
        return result if out is None else out.copy_(result)


def train_transforms(input, stats, input_size, colour_noise=None, noise_std=0.1, channels_last=False, **options):
    """(training transform, validation transform) of data path `input` for a net of `input_size`.

    options: TrainPatch's recipe options (mean_crop, rescale, crop_chunk) for the "paper" path.
    """
    mean = stats["mean_image"]
    if input == "convnet-crops":
        crops = ConvnetCrops(mean, border=(mean.shape[0] - input_size) // 2)
        return crops, ConvnetViews(mean, views=1, border=crops.border)
    if input == "whole":
        whole = WholeImage(mean)
        return whole, whole
    if input == "paper":
        return (TrainPatch(mean, stats["pca_eigval"], stats["pca_eigvec"], size=input_size, colour_noise=colour_noise,
                           noise_std=noise_std, channels_last=channels_last, **options),
                CentrePatch(mean, size=input_size, channels_last=channels_last))
    raise ValueError(f"input must be one of {INPUTS}; got {input!r}")


def eval_views(input, mean_image, input_size, views=None, mean_crop="position"):
    """The test views of data path `input` (views None: its own: 10, or 1 for whole images) and their number."""
    if input == "convnet-crops":
        v = 10 if views is None else views
        return ConvnetViews(mean_image, views=v, border=(mean_image.shape[0] - input_size) // 2), v
    if input == "whole":
        if views not in (None, 1):
            raise ValueError(f"a net trained on whole images has one test view, not {views}; drop --views")
        return WholeImage(mean_image), 1
    if input == "paper":
        v = 10 if views is None else views
        return TenViews(mean_image, input_size, v, mean_crop=mean_crop), v
    raise ValueError(f"input must be one of {INPUTS}; got {input!r}")

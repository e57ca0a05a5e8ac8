"""Batched JPEG decoding of the store's bytes: on a GPU with nvJPEG (--decode gpu), or its CPU twin.

decode_batch(encoded, device) is one function for both: torchvision.io.decode_jpeg on a list of byte
tensors, then one stack into the loader's uint8 N x 256 x 256 x 3 layout. With device='cpu' each image goes
through torch.ops.image.decode_jpeg, the libjpeg-turbo call the workers' decode (data.decode_image) makes,
so the CPU twin equals store[i] exactly (tests/test_loader.py). nvJPEG is another decoder (its own IDCT and
colour conversion); its pixels were not compared with libjpeg-turbo's here (no GPU): the CUDA test in
tests/test_loader.py measures the largest difference and prints it.
"""
import re
import warnings

import torch

from paper_repro.data.store import codecs

IMAGE_SHAPE = (256, 256, 3)  # every store image (data_prep/image_recipe.SIZE, RGB)

_LOCATION = re.compile(r"^\w+, \S+:\d+, ")  # torchvision's "decode_jpeg, /path/decode_jpeg.cpp:171, " prefix


def decode_batch(encoded, device="cpu"):
    """Decode 1-D uint8 CPU tensors of JPEG bytes into one contiguous uint8 N x 256 x 256 x 3 tensor on `device`."""
    device = torch.device(device)
    with warnings.catch_warnings():
        # torchvision >= 0.29 flags its codecs as deprecated (moving to torchcodec); the decoder is unchanged
        warnings.simplefilter("ignore", DeprecationWarning)
        # A list, not one call per image: on a GPU, torchvision decodes a list in one nvJPEG batch.
        io_ = codecs()
        images = io_.decode_jpeg(list(encoded), mode=io_.ImageReadMode.RGB, device=device)
    for j, image in enumerate(images):
        if tuple(image.shape) != (IMAGE_SHAPE[2], *IMAGE_SHAPE[:2]):
            raise ValueError(f"image {j} of the batch decodes to {tuple(image.shape)}, not 3 x 256 x 256")
    out = torch.empty((len(images), *IMAGE_SHAPE), dtype=torch.uint8, device=device)
    # Stacked into an HWC buffer: nvJPEG writes planes (a permuted view here), libjpeg-turbo writes HWC.
    return torch.stack([image.permute(1, 2, 0) for image in images], out=out)


def reason(error):
    """The decoder's complaint without torchvision's source-file prefix."""
    return _LOCATION.sub("", str(error)).strip() or type(error).__name__

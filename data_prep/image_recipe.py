"""The store's image recipe: any ILSVRC file -> 256x256 RGB (shorter side 256, central crop) -> JPEG.

Area averaging (PIL BOX) when shrinking and bicubic when enlarging, as the authors' data tool;
CMYK (incl. Adobe's inverted CMYK), greyscale, palette, alpha and 16-bit files become RGB; empty,
truncated, undecodable and absurdly large files raise SkipImage with the reason.
"""
import io
import zlib

import numpy as np
from PIL import Image

SIZE = 256
JPEG_QUALITY = 95          # chosen by measurement: results/store_format.md
JPEG_SUBSAMPLING = "4:4:4"  # no chroma subsampling: the colour-specific conv1 kernels need chroma detail
MAX_PIXELS = 89_478_485     # larger images are refused (decompression bombs); PIL's own warning limit
MAX_SIDE = 40_000
DRAFT_FROM = 4              # JPEG draft (DCT downscaling) only where a >= 2x area reduction remains after it
MAX_GUNZIP = 64 << 20      # a few ILSVRC-2010 files are gzipped JPEGs; no gzip bombs either


class SkipImage(Exception):
    """This file cannot become a store image; the message is the reason reported."""


def _target_geometry(w, h):
    """(box in source pixels, filter) so resize(box) == resize shorter side to 256, then centre crop."""
    short = min(w, h)
    new_w = SIZE if w == short else max(SIZE, round(w * SIZE / short))
    new_h = SIZE if h == short else max(SIZE, round(h * SIZE / short))
    left, top = (new_w - SIZE) // 2, (new_h - SIZE) // 2
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + SIZE) * sx, (top + SIZE) * sy)
    if short > SIZE:
        resample = Image.Resampling.BOX       # area averaging (the authors' tool: INTER_AREA)
    elif short < SIZE:
        resample = Image.Resampling.BICUBIC   # enlarging (the authors' tool: bicubic)
    else:
        resample = None                      # exact crop
    return box, resample


def _to_rgb_or_l(im):
    """Convert any PIL mode to RGB (or keep L, which resizes 3x cheaper and converts exactly later)."""
    if im.mode in ("RGB", "L"):
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im).astype(np.int64)
        scale = 257.0 if a.max(initial=0) > 255 else 1.0  # 16-bit data -> 8 bit
        return Image.fromarray(np.clip(a / scale + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "F":
        a = np.asarray(im)
        return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode in ("1", "LA", "La"):
        return im.convert("L")
    # CMYK (PIL undoes Adobe's inverted CMYK when decoding), P, PA, RGBA, RGBa, YCbCr, LAB, HSV.
    # Alpha is dropped (colours kept), as most image tools read such files.
    return im.convert("RGB")


def open_checked(data):
    """PIL image of `data` with its header checked (not decoded yet); SkipImage on bad input."""
    if len(data) == 0:
        raise SkipImage("empty file")
    if data[:2] == b"\x1f\x8b":  # a few ILSVRC-2010 files are gzipped JPEGs
        try:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            data = d.decompress(data, MAX_GUNZIP)
        except zlib.error as e:
            raise SkipImage(f"corrupt gzip data ({e})")
        if d.unconsumed_tail:
            raise SkipImage(f"refused: gzip data expands beyond {MAX_GUNZIP} bytes")
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise SkipImage(f"refused: absurd image dimensions (decompression bomb guard): {e}")
    except Image.UnidentifiedImageError:  # its message holds a memory address: a resumed build must repeat it
        raise SkipImage("not a decodable image (no image format PIL reads)")
    except Exception as e:
        raise SkipImage(f"not a decodable image ({type(e).__name__}: {e})")
    w, h = im.size
    if w < 1 or h < 1:
        raise SkipImage(f"refused: image has no pixels ({w}x{h})")
    if w * h > MAX_PIXELS or max(w, h) > MAX_SIDE:
        raise SkipImage(f"refused: absurd image dimensions {w}x{h} (limit {MAX_PIXELS} pixels, "
                        f"{MAX_SIDE} per side; decompression bomb guard)")
    return im


def prepare_pixels(data):
    """Encoded source image bytes -> the 256x256 RGB PIL image of the recipe (SkipImage if unusable)."""
    im = open_checked(data)
    w, h = im.size
    box, resample = _target_geometry(w, h)
    try:
        if im.format == "JPEG" and min(w, h) >= DRAFT_FROM * SIZE:
            # libjpeg's DCT-domain downscaling by 1/2 or 1/4, keeping >= 2x the final size so the
            # area filter below still does a >= 2x reduction (a drafted-to-~256 image is visibly
            # sharper/aliased vs area from full size; see results/store_format.md).
            im.draft(im.mode, (-(-w * 2 * SIZE // min(w, h)), -(-h * 2 * SIZE // min(w, h))))
            dw, dh = im.size
            box = (box[0] * dw / w, box[1] * dh / h, box[2] * dw / w, box[3] * dh / h)
        im.load()
        im = _to_rgb_or_l(im)
        if resample is None:
            x, y = round(box[0]), round(box[1])
            out = im.crop((x, y, x + SIZE, y + SIZE))
        else:
            out = im.resize((SIZE, SIZE), resample, box=box)
        if out.mode != "RGB":
            out = out.convert("RGB")
    except SkipImage:
        raise
    except Exception as e:  # truncated / corrupt data, unsupported codec variants
        raise SkipImage(f"truncated or corrupt image data ({type(e).__name__}: {e})")
    return out


def encode_jpeg(im):
    """JPEG bytes of a store image, with the store's quality and chroma subsampling."""
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=JPEG_SUBSAMPLING)
    return buf.getvalue()


def prepare_image(data):
    """Encoded source image bytes -> JPEG bytes of the 256x256 RGB store image (SkipImage if unusable)."""
    return encode_jpeg(prepare_pixels(data))


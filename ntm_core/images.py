"""Images in and out of the models, in one place.

Every model works on images [C, H, W] with values in [−1, 1] (*model scaling*: pixel value v ↦ v / 127.5 − 1).
Files, PIL images and uint8 arrays hold pixel values 0…255. The pipelines, the datasets, the evaluator and the app
convert only through these functions.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image, ImageOps

MAX_PIXELS = 4096 * 4096  # refuse larger images before decoding them (a 500 kB PNG can declare 13000 × 13000)


def from_pixels(values: torch.Tensor) -> torch.Tensor:
    """Pixel values 0…255 (any dtype, any layout) → float32 in model scaling."""
    return values.float() / 127.5 - 1.0


def from_uint8(array: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, C] or [H, W] → float32 [C, H, W] in model scaling (a copy: PIL arrays are read-only); a batch
    [B, H, W, C] (what `to_uint8` returns) → [B, C, H, W]."""
    t = torch.tensor(array)
    return from_pixels(t[None] if t.dim() == 2 else t.movedim(-1, -3))


def to_uint8(x) -> np.ndarray:
    """Model scaling → uint8 pixels, channels last: [C, H, W] → [H, W, C], [B, C, H, W] → [B, H, W, C]. Rounds
    half up and clips. A uint8 array passes through; numpy float arrays are read like tensors."""
    if isinstance(x, np.ndarray):
        if x.dtype == np.uint8:
            return x
        x = torch.from_numpy(x)
    x = x.detach().cpu().float()
    pixels = ((x + 1.0) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8)
    return pixels.movedim(-3, -1).numpy()


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Model scaling → [0, 1] (clipped), the range pixel-distance metrics (MSE, PSNR) are quoted in."""
    return (x.clamp(-1, 1) + 1) / 2


def _eight_bit(im: Image.Image) -> Image.Image:
    """16- and 32-bit integer images scaled to 8 bits (Pillow's convert() would clip them to white)."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if im.mode == "F" and arr.max(initial=0) <= 1.0:
            top = 1.0
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return im


def load(source, size: int, channels: int = 3) -> torch.Tensor:
    """Any image (a path, a file object, a PIL image or a uint8 array) → [channels, size, size] in model scaling:
    EXIF-rotated, 16-bit scaled to 8, resized on the shorter side, centre-cropped. Raises ValueError with the reason
    (and the file's name, never its folder) when it is not readable or has more than MAX_PIXELS pixels."""
    if isinstance(source, np.ndarray):
        source = Image.fromarray(source)
    name = "the image" if isinstance(source, Image.Image) else os.path.basename(str(getattr(source, "name", source)))
    try:
        with (source.copy() if isinstance(source, Image.Image) else Image.open(source)) as im:
            if im.width * im.height > MAX_PIXELS:  # the header is read, the pixels are not yet
                raise ValueError(f"{im.width} × {im.height} pixels is too large (at most {MAX_PIXELS:,} pixels)")
            im.draft("RGB" if channels == 3 else "L", (size, size))  # JPEG: decode at a reduced scale
            im = ImageOps.exif_transpose(_eight_bit(im))
            im = im.convert("RGB" if channels == 3 else "L")
            im = ImageOps.fit(im, (size, size), method=Image.Resampling.BICUBIC)
    except Exception as e:  # PIL raises many types for bad data; one clear error for the caller
        reason = str(e).replace(str(source), name) if not isinstance(source, Image.Image) else str(e)
        raise ValueError(f"cannot read image {name}: {reason}") from e
    return from_uint8(np.asarray(im))

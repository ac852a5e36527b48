"""A user's own images with captions: Hugging Face imagefolder (`metadata.jsonl` with `file_name` and `text`),
or images with sidecar `.txt` captions. Unreadable files are reported (which, why) and skipped."""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import torch
from PIL import Image, ImageOps

from .shapes import to_tensor

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


MAX_PIXELS = 4096 * 4096  # refuse larger images before decoding them (a 500 kB PNG can declare 13000 × 13000)


def _eight_bit(im: Image.Image) -> Image.Image:
    """16- and 32-bit integer images scaled to 8 bits (Pillow's convert() would clip them to white)."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if im.mode == "F" and arr.max(initial=0) <= 1.0:
            top = 1.0
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return im


def load_image(source, size: int, channels: int = 3) -> torch.Tensor:
    """Any image (a path, a file object or a PIL image) → [channels, size, size] in [−1, 1]: EXIF-rotated,
    16-bit scaled to 8, resized on the shorter side, centre-cropped. Raises ValueError with the reason (and the
    file's name, never its folder) when it is not readable or has more than MAX_PIXELS pixels."""
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
    arr = np.asarray(im)
    return to_tensor(arr[..., None] if arr.ndim == 2 else arr)


class ImageFolderDataset(torch.utils.data.Dataset):
    """{'image': [channels, size, size] in [−1, 1], 'caption': str, 'file': str}. `skipped` lists (file, reason)."""

    def __init__(self, root: str, image_size: int = 32, channels: int = 3):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {root} does not exist")
        self.root, self.image_size, self.channels = root, image_size, channels
        self.skipped: list[tuple[str, str]] = []
        entries = self._metadata_entries() if os.path.exists(os.path.join(root, "metadata.jsonl")) \
            else self._sidecar_entries()
        self.items: list[tuple[str, str]] = []
        inside = os.path.realpath(root) + os.sep
        for path, text in entries:
            if not os.path.realpath(path).startswith(inside):  # "../..", absolute names, links out: never opened
                self._skip(path, "outside the dataset folder (file names are relative to it)")
                continue
            try:
                load_image(path, image_size, channels)  # decode once now, so a bad file is reported up front
            except ValueError as e:
                self._skip(path, str(e))
                continue
            self.items.append((path, text))
        if not self.items:
            raise ValueError(f"no readable captioned images in {root} ({len(self.skipped)} skipped)")

    def _skip(self, path: str, reason: str) -> None:
        self.skipped.append((os.path.relpath(path, self.root), reason))
        log.warning("skipping %s: %s", path, reason)

    def _metadata_entries(self):
        with open(os.path.join(self.root, "metadata.jsonl"), encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    yield os.path.join(self.root, row["file_name"]), str(row["text"])
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    self._skip(os.path.join(self.root, f"metadata.jsonl:{n}"), f"bad metadata line ({e!r})")

    def _sidecar_entries(self):
        for dirpath, _, files in sorted(os.walk(self.root)):
            for name in sorted(files):
                if not name.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                path = os.path.join(dirpath, name)
                txt = os.path.splitext(path)[0] + ".txt"
                if not os.path.exists(txt):
                    self._skip(path, "no caption (.txt beside it, or metadata.jsonl)")
                    continue
                with open(txt, encoding="utf-8", errors="replace") as f:
                    yield path, f.read().strip()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        path, text = self.items[i]
        return {"image": load_image(path, self.image_size, self.channels), "caption": text,
                "file": os.path.relpath(path, self.root)}

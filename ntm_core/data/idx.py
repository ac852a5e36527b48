"""MNIST and Fashion-MNIST from their IDX files (gzipped or not), with captions from the labels."""
from __future__ import annotations

import gzip
import os

import numpy as np
import torch
import torch.nn.functional as F

from ..images import from_uint8

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FASHION = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
DATASETS = {
    "mnist": lambda y: f"a handwritten digit {DIGITS[y]}",
    "fashion-mnist": lambda y: f"a photo of {'an' if FASHION[y][0] in 'aeiou' else 'a'} {FASHION[y]}",
}
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: str) -> np.ndarray:
    """Parse an IDX file: big-endian magic (0x08 = uint8, number of dims in the low byte), sizes, then data."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = offset + int(np.prod(dims))
    if len(raw) != expected:
        raise ValueError(f"{path}: {len(raw)} bytes, expected {expected} for shape {dims}")
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(dims)


def _find(root: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        if os.path.exists(os.path.join(root, name)):
            return os.path.join(root, name)
    raise FileNotFoundError(f"no {stem}[.gz] in {root}")


class IdxDataset(torch.utils.data.Dataset):
    """{'image': [channels, size, size] in [−1, 1], 'caption': str, 'label': int}.

    28×28 images are zero-padded to `image_size` when it is larger (32 for patch size 4), resized otherwise;
    `channels` = 3 repeats the grey channel for RGB models."""

    def __init__(self, root: str, name: str = "mnist", split: str = "train", image_size: int = 32, channels: int = 1):
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
        if split not in FILES:
            raise ValueError(f"split must be one of {sorted(FILES)}")
        img_stem, lab_stem = FILES[split]
        self.images = read_idx(_find(root, img_stem))
        self.labels = read_idx(_find(root, lab_stem))
        if len(self.images) != len(self.labels):
            raise ValueError(f"{root}: {len(self.images)} images but {len(self.labels)} labels")
        self.name, self.image_size, self.channels = name, image_size, channels

    def __len__(self) -> int:
        return len(self.labels)

    def caption(self, label: int) -> str:
        return DATASETS[self.name](int(label))

    def __getitem__(self, i: int) -> dict:
        x = fit(from_uint8(self.images[i])[None], self.image_size, self.channels)[0]
        return {"image": x, "caption": self.caption(self.labels[i]), "label": int(self.labels[i])}


def fit(x: torch.Tensor, image_size: int, channels: int) -> torch.Tensor:
    """Grey images [B, 1, h, w] in model scaling → [B, channels, image_size, image_size]: padded with black when
    the size is larger, resized when smaller. One function for the host items and the device batches."""
    h = x.shape[-1]
    if image_size >= h:
        pad = image_size - h
        x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), value=-1.0)
    else:
        x = F.interpolate(x, size=(image_size,) * 2, mode="bilinear", antialias=True)
    return x.expand(-1, channels, -1, -1).contiguous()

"""A user's own images with captions: Hugging Face imagefolder (`metadata.jsonl` with `file_name` and `text`),
or images with sidecar `.txt` captions. Unreadable files are reported (which, why) and skipped."""
from __future__ import annotations

import json
import logging
import os

import torch

from ..images import load as load_image

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


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

"""Datasets the project generates or reads. Every item is a dict with 'image' ([C, H, W] in [−1, 1]) and
'caption' (str), plus dataset-specific fields."""
from __future__ import annotations

import torch


def collate(items: list[dict]) -> dict:
    """Stack the images; keep every other field as a list (captions, specs, labels, file names)."""
    out = {"image": torch.stack([it["image"] for it in items])}
    for key in items[0]:
        if key != "image":
            out[key] = [it[key] for it in items]
    return out

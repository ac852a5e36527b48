"""Datasets the project generates or reads. Every item is a dict with 'image' ([C, H, W] in [−1, 1]) and
'caption' (str), plus dataset-specific fields."""
from __future__ import annotations

import functools

import torch


def collate(items: list[dict]) -> dict:
    """Stack the images; keep every other field as a list (captions, specs, labels, file names)."""
    out = {"image": torch.stack([it["image"] for it in items])}
    for key in items[0]:
        if key != "image":
            out[key] = [it[key] for it in items]
    return out


def caption_vocabulary(kind: str | None) -> frozenset[str] | None:
    """The words a dataset's captions use (None when unknown, e.g. a user's image folder)."""
    if kind == "shapes":
        from .shapes import VOCABULARY

        return VOCABULARY
    if kind in ("mnist", "fashion-mnist"):
        from .idx import DATASETS

        return frozenset(w for y in range(10) for w in DATASETS[kind](y).split())
    return None


def example_prompts(kind: str | None) -> list[str]:
    """A few captions of the kind the dataset's model was trained on (the held-out shapes split for shapes). A copy
    of a per-process cache: the shapes ones cost ~0.2 s to draw and the app asks on every model change."""
    return list(_example_prompts(kind))


@functools.lru_cache(maxsize=None)
def _example_prompts(kind: str | None) -> tuple[str, ...]:
    if kind in ("mnist", "fashion-mnist"):
        from .idx import DATASETS

        return tuple(DATASETS[kind](y) for y in (7, 3, 0, 5, 1, 8))
    if kind == "shapes":
        from .shapes import ShapesDataset

        return tuple(ShapesDataset("test", seed=s).caption_at(0) for s in range(6)) + (
            "a red circle", "two green triangles", "a blue square to the left of a yellow circle")
    return ()

"""A GenEval-like scorer for the shapes dataset: does an image satisfy its prompt's spec?

Objects are found by colour segmentation (each channel thresholded at mid-grey, so a pixel is one of the six
colours or background) and connected components; a component's kind comes from how much of its bounding box it
fills (square ≈ 1, circle ≈ π/4, triangle ≈ 1/2). Per category the check is strict, as GenEval's:
exact counts, the right colours and kinds, and for position the relation of the two objects' centroids.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from ntm_core.data.shapes import CATEGORIES, COLORS, Spec
from ntm_core.images import to_uint8

MIN_AREA = 12  # px; smaller blobs are noise, not objects (the smallest rendered shape covers ≥ 30 px)


def classify_kind(mask: np.ndarray) -> str:
    """Corners of the bounding box first (a square fills all four, an upright triangle only the bottom two,
    a circle none), then how much of the box is filled (square ≈ 1, circle ≈ π/4, triangle ≈ 1/2)."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    tl, tr, bl, br = mask[y0, x0], mask[y0, x1], mask[y1, x0], mask[y1, x1]
    fill = mask.sum() / ((y1 - y0 + 1) * (x1 - x0 + 1))
    if tl and tr and bl and br and fill > 0.8:
        return "square"
    if bl and br and not (tl or tr):
        return "triangle"
    return "circle" if fill > 0.64 else "triangle"


def detect_objects(image, min_area: int = MIN_AREA) -> list[dict]:
    """image: uint8 [H, W, 3], or [3, H, W] in model scaling (a tensor or an array)."""
    img = to_uint8(image)
    bits = img > 127
    objects = []
    for name, rgb in COLORS.items():
        colour_mask = np.all(bits == (np.array(rgb) > 0), axis=-1)
        labels, n = ndimage.label(colour_mask)
        for i in range(1, n + 1):
            comp = labels == i
            area = int(comp.sum())
            if area < min_area:
                continue
            ys, xs = np.nonzero(comp)
            objects.append({"colour": name, "kind": classify_kind(comp), "cy": ys.mean() + 0.5,
                            "cx": xs.mean() + 0.5, "area": area})
    return objects


def _relation(a: dict, b: dict) -> str:
    dy, dx = a["cy"] - b["cy"], a["cx"] - b["cx"]
    if abs(dx) > abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def _spec(spec: Spec | dict) -> Spec:
    return Spec.from_dict(spec) if isinstance(spec, dict) else spec


def _satisfies(spec: Spec, found: list[dict]) -> bool:
    got = sorted((o["colour"], o["kind"]) for o in found)
    if spec.category == "counting":
        return got == [tuple(spec.objects[0])] * spec.count
    if spec.category == "single_object":
        return got == [tuple(spec.objects[0])]
    if spec.category in ("two_object", "color_attr"):
        return got == sorted(tuple(o) for o in spec.objects)
    if spec.category == "position":
        if got != sorted(tuple(o) for o in spec.objects):
            return False
        a = next(o for o in found if (o["colour"], o["kind"]) == tuple(spec.objects[0]))
        b = next(o for o in found if (o["colour"], o["kind"]) == tuple(spec.objects[1]))
        return _relation(a, b) == spec.relation
    raise ValueError(f"unknown category {spec.category!r}")


def _same_colours(spec: Spec, found: list[dict]) -> bool:
    return {o["colour"] for o in found} == {c for c, _ in spec.objects}


def check(spec: Spec | dict, image) -> bool:
    """True iff the image satisfies the spec."""
    return _satisfies(_spec(spec), detect_objects(image))


def colours_match(spec: Spec | dict, image) -> bool:
    """A weaker, diagnostic check: the image's objects have exactly the prompt's colours (kinds, counts and
    positions ignored). Tells apart models that are all at the floor of the strict score."""
    return _same_colours(_spec(spec), detect_objects(image))


def score(images, specs) -> pd.DataFrame:
    """Per-category accuracy and 'overall' (the mean of the category accuracies, as GenEval reports); the
    column colour_match is the same for `colours_match`. Objects are detected once per image for both."""
    rows = []
    for im, s in zip(images, specs):
        spec, found = _spec(s), detect_objects(im)
        rows.append({"category": spec.category, "correct": _satisfies(spec, found),
                     "colour_match": _same_colours(spec, found)})
    df = pd.DataFrame(rows)
    order = [c for c in CATEGORIES if c in set(df.category)]
    per = df.groupby("category").agg(score=("correct", "mean"), colour_match=("colour_match", "mean"),
                                     n=("correct", "count")).reindex(order)
    per.loc["overall"] = [per["score"].mean(), per["colour_match"].mean(), per["n"].sum()]
    return per

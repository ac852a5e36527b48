"""A GenEval-like scorer for the shapes dataset: does an image satisfy its prompt's spec?

Objects are found by colour segmentation (each channel thresholded at mid-grey, so a pixel is one of the six
colours or background) and connected components. A component is a shape only if one of the dataset's own ideal
shapes (shapes.inside, at sizes around the component's box and sub-pixel centres) overlaps it by IoU ≥ FIT_IOU,
at a size the dataset draws (± 1 px); its kind is the best-fitting one. Anything else is an "unrecognised" object,
which fails every prompt — as GenEval's detector sees no object in a smear, and a blob or a cluster of patch
fragments is not "a circle". Per category the check is strict, as GenEval's: exact counts, the right colours and
kinds, and for position the relation of the two objects' centroids.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from ntm_core.data.shapes import CATEGORIES, COLORS, KINDS, Spec, inside, shape_sizes
from ntm_core.images import to_uint8

MIN_AREA = 12  # px; smaller blobs are noise, not objects (the smallest rendered shape covers ≥ 30 px)
FIT_IOU = 0.8  # real shapes fit at IoU ≥ 0.94 (889 shapes of 500 held-out images); patch fragments mostly < 0.75
NUMBER_WORDS = {1: "a", 2: "two", 3: "three", 4: "four", 5: "five"}
_OFFSETS = np.arange(-0.5, 0.51, 0.25)  # sub-pixel centres tried around the box centre


def box_side(ys: np.ndarray, xs: np.ndarray) -> int:
    """The longer side, in px, of the box around a component's pixels."""
    return int(max(np.ptp(ys), np.ptp(xs))) + 1


def drawn_side(side: int, image_size: int) -> bool:
    """Whether a box side is one the dataset draws at this image size, ± 1 px (`shape_sizes`)."""
    lo, hi = shape_sizes(image_size)
    return lo - 1 <= side <= hi + 1


def fit_shape(mask: np.ndarray) -> tuple[str | None, float]:
    """(kind, IoU) of the ideal shape that overlaps the component best; kind is None when the component is no
    shape the dataset draws (its box outside the drawn sizes ± 1 px, or no kind reaching FIT_IOU)."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    side = box_side(ys, xs)
    if not drawn_side(side, mask.shape[0]):
        return None, 0.0
    top, left = max(0, y0 - 2), max(0, x0 - 2)
    crop = mask[top : y1 + 3, left : x1 + 3]
    cy, cx = (y0 + y1 + 1) / 2 - top, (x0 + x1 + 1) / 2 - left
    # pixel-centre offsets from every candidate centre: [offset_y, 1, h, 1] and [1, offset_x, 1, w]
    dy = (np.arange(crop.shape[0]) + 0.5)[None, None, :, None] - (cy + _OFFSETS)[:, None, None, None]
    dx = (np.arange(crop.shape[1]) + 0.5)[None, None, None, :] - (cx + _OFFSETS)[None, :, None, None]
    best_kind, best = None, 0.0
    for kind in KINDS:
        for size in (side - 1, side, side + 1):
            ideal = inside(kind, dy, dx, size / 2)
            iou = ((ideal & crop).sum((-2, -1)) / (ideal | crop).sum((-2, -1))).max()
            if iou > best:
                best_kind, best = kind, float(iou)
    return (best_kind if best >= FIT_IOU else None), best


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
            kind, fit = fit_shape(comp)
            objects.append({"colour": name, "kind": kind or "unrecognised", "fit": fit, "cy": ys.mean() + 0.5,
                            "cx": xs.mean() + 0.5, "area": area, "side": box_side(ys, xs)})
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
        return got == sorted(tuple(o) for o in spec.objects) and placement(spec, found) == spec.relation
    raise ValueError(f"unknown category {spec.category!r}")


def reading(spec: Spec | dict, image) -> tuple[bool, str]:
    """(whether the image satisfies the spec, what the evaluator found, in words): the check a user sees under an
    image, e.g. (False, "a red circle and a blue square, the red circle right of the blue square")."""
    row = _read(spec, image)
    return row["correct"], row["found"]


def _read(spec: Spec | dict, image) -> dict:
    """One image against its spec: category, whether it passes, why not (`failure`), what was found (`describe`),
    and for a position spec the relation asked and the one drawn (`placement`)."""
    spec, img = _spec(spec), to_uint8(image)
    found = detect_objects(img)
    why = failure(spec, found)
    return {"category": spec.category, "correct": why is None, "failure": why,
            "found": describe(found, spec, img.shape[0]), "asked": spec.relation, "drawn": placement(spec, found)}


def placement(spec: Spec, found: list[dict]) -> str | None:
    """For a position spec whose two objects were each found once: where the first stands relative to the second,
    as the check reads it; else None."""
    if spec.category != "position":
        return None
    a, b = ([o for o in found if (o["colour"], o["kind"]) == tuple(key)] for key in spec.objects)
    return _relation(a[0], b[0]) if len(a) == 1 and len(b) == 1 else None


AXIS = {"left of": "horizontal", "right of": "horizontal", "above": "vertical", "below": "vertical"}


def relation_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Position images whose two objects were each found once (`per_image` rows): per relation asked, the fraction
    drawn in each relation, how many images, and whether the axis (horizontal or vertical) and the side were right;
    'overall' pools the images. Tells a model that reads which axis a word names but not which side apart from one
    that reads neither."""
    placed = rows[rows["drawn"].notna()]
    order = list(AXIS)
    table = pd.crosstab(placed["asked"], placed["drawn"], normalize="index").reindex(index=order, columns=order,
                                                                                    fill_value=0.0)
    axis_right = placed["asked"].map(AXIS) == placed["drawn"].map(AXIS)
    side_right = (placed["asked"] == placed["drawn"])[axis_right]
    table["images"] = placed.groupby("asked").size().reindex(order)
    table["axis right"] = axis_right.groupby(placed["asked"]).mean().reindex(order)
    table["side right, axis right"] = side_right.groupby(placed["asked"]).mean().reindex(order)
    table.loc["overall"] = [*((placed["drawn"] == r).mean() for r in order), len(placed), axis_right.mean(),
                            side_right.mean()]
    table.columns.name = None
    return table.rename(columns={r: f"drawn {r}" for r in order}).rename_axis("asked")


FAILURES = ("no shape", "unrecognised shape", "count", "colour or kind", "relation")


def failure(spec: Spec | dict, found: list[dict]) -> str | None:
    """Why an image fails its spec (None: it passes), the first that applies of FAILURES: nothing found; an object
    that is no drawn shape; the right colours and kinds in the wrong numbers; a wrong colour or kind; for a
    position, the right two objects in the wrong relation."""
    spec = _spec(spec)
    if _satisfies(spec, found):
        return None
    if not found:
        return "no shape"
    if any(o["kind"] == "unrecognised" for o in found):
        return "unrecognised shape"
    if {(o["colour"], o["kind"]) for o in found} == {tuple(o) for o in spec.objects}:
        return "relation" if spec.category == "position" and len(found) == 2 else "count"
    return "colour or kind"


def describe(found: list[dict], spec: Spec | None = None, image_size: int = 32) -> str:
    """The objects `detect_objects` found, in words ("two green triangles and a yellow blob"), an object that is no
    shape with the reason (its size, else its outline); for a position spec whose two objects were both found once,
    also where the first stands relative to the second, as the check reads it."""
    if not found:
        return "no shape"
    rank = {tuple(o): i for i, o in enumerate(spec.objects)} if spec is not None else {}
    counts: dict[tuple[str, str], int] = {}
    for o in sorted(found, key=lambda o: rank.get((o["colour"], o["kind"]), len(rank))):  # the prompt's order first
        noun = o["kind"]
        if noun == "unrecognised":  # say why it is no shape: its size, or its outline
            noun = ("blob" if drawn_side(o["side"], image_size)
                    else "shape of {} px (the data's are {}–{})".format(o["side"], *shape_sizes(image_size)))
        counts[(o["colour"], noun)] = counts.get((o["colour"], noun), 0) + 1
    parts = []
    for (colour, noun), n in counts.items():
        head, _, tail = noun.partition(" ")
        parts.append(f"{NUMBER_WORDS.get(n, str(n))} {colour} {head}{'s' if n > 1 else ''}{' ' + tail if tail else ''}")
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    drawn = placement(spec, found) if spec is not None else None
    if drawn is not None:
        text += f", the {' '.join(spec.objects[0])} {drawn} the {' '.join(spec.objects[1])}"
    return text


def _same_colours(spec: Spec, found: list[dict]) -> bool:
    return {o["colour"] for o in found} == {c for c, _ in spec.objects}


def check(spec: Spec | dict, image) -> bool:
    """True iff the image satisfies the spec."""
    return _satisfies(_spec(spec), detect_objects(image))


def colours_match(spec: Spec | dict, image) -> bool:
    """A weaker, diagnostic check: the image's objects have exactly the prompt's colours (kinds, counts and
    positions ignored). Tells apart models that are all at the floor of the strict score."""
    return _same_colours(_spec(spec), detect_objects(image))


def shape_fit(found: list[dict]) -> float:
    """How much the drawn objects look like the dataset's shapes: the mean IoU of each object's best-fitting ideal
    shape (fit_shape; 0 for an object of no drawn size), 0 for an image with none. Real images: ≥ 0.94 per object.
    A graded diagnostic for models below the strict score: a blob reads ~0.6–0.8, patch fragments ~0.3."""
    return float(np.mean([o["fit"] for o in found])) if found else 0.0


def per_image(images, specs) -> pd.DataFrame:
    """One row per image: its category, whether it passes, why not (`failure`) and what was found (`describe`)."""
    return pd.DataFrame([_read(s, im) for im, s in zip(images, specs)])


def failure_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per category (and overall, the mean of the categories as in `score`): the fraction of images failing for
    each reason of FAILURES; with the score, each row sums to 1."""
    counts = pd.crosstab(rows["category"], rows["failure"].fillna("passes"), normalize="index")
    table = counts.reindex(index=[c for c in CATEGORIES if c in counts.index],
                           columns=["passes", *FAILURES], fill_value=0.0)
    table.loc["overall"] = table.mean()
    return table


def score(images, specs) -> pd.DataFrame:
    """Per-category accuracy and 'overall' (the mean of the category accuracies, as GenEval reports); the
    columns colour_match (`colours_match`) and shape_fit (`shape_fit`) are diagnostics averaged the same way.
    Objects are detected once per image for all three."""
    rows = []
    for im, s in zip(images, specs):
        spec, found = _spec(s), detect_objects(im)
        rows.append({"category": spec.category, "correct": _satisfies(spec, found),
                     "colour_match": _same_colours(spec, found), "shape_fit": shape_fit(found)})
    df = pd.DataFrame(rows)
    order = [c for c in CATEGORIES if c in set(df.category)]
    per = df.groupby("category").agg(score=("correct", "mean"), colour_match=("colour_match", "mean"),
                                     shape_fit=("shape_fit", "mean"), n=("correct", "count")).reindex(order)
    per.loc["overall"] = [per["score"].mean(), per["colour_match"].mean(), per["shape_fit"].mean(), per["n"].sum()]
    return per

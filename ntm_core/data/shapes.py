"""Shapes: a compositional text-to-image dataset the project generates itself, scorable like GenEval.

32×32 RGB on black; flat-coloured circles, squares and triangles in six saturated colours (RGB corners, so a
pixel's colour is unambiguous), sizes 8–14 px, no overlap. Every image comes from a *spec* — the structured
attributes its caption states — so generations can be checked against the prompt (ntm_core.data.shapes_eval).

Categories (GenEval-like): single_object ("a red circle"), two_object ("a red circle and a blue square"),
counting ("two green triangles", 1–3), color_attr (one kind, two colours), position ("a red circle to the left of
a blue square"). About 10% of the specs of each category are held out of training for evaluation.
Everything is a pure function of (seed, index).
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..images import from_uint8

COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
          "yellow": (255, 255, 0), "cyan": (0, 255, 255), "magenta": (255, 0, 255)}
KINDS = ("circle", "square", "triangle")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}
NUMBERS = {1: "one", 2: "two", 3: "three"}
RELATIONS = {  # relation → wordings; the evaluator reads only the relation
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under"),
}
VOCABULARY = frozenset(  # every word a caption can use (the text encoder reads others, the model never saw them)
    [*COLORS, *KINDS, *PLURAL.values(), *NUMBERS.values(), "a", "single", "and", "together", "with",
     *" ".join(w for ws in RELATIONS.values() for w in ws).split(), "picture", "image", "drawing", "an", "of"])
CATEGORIES = ("single_object", "two_object", "counting", "color_attr", "position")
PREFIXES = ("", "", "a picture of ", "an image of ", "a drawing of ")
HOLDOUT_FRACTION = 0.1


@dataclass(frozen=True)
class Spec:
    """What a caption asserts. objects: ((colour, kind), …) in caption order; count for counting;
    relation for position: objects[0] <relation> objects[1]."""

    category: str
    objects: tuple[tuple[str, str], ...]
    count: int = 1
    relation: str | None = None

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def to_dict(self) -> dict:
        return {"category": self.category, "objects": [list(o) for o in self.objects], "count": self.count,
                "relation": self.relation}

    @staticmethod
    def from_dict(d: dict) -> "Spec":
        return Spec(d["category"], tuple(tuple(o) for o in d["objects"]), d.get("count", 1), d.get("relation"))


def all_specs(category: str) -> list[Spec]:
    objs = list(itertools.product(COLORS, KINDS))
    if category == "single_object":
        return [Spec(category, (o,)) for o in objs]
    if category == "two_object":  # two different kinds, any colours
        return [Spec(category, (a, b)) for a, b in itertools.permutations(objs, 2) if a[1] < b[1]]
    if category == "counting":
        return [Spec(category, (o,), count=n) for o in objs for n in (1, 2, 3)]
    if category == "color_attr":  # one kind, two different colours: is each colour bound to an object?
        return [Spec(category, ((c1, k), (c2, k))) for k in KINDS for c1, c2 in itertools.combinations(COLORS, 2)]
    if category == "position":
        return [Spec(category, (a, b), relation=r) for a, b in itertools.permutations(objs, 2) for r in RELATIONS]
    raise ValueError(f"unknown category {category!r}; choose from {CATEGORIES}")


def _held_out(spec: Spec) -> bool:
    h = int(hashlib.sha256(spec.key().encode()).hexdigest()[:8], 16)
    return (h % 1000) < HOLDOUT_FRACTION * 1000


def split_specs(split: str, categories=CATEGORIES) -> dict[str, list[Spec]]:
    """{category: specs} for 'train' or 'test' (held-out prompts, never seen in training)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return {c: [s for s in all_specs(c) if _held_out(s) == (split == "test")] for c in categories}


def _caption_choices(spec: Spec):
    """The caption's free choices, in the order `caption` draws them (each uniform over its tuple; a repeated
    entry weighs double), and the function that writes the caption from the picks."""
    (c0, k0), *rest = spec.objects
    if spec.category == "counting" and spec.count == 1:
        return [("a ", "one ", "a single "), PREFIXES], lambda w, p: f"{p}{w}{c0} {k0}"
    if spec.category == "counting":
        return [PREFIXES], lambda p: f"{p}{NUMBERS[spec.count]} {c0} {PLURAL[k0]}"
    if spec.category == "single_object":
        return [PREFIXES], lambda p: f"{p}a {c0} {k0}"
    (c1, k1), = rest
    if spec.category in ("two_object", "color_attr"):
        return [("and", "and", "together with"), PREFIXES], lambda w, p: f"{p}a {c0} {k0} {w} a {c1} {k1}"
    return [RELATIONS[spec.relation], PREFIXES], lambda w, p: f"{p}a {c0} {k0} {w} a {c1} {k1}"


def caption(spec: Spec, rng: np.random.Generator) -> str:
    choices, write = _caption_choices(spec)
    return write(*(str(rng.choice(c)) for c in choices))


def caption_variants(spec: Spec) -> list[str]:
    """Every caption `caption` can write for `spec`, each as often as its probability weighs (uniform over the
    list is `caption`'s distribution): the device renderer samples captions from these."""
    choices, write = _caption_choices(spec)
    return [write(*picks) for picks in itertools.product(*choices)]


def spec_of_caption(text: str) -> Spec | None:
    """The spec a caption of this grammar states, None for any other text: the inverse of `caption`, over every
    wording, case and spacing, held-out specs included. An 'and' caption may name its objects in either order (the
    check does not read their order); a position caption keeps its order, which the relation reads."""
    return _caption_index().get(_normal(text))


def _normal(text: str) -> str:
    return " ".join(text.lower().strip().rstrip(".").split())


@functools.lru_cache(maxsize=1)
def _caption_index() -> dict[str, Spec]:
    index: dict[str, Spec] = {}
    for category in CATEGORIES:  # single_object first: "a red circle" is also counting's one, checked the same
        for spec in all_specs(category):
            orders = [spec, Spec(category, spec.objects[::-1])] if category in ("two_object", "color_attr") else [spec]
            for written in orders:
                for text in caption_variants(written):
                    index.setdefault(_normal(text), spec)
    return index


# ---- rendering ----
def inside(kind: str, y, x, r):
    """Which pixels a shape of half-size r covers, from each pixel centre's offset (y, x) to the shape's centre.
    Plain operators only, so numpy arrays (render) and torch tensors (shapes_torch) use the same shapes."""
    if kind == "circle":
        return x**2 + y**2 <= r**2
    if kind == "square":
        return (abs(x) <= r) & (abs(y) <= r)
    if kind == "triangle":  # upright isosceles: apex at top, base at bottom
        return (y <= r) & (y >= -r) & (abs(x) <= (y + r) / 2)
    raise ValueError(kind)


def shape_sizes(image_size: int, num_objects: int = 1) -> tuple[int, int]:
    """The smallest and largest shape size drawn (inclusive): 8–14 px at 32×32, 8–11 for three objects."""
    return max(3, round(image_size / 4)), round(image_size * (14 if num_objects < 3 else 11) / 32)


def shape_mask(kind: str, size: int, cy: float, cx: float, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return inside(kind, yy + 0.5 - cy, xx + 0.5 - cx, size / 2)


def relations(dy, dx, margin: float) -> dict:
    """relation → whether an object offset by (dy, dx) from another stands in it: the dominant axis of the offset
    decides, as the evaluator reads it, and by at least `margin`. Scalars or tensors alike (plain operators)."""
    horizontal, vertical = abs(dx) > abs(dy), abs(dx) <= abs(dy)
    return {"left of": horizontal & (dx <= -margin), "right of": horizontal & (dx >= margin),
            "above": vertical & (dy <= -margin), "below": vertical & (dy >= margin)}


def _relation_holds(rel: str, a: tuple[float, float], b: tuple[float, float], margin: float) -> bool:
    """a, b: (cy, cx)."""
    return bool(relations(a[0] - b[0], a[1] - b[1], margin)[rel])


# whole placements tried before `render` gives up: at 16 px three squares are placed in 1.0 % of tries (the hardest
# spec; 6.3 % at 32 px), so 500 tries failed 0.6 % of the time and a 16-px training run died within ~300 steps;
# all 5,000 fail with probability < 1e-22. Renders that succeeded within 500 are unchanged (the same draws, in order)
MAX_TRIES = 5000


def render(spec: Spec, rng: np.random.Generator, image_size: int = 32, jitter: int = 20, max_tries: int = MAX_TRIES):
    """An image [H, W, 3] uint8 satisfying `spec`, and its objects [(colour, kind, cy, cx, size)]."""
    items = [spec.objects[0]] * spec.count if spec.category == "counting" else list(spec.objects)
    for _ in range(max_tries):
        img = np.zeros((image_size, image_size, 3), np.int16)
        occupied = np.zeros((image_size, image_size), bool)
        placed = []
        for colour, kind in items:
            lo, hi = shape_sizes(image_size, len(items))
            size = int(rng.integers(lo, hi + 1))
            r = size / 2 + 1
            cy, cx = rng.uniform(r, image_size - r, size=2)
            mask = shape_mask(kind, size, cy, cx, image_size, image_size)
            grown = shape_mask("square", size + 4, cy, cx, image_size, image_size)  # ≥ 1 px of black between
            if (grown & occupied).any():
                break
            occupied |= mask
            base = np.array(COLORS[colour])  # saturated channels dimmed, empty ones lifted, by ≤ jitter
            rgb = np.where(base > 0, 255 - rng.integers(0, jitter + 1, 3), rng.integers(0, jitter + 1, 3))
            img[mask] = rgb
            ys, xs = np.nonzero(mask)  # centroids, not box centres: relations are judged on what is drawn
            placed.append((colour, kind, float(ys.mean() + 0.5), float(xs.mean() + 0.5), size))
        else:
            if spec.relation is None or _relation_holds(spec.relation, placed[0][2:4], placed[1][2:4], margin=4.0):
                return img.astype(np.uint8), placed
    raise RuntimeError(f"could not place {spec} in {max_tries} tries")


def renders_of(text: str, n: int, seed: int, image_size: int = 32) -> np.ndarray | None:
    """n images [n, H, W, 3] uint8 of what a caption of this grammar states, from one generator seeded by `seed`;
    None for any other text: real images of a prompt, to set beside a model's."""
    spec = spec_of_caption(text)
    if spec is None:
        return None
    rng = np.random.default_rng(seed)
    return np.stack([render(spec, rng, image_size)[0] for _ in range(n)])


class ShapesDataset(torch.utils.data.Dataset):
    """Item i is a pure function of (seed, i): {'image': [3, H, W] in [−1, 1], 'caption': str, 'spec': dict}.

    split='train' draws from the training specs; 'test' from the held-out ones. `length` is nominal (the data
    are generated on the fly, so any index is valid: a training loop may run past it)."""

    def __init__(self, split: str = "train", seed: int = 0, length: int = 1_000_000, image_size: int = 32,
                 categories=CATEGORIES):
        self.split, self.seed, self.length, self.image_size = split, seed, length, image_size
        self.specs = split_specs(split, categories)
        self.categories = [c for c in categories if self.specs[c]]

    def __len__(self) -> int:
        return self.length

    def spec_at(self, index: int) -> tuple[Spec, np.random.Generator]:
        rng = np.random.default_rng([self.seed, index, 0 if self.split == "train" else 1])
        cat = self.categories[int(rng.integers(len(self.categories)))]
        specs = self.specs[cat]
        return specs[int(rng.integers(len(specs)))], rng

    def caption_at(self, index: int) -> str:
        """Item `index`'s caption, without rendering its image."""
        spec, rng = self.spec_at(int(index))
        return caption(spec, rng)

    def __getitem__(self, index: int) -> dict:
        spec, rng = self.spec_at(int(index))
        text = caption(spec, rng)
        img, _ = render(spec, rng, self.image_size)
        return {"image": from_uint8(img), "caption": text, "spec": spec.to_dict()}


def eval_prompts(per_category: int = 20, seed: int = 0, split: str = "test", categories=CATEGORIES) -> list[dict]:
    """A fixed prompt set: per category, `per_category` items cycling through its held-out specs (split='train':
    its training specs, for checking what a model learned rather than how it generalises), each with a caption
    and a generation seed."""
    out = []
    for cat, specs in split_specs(split, categories).items():
        for j in range(per_category):
            rng = np.random.default_rng([seed, CATEGORIES.index(cat), j])
            spec = specs[j % len(specs)]
            out.append({"category": cat, "caption": caption(spec, rng), "spec": spec.to_dict(),
                        "seed": int(rng.integers(2**31 - 1))})
    return out

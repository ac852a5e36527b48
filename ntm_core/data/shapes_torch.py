"""The shapes dataset rendered in batches with torch, on the training device (no CPU workers, no copies).

Same grammar and spec distribution as `shapes.ShapesDataset`: a category uniformly, a spec of it uniformly, a
caption from `caption_variants` uniformly, object sizes, positions and colour jitter as in `shapes.render`.
`render` retries a whole placement until no object touches an earlier one (a 1-px gap) and the position
relation holds; its output is the proposal conditioned on that. Here each image draws TRIES[category]
proposals in parallel and keeps the first valid one — the same conditional distribution. The rare row with no
valid proposal (a rate `acceptance` measures: below 1e-6 per image with TRIES) takes the first good row.

Captions are indices into `captions` (every caption the split can produce), so that their text embeddings can
be computed once and gathered on the device (`text.CaptionTable`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..images import from_pixels
from .shapes import (CATEGORIES, COLORS, KINDS, RELATIONS, Spec, caption_variants, inside, relations, shape_sizes,
                     split_specs)

_RELATIONS = tuple(RELATIONS)
_MARGIN = 4.0  # px between the centroids along the relation's axis, as in shapes.render
# proposals per image, per category: all fail with probability ≤ 1.3e-7 (measured by `acceptance`)
TRIES = {"single_object": 1, "counting": 32, "two_object": 64, "color_attr": 64, "position": 256}
ROUND = 32  # proposals drawn at once (memory: batch × ROUND × objects × H × W booleans)


class ShapesRenderer:
    """sample(batch_size, generator) → {'image' [B, 3, H, W] in [−1, 1], 'caption_id' [B], 'spec_id' [B],
    'size' [B, 3], 'centroid' [B, 3, 2] (cy, cx; −1 where an image has fewer objects)}, all on `device`."""

    def __init__(self, split: str = "train", image_size: int = 32, categories=CATEGORIES, device="cpu",
                 jitter: int = 20):
        self.image_size, self.jitter, self.device = image_size, jitter, torch.device(device)
        by_cat = {c: s for c, s in split_specs(split, categories).items() if s}
        self.categories = list(by_cat)
        # a category listed twice is drawn twice as often, as ShapesDataset draws uniformly over the list
        self.draws = [self.categories.index(c) for c in categories if c in by_cat]
        self.specs: list[Spec] = [s for c in self.categories for s in by_cat[c]]
        counts = [len(by_cat[c]) for c in self.categories]
        self.cat_count = torch.tensor(counts, device=self.device)
        self.cat_start = torch.cumsum(torch.tensor([0] + counts[:-1], device=self.device), 0)
        self.max_objects = [max(s.count if s.category == "counting" else len(s.objects) for s in by_cat[c])
                            for c in self.categories]  # per category: the proposals' object slots

        variants = [caption_variants(s) for s in self.specs]
        self.captions: list[str] = sorted({c for v in variants for c in v})
        index = {c: i for i, c in enumerate(self.captions)}
        width = max(len(v) for v in variants)
        self.variants = torch.tensor([[index[c] for c in v] + [0] * (width - len(v)) for v in variants],
                                     device=self.device)
        self.num_variants = torch.tensor([len(v) for v in variants], device=self.device)

        objects = [[s.objects[0]] * s.count if s.category == "counting" else list(s.objects) for s in self.specs]
        pad = lambda v: v + [0] * (3 - len(v))  # noqa: E731
        colours, kinds = list(COLORS), list(KINDS)
        self.num_objects = torch.tensor([len(o) for o in objects], device=self.device)
        self.colour = torch.tensor([pad([colours.index(c) for c, _ in o]) for o in objects], device=self.device)
        self.kind = torch.tensor([pad([kinds.index(k) for _, k in o]) for o in objects], device=self.device)
        self.relation = torch.tensor([_RELATIONS.index(s.relation) if s.relation else -1 for s in self.specs],
                                     device=self.device)
        self.lit = torch.tensor([[v > 0 for v in rgb] for rgb in COLORS.values()], device=self.device)
        self.size_lo = shape_sizes(image_size)[0]  # by number of objects, as render
        self.size_hi = torch.tensor([shape_sizes(image_size, n)[1] for n in range(4)], device=self.device)
        self.pixel = torch.arange(image_size, device=self.device, dtype=torch.float32) + 0.5

    def spec(self, spec_id: int) -> Spec:
        return self.specs[int(spec_id)]

    def _uniform(self, shape, generator) -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=self.device)

    def _pick(self, count: torch.Tensor, generator) -> torch.Tensor:
        """A uniform index below `count` (elementwise)."""
        return (self._uniform(count.shape, generator) * count).long().clamp_max(count - 1)

    def _proposals(self, spec: torch.Tensor, objects: int, tries: int, generator):
        """`tries` placements of each spec's objects (at most `objects` of them): masks [B, T, O, H, W], sizes
        [B, T, O], valid [B, T] (no object touches an earlier one; the relation holds), centroids [B, T, O, 2]."""
        b, t, s, o = spec.shape[0], tries, self.image_size, objects
        n = self.num_objects[spec]
        lo, hi = self.size_lo, self.size_hi[n][:, None, None]
        size = lo + (self._uniform((b, t, o), generator) * (hi - lo + 1)).long().clamp_max(hi - lo)
        half = size / 2
        cy, cx = (half + 1 + self._uniform((b, t, o), generator) * (s - 2 * (half + 1)) for _ in range(2))
        y = self.pixel.view(1, 1, 1, s, 1) - cy[..., None, None]
        x = self.pixel.view(1, 1, 1, 1, s) - cx[..., None, None]
        r = half[..., None, None]
        kind = self.kind[spec][:, None, :o, None, None]
        circle, square, triangle = (inside(k, y, x, r) for k in KINDS)
        present = (torch.arange(o, device=self.device) < n[:, None])[:, None, :, None, None]
        mask = torch.where(kind == 0, circle, torch.where(kind == 1, square, triangle)) & present
        grown = inside("square", y, x, r + 2) & present  # the `size + 4` square: ≥ 1 px of black between
        valid = torch.ones(b, t, dtype=torch.bool, device=self.device)
        for j in range(1, o):  # a later object may not touch an earlier one
            for i in range(j):
                valid &= ~(grown[:, :, j] & mask[:, :, i]).flatten(2).any(-1)
        area = mask.flatten(3).sum(-1).clamp_min(1)
        centroid = torch.stack([(mask * self.pixel.view(s, 1)).flatten(3).sum(-1) / area,
                                (mask * self.pixel.view(1, s)).flatten(3).sum(-1) / area], -1)  # [B, T, O, 2]
        rel = self.relation[spec]
        if o >= 2:
            holds = relations(*(centroid[:, :, 0] - centroid[:, :, 1]).unbind(-1), _MARGIN)
            holds = torch.stack([holds[name] for name in _RELATIONS], -1)
            valid &= (rel < 0)[:, None] | holds.gather(-1, rel.clamp_min(0).view(b, 1, 1).expand(b, t, 1))[..., 0]
        centroid = torch.where(present[..., 0, 0, None], centroid, torch.full_like(centroid, -1.0))
        return mask, torch.where(present[..., 0, 0], size, -1), valid, centroid

    def _render(self, spec: torch.Tensor, objects: int, tries: int, generator):
        """The first valid of `tries` proposals per image, drawn in rounds of ≤ ROUND (bounded memory; every round
        runs, so there is no host sync)."""
        b = spec.shape[0]
        rows = torch.arange(b, device=self.device)
        found = torch.zeros(b, dtype=torch.bool, device=self.device)
        mask = torch.zeros(b, objects, self.image_size, self.image_size, dtype=torch.bool, device=self.device)
        size = torch.full((b, objects), -1, device=self.device)
        centroid = torch.full((b, objects, 2), -1.0, device=self.device)
        for start in range(0, tries, ROUND):
            m, sz, valid, c = self._proposals(spec, objects, min(ROUND, tries - start), generator)
            first = valid.int().argmax(1)  # the first valid proposal (argmax returns the first maximum)
            take = valid.any(1) & ~found
            mask = torch.where(take[:, None, None, None], m[rows, first], mask)
            size = torch.where(take[:, None], sz[rows, first], size)
            centroid = torch.where(take[:, None, None], c[rows, first], centroid)
            found |= take
        return mask, size, centroid, found

    @torch.no_grad()
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict:
        """A batch with each listed category equally often (then shuffled): each image's category is still uniform
        over the list, as in ShapesDataset, and every category renders at its own fixed size, so nothing waits on
        the host."""
        per_cat = -(-batch_size // len(self.draws))
        parts = []
        for c in self.draws:
            name = self.categories[c]
            spec = self.cat_start[c] + self._pick(self.cat_count[c].expand(per_cat), generator)
            objects = self.max_objects[c]
            mask, size, centroid, ok = self._render(spec, objects, TRIES.get(name, ROUND), generator)
            pad = 3 - objects
            parts.append({"spec_id": spec, "mask": F.pad(mask, (0, 0, 0, 0, 0, pad)), "valid": ok,
                          "size": F.pad(size, (0, pad), value=-1),
                          "centroid": F.pad(centroid, (0, 0, 0, pad), value=-1.0)})
        batch = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        order = torch.randperm(per_cat * len(self.draws), generator=generator, device=self.device)[:batch_size]
        batch = {k: v[order] for k, v in batch.items()}
        spec = batch["spec_id"]
        batch["caption_id"] = self.variants[spec, self._pick(self.num_variants[spec], generator)]
        jitter = (self._uniform((batch_size, 3, 3), generator) * (self.jitter + 1)).long().clamp_max(self.jitter)
        rgb = torch.where(self.lit[self.colour[spec]], 255 - jitter, jitter).float()  # [B, object, channel]
        batch["image"] = from_pixels(torch.einsum("bohw,boc->bchw", batch.pop("mask").float(), rgb))
        ok = batch["valid"]  # a row with no valid proposal (rare: see `acceptance`) copies the first good one
        src = torch.where(ok, torch.arange(batch_size, device=self.device), ok.int().argmax())
        return {k: v[src] for k, v in batch.items()}

    @torch.no_grad()
    def acceptance(self, per_category: int = 2048, generator: torch.Generator | None = None) -> dict[str, dict]:
        """Per category: the probability that one proposal is valid, the tries used, and the resulting
        probability that every try fails (the rate of copied rows)."""
        out = {}
        for c, name in enumerate(self.categories):
            spec = self.cat_start[c] + self._pick(self.cat_count[c].expand(per_category), generator)
            p = float(self._proposals(spec, 3, 1, generator)[2].float().mean())
            tries = TRIES.get(name, ROUND)
            out[name] = {"proposal_valid": p, "tries": tries, "all_tries_fail": (1 - p) ** tries}
        return out

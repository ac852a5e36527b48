"""The batched torch renderer draws the CPU renderer's distribution, and every image satisfies its caption."""
import numpy as np
import pytest
import torch
from scipy import stats

from ntm_core.data.shapes_eval import check
from ntm_core.data.shapes import CATEGORIES, COLORS, PREFIXES, ShapesDataset, caption_variants, render
from ntm_core.data.shapes_torch import ShapesRenderer

N = 1000


@pytest.fixture(scope="module")
def device_batch():
    renderer = ShapesRenderer("train")
    return renderer, renderer.sample(N, torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def cpu_items():
    ds = ShapesDataset("train", seed=1)
    items = []
    for i in range(N):
        spec, rng = ds.spec_at(i)
        text = ds.caption_at(i)
        _, placed = render(spec, rng)
        items.append((spec, text, placed))
    return items


def _prefix(text: str) -> str:
    return next(p for p in sorted(set(PREFIXES), key=len, reverse=True) if text.startswith(p))


def _device_rows(renderer, batch):
    rows = []
    for sid, cid, size, cen in zip(batch["spec_id"].tolist(), batch["caption_id"].tolist(), batch["size"].tolist(),
                                   batch["centroid"].tolist()):
        spec = renderer.spec(sid)
        colours = [spec.objects[0][0]] * spec.count if spec.category == "counting" else [c for c, _ in spec.objects]
        objs = [(colour, s, c) for colour, s, c in zip(colours, size, cen) if s > 0]
        rows.append((spec, renderer.captions[cid], objs))
    return rows


def test_every_device_image_satisfies_its_caption(device_batch):
    renderer, batch = device_batch
    assert batch["image"].shape == (N, 3, 32, 32) and bool(batch["valid"].all())
    for spec, text, _ in _device_rows(renderer, batch)[:300]:
        assert text in caption_variants(spec)
    for sid, image in zip(batch["spec_id"][:300].tolist(), batch["image"][:300]):
        assert check(renderer.spec(sid), image), renderer.spec(sid)


def test_same_generator_same_batch_other_seed_other_batch():
    r = ShapesRenderer("train", categories=("single_object", "counting"))
    a, b = (r.sample(16, torch.Generator().manual_seed(5)) for _ in range(2))
    c = r.sample(16, torch.Generator().manual_seed(6))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["caption_id"], b["caption_id"])
    assert not torch.equal(a["image"], c["image"])


def test_a_category_listed_twice_is_drawn_twice_as_often_on_both_renderers():
    """`data.categories` means the same on the GPU path as on the CPU path: uniform over the list, repeats
    included (the way to give the position prompts more of the data)."""
    listed = ("single_object", "position", "position")
    batch = ShapesRenderer("train", categories=listed).sample(600, torch.Generator().manual_seed(1))
    r = ShapesRenderer("train", categories=listed)
    on_device = [r.spec(i).category for i in batch["spec_id"].tolist()]
    assert on_device.count("position") == 400 and on_device.count("single_object") == 200  # 2 of 3 per batch
    ds = ShapesDataset("train", seed=2, categories=listed)
    on_cpu = [ds.spec_at(i)[0].category for i in range(600)]
    assert set(on_cpu) == {"single_object", "position"}
    assert stats.binomtest(on_cpu.count("position"), 600, 2 / 3).pvalue > 1e-3


def _compare(cpu, dev):
    """p-values of two-sample tests, one per statistic the issue names."""
    def table(f):
        keys = sorted({f(r) for r in cpu} | {f(r) for r in dev}, key=str)
        return np.array([[sum(f(r) == k for r in rows) for k in keys] for rows in (cpu, dev)])

    sizes = [[s for _, s, _ in objs] for _, _, objs in cpu], [[s for _, s, _ in objs] for _, _, objs in dev]
    cys = [[c[0] for _, _, c in objs] for _, _, objs in cpu], [[c[0] for _, _, c in objs] for _, _, objs in dev]
    cxs = [[c[1] for _, _, c in objs] for _, _, objs in cpu], [[c[1] for _, _, c in objs] for _, _, objs in dev]
    colours = [[sum(c == name for _, _, objs in rows for c, _, _ in objs) for name in COLORS] for rows in (cpu, dev)]
    flat = lambda lists: np.concatenate([np.array(x, float) for x in lists])  # noqa: E731
    return {
        "category": stats.chi2_contingency(table(lambda r: r[0].category)).pvalue,
        "object count": stats.chi2_contingency(table(lambda r: len(r[2]))).pvalue,
        "caption prefix": stats.chi2_contingency(table(lambda r: _prefix(r[1]))).pvalue,
        "colours": stats.chi2_contingency(np.array(colours)).pvalue,
        "sizes": stats.ks_2samp(flat(sizes[0]), flat(sizes[1])).pvalue,
        "centroid y": stats.ks_2samp(flat(cys[0]), flat(cys[1])).pvalue,
        "centroid x": stats.ks_2samp(flat(cxs[0]), flat(cxs[1])).pvalue,
    }


def _cpu_rows(items):
    return [(spec, text, [(c, s, (cy, cx)) for c, _, cy, cx, s in placed]) for spec, text, placed in items]


def test_statistics_match_the_cpu_renderer(device_batch, cpu_items):
    renderer, batch = device_batch
    cpu, dev = _cpu_rows(cpu_items), _device_rows(renderer, batch)
    p = _compare(cpu, dev)
    assert min(p.values()) > 1e-3, p
    # relations: every position image's centroids satisfy its relation in both renderers, by the evaluator's rule
    for spec, _, objs in dev:
        if spec.relation:
            (y0, x0), (y1, x1) = objs[0][2], objs[1][2]
            horizontal = abs(x0 - x1) > abs(y0 - y1)
            side = {"left of": x0 < x1, "right of": x0 > x1, "above": y0 < y1, "below": y0 > y1}[spec.relation]
            assert side and horizontal == (spec.relation in ("left of", "right of"))
    assert {s.category for s, _, _ in dev} == set(CATEGORIES)


def test_the_comparison_detects_a_different_size_distribution(cpu_items):
    """The statistics test has power: a renderer whose shapes are 2 px smaller at most fails it."""
    renderer = ShapesRenderer("train")
    renderer.size_hi = renderer.size_hi - 2
    batch = renderer.sample(N, torch.Generator().manual_seed(0))
    p = _compare(_cpu_rows(cpu_items), _device_rows(renderer, batch))
    assert p["sizes"] < 1e-6, p

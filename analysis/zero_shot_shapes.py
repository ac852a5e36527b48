"""Zero-shot classification of shapes images by an NTM's exact likelihood (Bayes' rule).

    python -m analysis.zero_shot_shapes --model assets/ntm-shapes32 --n 60 --trajectories 4 \\
        --out docs/zero-shot-shapes

Each image is scored under the 18 candidate prompts "a <colour> <kind>" (6 colours × 3 kinds); the predicted
class is the prompt with the lowest bound on −log p(x_{t_0} | prompt) (uniform prior), each image's forward
trajectories shared by all candidates (`NTMPipeline.prompt_nll`). Rows: images of the held-out single-object specs
(red triangle, yellow circle: never captioned so in training) and of the training specs; accuracy of the full
label, of the colour and of the kind (chance 1/18, 1/6, 1/3).

--parts position: images of two-object position specs, each scored under its own two objects in caption order with
each of the four relations ("a red circle to the left of a blue square", "… to the right of …", "… above …",
"… below …"; exactly one holds in the render, chance 1/4). It asks whether the model's density knows where its
objects are, next to the sampler's position score (issue 11: the weakest category). Writes <out>.json/.csv/.md.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd
import torch

from ntm_core.report import environment, report
from ntm_core.data.shapes import COLORS, KINDS, RELATIONS, ShapesDataset
from ntm_core.pipeline import NTMPipeline, load_pipeline

CANDIDATES = [(c, k) for c in COLORS for k in KINDS]


def items(split: str, n: int, seed: int, category: str) -> list[dict]:
    ds = ShapesDataset(split, seed=seed, categories=(category,))
    return [ds[i] for i in range(n)]


def images(split: str, n: int, seed: int) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    its = items(split, n, seed, "single_object")
    return torch.stack([it["image"] for it in its]), [tuple(it["spec"]["objects"][0]) for it in its]


def _row(images: str, what: str, correct, seconds_per_image: float) -> dict:
    ok = np.asarray(correct, dtype=float)
    return {"images": images, "accuracy of": what, "value": ok.mean(), "std error": ok.std() / math.sqrt(len(ok)),
            "seconds/image": seconds_per_image}


def accuracy_rows(pipe: NTMPipeline, split: str, n: int, steps: int, trajectories: int, seed: int) -> list[dict]:
    x, truth = images(split, n, seed)
    prompts = [f"a {c} {k}" for c, k in CANDIDATES]
    start = time.perf_counter()
    scores = pipe.prompt_nll(x, prompts, steps, trajectories, torch.Generator().manual_seed(seed)).mean(-1)
    seconds = time.perf_counter() - start
    pred = [CANDIDATES[i] for i in scores.argmin(1).tolist()]
    label = f"{'held-out' if split == 'test' else 'training'} specs, {n} images, {trajectories} trajectories"
    return [_row(label, what, ok, seconds / n) for what, ok in (
        ("colour and kind (chance 1/18)", [p == t for p, t in zip(pred, truth)]),
        ("colour (chance 1/6)", [p[0] == t[0] for p, t in zip(pred, truth)]),
        ("kind (chance 1/3)", [p[1] == t[1] for p, t in zip(pred, truth)]))]


def position_rows(pipe: NTMPipeline, split: str, n: int, steps: int, trajectories: int, seed: int) -> list[dict]:
    relations = list(RELATIONS)
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    correct = []
    # each image has its own four candidates (its objects), so one prompt_nll call per image
    for it in items(split, n, seed, "position"):
        (c0, k0), (c1, k1) = it["spec"]["objects"]
        prompts = [f"a {c0} {k0} {RELATIONS[r][0]} a {c1} {k1}" for r in relations]
        scores = pipe.prompt_nll(it["image"][None], prompts, steps, trajectories, g)[0].mean(-1)
        correct.append(relations[int(scores.argmin())] == it["spec"]["relation"])
    seconds = time.perf_counter() - start
    label = f"{'held-out' if split == 'test' else 'training'} position specs, {n} images, {trajectories} trajectories"
    return [_row(label, "relation, given the two objects (chance 1/4)", correct, seconds / n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="assets/ntm-shapes32")
    ap.add_argument("--n", type=int, default=60, help="images per split")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--trajectories", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", nargs="+", default=["kinds"], choices=["kinds", "position"],
                    help="kinds: single objects over colour × kind; position: the relation of two objects")
    ap.add_argument("--out", default="results/zero-shot-shapes")
    a = ap.parse_args()
    pipe = load_pipeline(a.model)
    if not isinstance(pipe, NTMPipeline):
        raise SystemExit("--model must be an NTM folder")
    rows = []
    for split in ("test", "train"):
        if "kinds" in a.parts:
            rows += accuracy_rows(pipe, split, a.n, a.steps, a.trajectories, a.seed)
        if "position" in a.parts:
            rows += position_rows(pipe, split, a.n, a.steps, a.trajectories, a.seed)
    report(pd.DataFrame(rows), "Zero-shot classification of shapes by likelihood",
           environment(model=a.model, steps=a.steps, seed=a.seed), a.out)


if __name__ == "__main__":
    main()

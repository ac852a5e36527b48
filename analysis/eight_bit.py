"""The bits/dim of flow papers for any NTM: an upper bound on −log₂ P(x) of the 8-bit image, per dimension.

    python -m analysis.eight_bit --model assets/ntm-mnist28 --data mnist --save --out docs/eight-bit-mnist
    python -m analysis.eight_bit --model assets/ntm-shapes32 --data shapes --save --out docs/eight-bit-shapes

A model with t_min > 0 (every bundled NTM) bounds the density of the *noised* image x_{t_0}; this script closes
the gap to the 8-bit image with a discrete decoder (ntm_core.discrete_decoder: a histogram of pixel values per bin
of the Tweedie estimate x̂):

    −log₂ P(x) ≤ bound on x_{t_0}  −  ½·log₂(2πe σ_0²)  +  E[−log₂ P(x | τ)]      (per dimension)

The decoder's table is fitted on --fit-n *training* images (MNIST train; renders of the shapes training specs),
the bound is measured on --n *test* images (MNIST test; renders of the held-out shapes specs) with --trajectories
forward trajectories each, under each image's own prompt and under the null prompt: their bounds averaged, and (for
more than one) combined by importance weighting, −log₂ of the mean of the trajectories' weights p(x, τ)/q(τ | x),
a tighter bound (ntm_core.trajectory.importance_weighted). --save writes the decoder into the model
folder (discrete_decoder.json), where the app's Likelihood tab finds it. A model in the 8-bit configuration
(t_min = 0, dequantized) needs no decoder: its x_{t_0} is the dequantized image, the middle term is −log₂ of the bin
width and there is no decoder term (ntm_core.discrete_decoder.eight_bit_bound computes either).
On MNIST the published numbers (RealNVP 1.06, Glow 1.05, FFJORD 0.99; not measured here) are listed beside it.
Writes <out>.json/.csv/.md.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import pandas as pd
import torch
from tqdm import tqdm

from analysis.mnist import stack
from ntm_core.data.idx import IdxDataset
from ntm_core.data.shapes import ShapesDataset
from ntm_core.discrete_decoder import DiscreteDecoder, eight_bit_bound, tweedie_estimate
from ntm_core.pipeline import NTMPipeline, load_pipeline
from ntm_core.report import environment, report
from ntm_core.trajectory import importance_weighted

PUBLISHED_MNIST = {"RealNVP (Dinh et al. 2017)": 1.06, "Glow (Kingma & Dhariwal 2018)": 1.05,
                   "FFJORD (Grathwohl et al. 2019)": 0.99}


def images(data: str, split: str, n: int, size: int, channels: int, mnist_root: str, seed: int):
    """(images [N, C, H, W] in model scaling, their prompts, what they are)."""
    if data == "mnist":
        ds = IdxDataset(mnist_root, "mnist", split, image_size=size, channels=channels)
        x, y = stack(ds, n)
        return x, [ds.caption(int(v)) for v in y], f"MNIST {split}"
    ds = ShapesDataset(split, seed=seed + (999 if split == "train" else 1234), image_size=size)
    items = [ds[i] for i in range(n)]
    what = "renders of the training specs" if split == "train" else "renders of the held-out specs"
    return torch.stack([it["image"] for it in items]), [it["caption"] for it in items], what


def _text(pipe: NTMPipeline, prompts: list[str] | None, n: int):
    if not pipe.text_dim:
        return None
    return pipe.null_text(n) if prompts is None else pipe.encode_prompt(prompts)[0]


def fit_decoder(pipe: NTMPipeline, x, prompts, steps: int, seed: int, batch: int, **fitted_on) -> DiscreteDecoder:
    model, means = pipe.ntm, []
    for i in tqdm(range(0, len(x), batch), desc="decoder fit", leave=False):
        xb = x[i : i + batch]
        states, grid = model.forward_trajectory(xb, steps, torch.Generator().manual_seed(seed + i))
        means.append(tweedie_estimate(model, states, grid, _text(pipe, prompts[i : i + batch], len(xb)))[1])
    return DiscreteDecoder.fit(x, torch.cat(means), **fitted_on)


def measure(pipe: NTMPipeline, x, prompts, decoder, steps: int, seed: int, batch: int,
            trajectories: int = 1) -> dict[str, torch.Tensor]:
    """Per image, over `trajectories` forward trajectories each: the 8-bit bound and its parts averaged (bits/dim),
    and the trajectories combined by importance weighting ("weighted"); prompts None = the null prompt."""
    model, parts = pipe.ntm, {"total": [], "x_t0": [], "start": [], "decoder": [], "weighted": []}
    dims = x[0].numel()
    for i in tqdm(range(0, len(x), batch), desc="8-bit bound", leave=False):
        xb = x[i : i + batch]
        text = _text(pipe, None if prompts is None else prompts[i : i + batch], len(xb))
        drawn = [eight_bit_bound(model, xb, decoder, text, steps,
                                 torch.Generator().manual_seed(seed + i + 1_000_003 * j)) for j in range(trajectories)]
        for k, v in (("total", [b.bits_per_dim for b in drawn]), ("x_t0", [b.x_t0 for b in drawn]),
                     ("start", [torch.full_like(b.x_t0, b.start) for b in drawn]),
                     ("decoder", [b.decoder for b in drawn])):
            parts[k].append(torch.stack(v).mean(0).detach())
        parts["weighted"].append(importance_weighted(torch.stack([b.sample_bits_per_dim for b in drawn]).detach(),
                                                     dims, dim=0))
    return {k: torch.cat(v) for k, v in parts.items() if v}


def _row(what: str, condition: str, v: torch.Tensor, source: str) -> dict:
    return {"images": what, "prompt": condition, "measure": source, "bits/dim": v.mean().item(),
            "std error": (v.std() / math.sqrt(len(v))).item() if len(v) > 1 else float("nan"), "n": len(v)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", choices=["shapes", "mnist"], required=True)
    ap.add_argument("--mnist", default="../shared/data/mnist", help="MNIST IDX folder")
    ap.add_argument("--fit-n", type=int, default=500, help="training images the decoder is fitted on")
    ap.add_argument("--n", type=int, default=500, help="test images the bound is measured on")
    ap.add_argument("--bins", type=int, default=64, help="the decoder's bins of x̂")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--trajectories", type=int, default=1,
                    help="forward trajectories per test image; with more than one, the importance-weighted bound too")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--save", action="store_true", help="write discrete_decoder.json into the model folder")
    ap.add_argument("--out", default="results/eight-bit")
    a = ap.parse_args()

    pipe = load_pipeline(a.model)
    if not isinstance(pipe, NTMPipeline):
        raise SystemExit("--model must be an NTM folder")
    c, size, _ = pipe.sample_shape
    start = time.perf_counter()
    decoder = None
    if pipe.scheduler.config.t_min > 0:
        xf, pf, fit_what = images(a.data, "train", a.fit_n, size, c, a.mnist, a.seed)
        command = "python -m analysis.eight_bit " + " ".join(sys.argv[1:])
        decoder = fit_decoder(pipe, xf, pf, a.steps, a.seed + 10_000, a.batch, bins=a.bins, images=fit_what,
                              n=len(xf), trajectory_steps=a.steps, command=command)
        if a.save:
            print("decoder written to", decoder.save(a.model))
    fit_seconds = time.perf_counter() - start
    x, prompts, what = images(a.data, "test", a.n, size, c, a.mnist, a.seed)
    rows = []
    conditions = [("own caption", prompts), ("null prompt", None)] if pipe.text_dim else [("unconditional", None)]
    for condition, cond_prompts in conditions:
        parts = measure(pipe, x, cond_prompts, decoder, a.steps, a.seed, a.batch, a.trajectories)
        if a.trajectories > 1:
            rows.append(_row(what, condition, parts["weighted"], "8-bit bound on -log2 P(x), importance-weighted over "
                             f"{a.trajectories} trajectories"))
        rows.append(_row(what, condition, parts["total"], "8-bit bound on -log2 P(x)" + (
            f", mean over {a.trajectories} trajectories" if a.trajectories > 1 else "")))
        if a.trajectories > 1:  # per image, paired: far less noisy than the two rows' difference
            rows.append(_row(what, condition, parts["weighted"] - parts["total"],
                             "  importance-weighted minus mean, per image"))
        rows.append(_row(what, condition, parts["x_t0"], "  part: bound on -log2 p(x_t0), [-1,1] scaling"))
        if decoder is not None:
            rows.append(_row(what, condition, parts["start"], "  part: E log2 q(x_t0 | x) = -1/2 log2(2 pi e t0^2)"))
            rows.append(_row(what, condition, parts["decoder"], "  part: decoder -log2 P(x | tau)"))
        else:
            rows.append(_row(what, condition, parts["start"], "  part: E log2 q(x_t0 | x) = -log2(bin width)"))
    if a.data == "mnist":
        rows += [{"images": "MNIST test", "prompt": "unconditional", "measure": f"published: {name}", "bits/dim": v,
                  "std error": float("nan"), "n": 0} for name, v in PUBLISHED_MNIST.items()]
    env = environment(model=a.model, data=a.data, steps=a.steps, trajectories=a.trajectories, seed=a.seed,
                      fit_n=a.fit_n, fit_seconds=round(fit_seconds, 1), seconds=round(time.perf_counter() - start, 1))
    report(pd.DataFrame(rows), f"8-bit bits/dim of {os.path.basename(a.model.rstrip('/'))}", env, a.out)


if __name__ == "__main__":
    main()

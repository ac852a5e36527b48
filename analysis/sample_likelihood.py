"""Does the sampler draw what the model's density describes? Its samples and real renders of the same prompts,
scored by the same exact likelihood, no training.

For every held-out prompt (--per-category per category): --samples images from the pipeline at each --guidance and
each --final step, and as many real renders (the training data's own renderer, seeded by the prompt), each read
through --trajectories forward trajectories at K = --steps under its prompt: the trajectory bits/dim
(−log₂ p(τ) / ((K+1)·D)) and the bound on −log₂ p(x_{t_0}) per dimension. A model whose sampler draws from its own
density scores its samples like the data it was trained on; the rows' "Δ vs real renders" (per prompt, samples'
mean minus renders' mean, averaged over prompts, with the standard error over prompts) is how far they are apart,
and "evaluator" is the share of the images the project's evaluator accepts (shapes_eval): what that gap looks like
for the samples, and 1.00 for the renders (a check).

    python -m analysis.sample_likelihood --model assets/ntm-shapes32 --per-category 4 --samples 2 \\
        --out docs/sample-likelihood-shapes

Writes <out>.json/.csv/.md.
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ntm_core.data.shapes_eval import per_image
from ntm_core.data.shapes import eval_prompts, renders_of
from ntm_core.images import from_uint8, to_uint8
from ntm_core.pipeline import NTMPipeline, load_pipeline
from ntm_core.report import environment, report

TRAJECTORY, X_T0 = "trajectory bits/dim", "bound bits/dim on x_t0"


def renders(prompts: list[dict], n: int, image_size: int) -> torch.Tensor:
    """[P·n, 3, H, W]: n real renders of each prompt (model scaling), prompt j's from a generator seeded by its seed."""
    return from_uint8(np.concatenate([renders_of(p["caption"], n, p["seed"], image_size) for p in prompts]))


def samples(pipe: NTMPipeline, prompts: list[dict], n: int, steps: int, guidance: float, final: str) -> torch.Tensor:
    """[P·n, C, H, W]: n samples of each prompt, image k of prompt j from a generator seeded by (its seed + k), as 8-bit
    images (what the app shows and scores)."""
    rows = [p["caption"] for p in prompts for _ in range(n)]
    generators = [torch.Generator().manual_seed(p["seed"] + k) for p in prompts for k in range(n)]
    out = pipe(rows, num_inference_steps=steps, guidance_scale=guidance, generator=generators, denoise=final,
               output_type="model")
    return from_uint8(to_uint8(out.images))


def densities(pipe: NTMPipeline, images: torch.Tensor, captions: list[str], steps: int, trajectories: int,
              seed: int) -> dict[str, np.ndarray]:
    """Per image, its two densities' means over `trajectories` forward trajectories (bits/dim)."""
    runs = pipe.log_likelihood(images, captions, steps, trajectories, torch.Generator().manual_seed(seed))
    return {TRAJECTORY: torch.stack([r.bits_per_dim for r in runs]).float().mean(0).cpu().numpy(),
            X_T0: torch.stack([r.bound_bits_per_dim for r in runs]).float().mean(0).cpu().numpy()}


def measure(pipe: NTMPipeline, per_category: int, n: int, steps: int, trajectories: int, guidances: list[float],
            finals: list[str], seed: int = 0, batch: int = 32) -> pd.DataFrame:
    prompts = eval_prompts(per_category, seed)
    per = max(1, batch // n)
    groups = [("real renders", None, None)] + [("samples", g, f) for g in guidances for f in finals]
    found = {}
    for what, g, f in tqdm(groups, desc="images, then their likelihoods", unit="row"):
        parts = {TRAJECTORY: [], X_T0: []}
        accepted = []
        for i in range(0, len(prompts), per):
            part = prompts[i : i + per]
            captions = [p["caption"] for p in part for _ in range(n)]
            x = renders(part, n, pipe.sample_shape[1]) if g is None else samples(pipe, part, n, steps, g, f)
            for k, v in densities(pipe, x, captions, steps, trajectories, seed + 1 + i).items():
                parts[k].append(v)
            read = per_image(list(x), [p["spec"] for p in part for _ in range(n)])  # renders: 1.00, a check
            accepted.append(read["failure"].isna().to_numpy())
        found[(what, g, f)] = ({k: np.concatenate(v).reshape(len(prompts), n) for k, v in parts.items()},
                               np.concatenate(accepted).mean())
    real = found[groups[0]][0]
    rows = []
    for (what, g, f), (vals, acc) in found.items():
        row = {"images": what, "guidance": g, "final step": f, "n": vals[TRAJECTORY].size}
        for k, v in vals.items():
            per_prompt = v.mean(1) - real[k].mean(1)
            row[k] = v.mean()
            row[k + " Δ vs real renders"] = per_prompt.mean()
            row[k + " Δ std error"] = per_prompt.std(ddof=1) / np.sqrt(len(per_prompt)) if len(per_prompt) > 1 else np.nan
        row["evaluator"] = acc
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="assets/ntm-shapes32", help="an NTM pipeline folder trained on shapes")
    ap.add_argument("--per-category", type=int, default=4)
    ap.add_argument("--samples", type=int, default=2, help="samples (and real renders) per prompt")
    ap.add_argument("--trajectories", type=int, default=2, help="forward trajectories per image")
    ap.add_argument("--steps", type=int, default=4, help="K, for sampling and for the likelihood")
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0])
    ap.add_argument("--final", nargs="+", choices=("learned", "score", "none"), default=None,
                    help="final steps (default: the model's own and none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write <out>.json/.csv/.md")
    a = ap.parse_args(argv)
    pipe = load_pipeline(a.model).to("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(pipe, NTMPipeline):
        ap.error(f"{a.model} is no NTM: a flow-matching model has no exact likelihood of its samples")
    if pipe.sample_shape[0] != 3:
        ap.error(f"{a.model} is not a shapes model (images of {pipe.sample_shape[0]} channel(s)): no renderer")
    finals = a.final or list(dict.fromkeys([pipe.final_step(None), "none"]))
    df = measure(pipe, a.per_category, a.samples, a.steps, a.trajectories, a.guidance, finals, a.seed)
    env = environment(model=a.model, steps=a.steps, per_category=a.per_category, samples=a.samples,
                      trajectories=a.trajectories, seed=a.seed)
    report(df, "the sampler's images and real renders of the same prompts under the model's exact likelihood", env,
           a.out, digits=3)


if __name__ == "__main__":
    main()

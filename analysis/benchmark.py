"""The paper's table at small scale, on the shapes models: GenEval-like score (overall and per category) on the
held-out prompts with fixed seeds, exact NLL on held-out real images, and images/s at batch 16 on this machine.

    python -m analysis.benchmark --model ntm=assets/ntm-shapes32 [--model fm=assets/fm-shapes32 …] \
        --per-category 20 --out results/benchmark

Model keys: ntm (rows: score and learned denoising at 4, 1, 2, 8 steps, no denoising at 4), fm (Euler at 1, 2, 4, 8, 50,
and the same network as a 4-step Gaussian sampler with its Tweedie step to the data — what an NTM finetuned from it
computes before finetuning), ntm_from_fm and gauss (4 steps, score denoising). Images/s at batch 1 and 16.
Writes <out>.json, <out>.csv and <out>.md. Every number in those files is measured in the run that wrote them.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
import torch

from ntm_core.report import environment, report
from analysis import key_values
from ntm_core.data.shapes_eval import score
from ntm_core.conditioning import TextEmbedding
from ntm_core.data.shapes import ShapesDataset, eval_prompts
from ntm_core.discrete_decoder import DiscreteDecoder, NoEightBitBound, eight_bit_bound
from ntm_core.images import to_unit
from ntm_core.pipeline import NTMPipeline, load_pipeline

ROWS = {  # (method, steps, the pipeline call's sampler options)
    "ntm": [("NTM + score denoising", k, {"denoise": "score"}) for k in (4, 1, 2, 8)]
    + [("NTM, no denoising", 4, {"denoise": "none"})]
    + [("NTM + learned denoiser", k, {"denoise": "learned"}) for k in (4, 1, 2, 8)],
    "ntm_from_fm": [("NTM from FM + score denoising", 4, {"denoise": "score"})],
    "fm": [("FM, Euler", k, {}) for k in (1, 2, 4, 8, 50)]
    + [("FM as a Gaussian sampler + score denoising", 4, {"sampler": "gaussian", "denoise": "score"})],
    "gauss": [("Gaussian-only + score denoising", 4, {"denoise": "score"})],
}


def generate(pipe, prompts: list[str] | TextEmbedding, steps: int, options: dict, guidance: float, seed: int,
             batch: int = 16):
    """Images [N, 3, H, W] in [−1, 1] for the prompts (or their embeddings, as the pipeline's prompt_embeds), in
    batches; returns (images, seconds per batch)."""
    embedded = isinstance(prompts, TextEmbedding)
    out, times = [], []
    for i in range(0, prompts.batch_size if embedded else len(prompts), batch):
        g = torch.Generator().manual_seed(seed + i)
        # the prompts positionally, as any pipeline takes them; embeddings by diffusers' keyword
        args, text = ((), {"prompt_embeds": prompts.rows(slice(i, i + batch))}) if embedded else (
            (prompts[i : i + batch],), {})
        start = time.perf_counter()
        res = pipe(*args, num_inference_steps=steps, guidance_scale=guidance, generator=g, output_type="model",
                   **text, **options)
        times.append((time.perf_counter() - start, res.images.shape[0]))
        out.append(res.images)
    return torch.cat(out), times


def images_per_second(pipe, steps, options, guidance, repeats: int = 3, batch: int = 16) -> float:
    prompts = [p["caption"] for p in eval_prompts(4)][:batch]
    generate(pipe, prompts, steps, options, guidance, 0, batch)  # warm-up
    secs = [generate(pipe, prompts, steps, options, guidance, r, batch)[1][0][0] for r in range(repeats)]
    return batch / float(np.median(secs))


def heldout_images(n: int = 64) -> tuple[torch.Tensor, list[str]]:
    """The first n held-out shapes images (test split, fixed seed) and their captions."""
    ds = ShapesDataset("test", seed=1234)
    items = [ds[i] for i in range(n)]
    return torch.stack([it["image"] for it in items]), [it["caption"] for it in items]


def heldout_trajectory_nll(pipe: NTMPipeline, n: int = 64, steps: int = 4, seed: int = 0, heldout=None):
    """Exact NLL of one seeded forward trajectory per held-out shapes image (the first n of the test split, or
    `heldout`: what heldout_images(n) returned)."""
    x, captions = heldout or heldout_images(n)
    return pipe.log_likelihood(x, captions, steps, 1, torch.Generator().manual_seed(seed))[0]


def heldout_nll(pipe: NTMPipeline, folder: str, n: int = 64, steps: int = 4, seed: int = 0) -> dict:
    """Held-out likelihoods in bits/dim: the exact trajectory NLL, the bound on x_{t_0}, and the 8-bit bound (through
    the folder's discrete decoder, or the 8-bit configuration's own) where the model has one."""
    x, captions = heldout_images(n)
    res = heldout_trajectory_nll(pipe, n, steps, seed, heldout=(x, captions))
    # column names as the app's: each names its density (issue 13)
    out = {"trajectory NLL bits/dim": res.bits_per_dim.mean().item(),
           "bound bits/dim on x_t0": res.bound_bits_per_dim.mean().item()}
    try:
        bound = eight_bit_bound(pipe.ntm, x, DiscreteDecoder.load(folder),
                                pipe.encode_prompt(captions)[0] if pipe.text_dim else None, steps,
                                torch.Generator().manual_seed(seed))
        out["8-bit bound bits/dim"] = bound.bits_per_dim.mean().item()
    except NoEightBitBound:
        pass  # the column stays empty for a model without one
    return out


def fidelity(images: torch.Tensor, reference: torch.Tensor) -> dict:
    """Pixel distance of the learned denoiser's images to the score-denoised ones, in [0, 1] pixel units."""
    mse = (to_unit(images) - to_unit(reference)).pow(2).flatten(1).mean(1)
    return {"MSE vs score": mse.mean().item(), "PSNR vs score (dB)": (10 * torch.log10(1 / mse)).mean().item()}


def figures(df: pd.DataFrame, stem: str) -> list[str]:
    """Quality vs steps and speed vs quality, as standalone plotly HTML next to the tables."""
    import plotly.express as px

    paths = []
    fig = px.line(df, x="steps", y="score overall", color="method", markers=True, log_x=True,
                  title="GenEval-like score vs sampling steps (held-out prompts)")
    paths.append(stem + "-quality-vs-steps.html")
    fig.write_html(paths[-1], include_plotlyjs="cdn")
    fig = px.scatter(df, x="img/s (batch 16)", y="score overall", color="method", symbol="steps", log_x=True,
                     title="Speed vs quality (batch 16, CPU)")
    paths.append(stem + "-speed-vs-quality.html")
    fig.write_html(paths[-1], include_plotlyjs="cdn")
    return paths


def run(models: dict[str, str], per_category: int, guidance: float, seed: int, speed_repeats: int) -> pd.DataFrame:
    prompts = eval_prompts(per_category, seed)
    captions, specs = [p["caption"] for p in prompts], [p["spec"] for p in prompts]
    rows = []
    for key, folder in models.items():
        pipe = load_pipeline(folder)
        nll = heldout_nll(pipe, folder) if isinstance(pipe, NTMPipeline) else {}
        score_images = {}  # steps → score-denoised images, the learned denoiser's reference (same seeds)
        for label, steps, options in ROWS[key]:
            denoise = options.get("denoise")
            if denoise == "learned" and getattr(pipe, "denoiser", None) is None:
                continue
            images, _ = generate(pipe, captions, steps, options, guidance, seed)
            table = score(list(images), specs)
            row = {"method": label, "model": key, "steps": steps, **{f"score {c}": table.loc[c, "score"]
                                                                     for c in table.index},
                   "colour match": table.loc["overall", "colour_match"], "shape fit": table.loc["overall", "shape_fit"]}
            row.update(nll)
            if denoise == "score" and isinstance(pipe, NTMPipeline):
                score_images[steps] = images
            elif denoise == "learned" and steps in score_images:
                row.update(fidelity(images, score_images[steps]))
            row["img/s (batch 1)"] = images_per_second(pipe, steps, options, guidance, speed_repeats, batch=1)
            row["img/s (batch 16)"] = images_per_second(pipe, steps, options, guidance, speed_repeats)
            rows.append(row)
            print(f"{label:34s} K={steps:<3d} overall {row['score overall']:.3f}  {row['img/s (batch 16)']:.2f} img/s",
                  flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="KEY=FOLDER", help=f"keys: {list(ROWS)}")
    ap.add_argument("--per-category", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speed-repeats", type=int, default=3)
    ap.add_argument("--out", default="results/benchmark")
    args = ap.parse_args()
    models = key_values(ap, args.model, "--model")
    unknown = set(models) - set(ROWS)
    if not models or unknown:
        ap.error(f"give --model KEY=FOLDER with keys from {list(ROWS)} (unknown: {sorted(unknown)})")
    df = run(models, args.per_category, args.guidance, args.seed, args.speed_repeats)
    report(df, "shapes benchmark", environment(per_category=args.per_category, guidance=args.guidance, seed=args.seed,
                                               models=models), args.out, digits=3)
    for path in figures(df, os.path.splitext(args.out)[0]):
        print("wrote", path)


if __name__ == "__main__":
    main()

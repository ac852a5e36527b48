"""Does the model's own exact likelihood pick its better images? Best of C by log p(τ | prompt), no training.

For every held-out prompt, C_max candidate trajectories from the prompt's generator, as the app draws them (guidance 3,
the model's default final step), each read by the evaluator and scored by its exact log p(τ | prompt) under the
model without guidance: the number `pipe(..., num_candidates=C)` keeps the highest of. Rows, per C:

- most likely of C: what `num_candidates=C` returns;
- least likely of C: the same number read backwards, a control (were the likelihood blind to what the evaluator
  checks, both rows would read as one sample);
- one sample: the mean over all candidates, a single draw's expected score (C = 1 of the other rows is one draw);
- any of C: the share of prompts where some candidate passes, the ceiling of any rule that picks one of C.

C < C_max takes each prompt's first C candidates. `num_candidates=C` itself draws its C in one batch from the same
generator, so its images differ from these while following the same rule. `s / image` is what the row costs per
image at batch 1 on this machine (median of the repeats): `num_candidates=C` for the rules that draw C, a plain call
for one sample.

    python -m analysis.likelihood_selection --model assets/ntm-shapes32 --candidates 1 2 4 8 \\
        --out docs/likelihood-selection-shapes

Writes <out>.json/.csv/.md and <out>.html (score against C and against seconds per image).
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from analysis import median_seconds
from ntm_core.data.shapes_eval import per_image
from ntm_core.data.shapes import CATEGORIES, eval_prompts
from ntm_core.pipeline import NTMPipeline, load_pipeline
from ntm_core.report import environment, report

RULES = ("most likely of C", "least likely of C", "one sample", "any of C")


def draw_candidates(pipe: NTMPipeline, per_category: int, c_max: int, steps: int = 4, guidance: float = 3.0,
                    seed: int = 0, batch: int = 64) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(passes [P, c_max] bool, log p(τ | prompt) in nats [P, c_max], categories [P]) for the held-out prompts.
    Prompt j's candidates all come from one generator seeded with the prompt's seed, one after another, as
    `num_candidates` draws them."""
    prompts = eval_prompts(per_category, seed)
    per = max(1, batch // c_max)  # prompts per pipeline call
    passes, logp = [], []
    for i in tqdm(range(0, len(prompts), per), desc=f"{c_max} candidates per prompt", unit="call"):
        part = prompts[i : i + per]
        rows = [p["caption"] for p in part for _ in range(c_max)]
        generators = [g for p in part for g in [torch.Generator().manual_seed(p["seed"])] * c_max]
        out = pipe(rows, num_inference_steps=steps, guidance_scale=guidance, generator=generators,
                   output_type="model", return_trajectory=True)
        density = out.trajectory.unguided_nll  # what num_candidates ranks by (tests/test_pipeline.py)
        logp.append(density.log_prob.float().view(len(part), c_max).cpu().numpy())
        read = per_image(list(out.images.float().cpu()), [p["spec"] for p in part for _ in range(c_max)])
        passes.append(read["failure"].isna().to_numpy().reshape(len(part), c_max))
    return np.concatenate(passes), np.concatenate(logp), [p["category"] for p in prompts]


def selection_table(passes: np.ndarray, logp: np.ndarray, categories: list[str], candidates: list[int]) -> pd.DataFrame:
    """The evaluator's score (per category, and overall as the mean of the categories, as `shapes_eval.score`) of each
    rule of RULES at each C."""
    p = len(passes)
    at = np.arange(p)
    cats = pd.Series(categories)
    order = [c for c in CATEGORIES if c in set(categories)]
    rows = []
    for c in candidates:
        first = slice(0, c)
        picked = {"most likely of C": passes[at, logp[:, first].argmax(1)],
                  "least likely of C": passes[at, logp[:, first].argmin(1)],
                  "one sample": passes.mean(1),
                  "any of C": passes[:, first].any(1)}
        for rule in RULES:
            per_cat = pd.Series(picked[rule].astype(float)).groupby(cats).mean().reindex(order)
            rows.append({"C": c, "rule": rule, **per_cat.to_dict(), "overall": per_cat.mean(), "prompts": p})
    return pd.DataFrame(rows)


def seconds_per_image(pipe: NTMPipeline, candidates: list[int], steps: int, guidance: float, repeats: int = 5,
                      prompt: str = "a red circle to the left of a blue square") -> dict[int, float]:
    """Median seconds of one `num_candidates=C` image at batch 1 (after a warm-up call)."""
    return {c: median_seconds(lambda r: pipe(prompt, num_inference_steps=steps, guidance_scale=guidance,
                                              generator=torch.Generator().manual_seed(r), num_candidates=c), repeats)
            for c in candidates}


def figure(df: pd.DataFrame, path: str) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("evaluator score against candidates C",
                                                        "most likely of C: score against CPU seconds per image"))
    for rule, part in df.groupby("rule", sort=False):
        fig.add_trace(go.Scatter(x=part["C"], y=part["overall"], mode="lines+markers", name=rule), 1, 1)
    best = df[df["rule"] == RULES[0]]
    fig.add_trace(go.Scatter(x=best["s / image"], y=best["overall"], mode="lines+markers+text", name="C candidates",
                             text=[f"C = {c}" for c in best["C"]], textposition="top center"), 1, 2)
    fig.update_xaxes(type="log", title_text="C (candidates per image)", row=1, col=1)
    fig.update_xaxes(title_text="seconds per image, batch 1", row=1, col=2)
    fig.update_yaxes(title_text="score overall (held-out prompts)", range=[0, 1])
    fig.update_layout(title="Best of C by the exact log p(τ | prompt)")
    fig.write_html(path, include_plotlyjs="cdn")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="assets/ntm-shapes32", help="an NTM pipeline folder trained on shapes")
    ap.add_argument("--candidates", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--per-category", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per C")
    ap.add_argument("--out", default=None, help="also write <out>.json/.csv/.md/.html")
    a = ap.parse_args(argv)
    if min(a.candidates) < 1:
        ap.error("--candidates must be ≥ 1")
    pipe = load_pipeline(a.model)
    if not isinstance(pipe, NTMPipeline):
        ap.error(f"{a.model} is no NTM: a flow-matching model has no exact likelihood to rank by")
    candidates = sorted(set(a.candidates))
    passes, logp, categories = draw_candidates(pipe, a.per_category, candidates[-1], a.steps, a.guidance, a.seed)
    df = selection_table(passes, logp, categories, candidates)
    speed = seconds_per_image(pipe, sorted({1, *candidates}), a.steps, a.guidance, a.repeats)
    df["s / image"] = [speed[1 if rule == "one sample" else c] for c, rule in zip(df["C"], df["rule"])]
    env = environment(model=a.model, steps=a.steps, guidance=a.guidance, final_step=pipe.final_step(None),
                      per_category=a.per_category, seed=a.seed, repeats=a.repeats)
    report(df, "best of C by the exact log p(τ | prompt): the evaluator's score per rule", env, a.out, digits=3)
    if a.out:
        figure(df, a.out + ".html")
        print("wrote", a.out + ".html")


if __name__ == "__main__":
    main()

"""Where each model's likelihood comes from: the exact −log p(x_s | history) of every reverse step, split into
the predictor's Gaussian (½‖z‖² and Σ log σ) and the transporter's −log|det J_T|, averaged over held-out shapes
images (one forward trajectory each, the same trajectories for every model).

    python -m analysis.likelihood_parts --model ntm=assets/ntm-shapes32 --model gauss=assets/gauss-shapes32 \\
        --n 64 --steps 4 --out docs/likelihood-parts

A step whose log-det is large and whose σ is large is modelled by the transporter (an autoregressive flow over
the tokens), not by the predictor: its samples then come from the transporter's token-by-token inverse.
Writes <out>.json/.csv/.md and <out>.html (plotly, one stacked bar per model and step).
"""
from __future__ import annotations

import argparse
import os

import pandas as pd
import plotly.graph_objects as go

from analysis import key_values
from analysis.benchmark import heldout_trajectory_nll
from ntm_core.report import environment, report
from ntm_core.pipeline import NTMPipeline, load_pipeline

PARTS = ("base ½‖z‖²", "Σ log σ", "−log|det J_T|")


def figure(df: pd.DataFrame) -> go.Figure:
    steps = df[df["step"] != "prior"]
    x = [steps["model"], [f"{r.t:g}→{r.s:g}" for r in steps.itertuples()]]
    fig = go.Figure()
    for col in PARTS:
        fig.add_bar(name=col, x=x, y=steps[col])
    fig.add_scatter(name="step total", x=x, y=steps["step total"], mode="markers", marker=dict(color="black"))
    fig.update_layout(barmode="relative", title="Exact −log p per reverse step, held-out mean (bits/dim)",
                      yaxis_title="bits per dimension", legend_orientation="h", height=420)
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=FOLDER", help="an NTM pipeline folder")
    ap.add_argument("--n", type=int, default=64, help="held-out images")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/likelihood-parts")
    args = ap.parse_args()
    models = key_values(ap, args.model, "--model")
    if not models:
        ap.error("give --model NAME=FOLDER at least once")
    tables = []
    for name, folder in models.items():
        pipe = load_pipeline(folder)
        if not isinstance(pipe, NTMPipeline):
            ap.error(f"{folder}: not an NTM pipeline (flow-matching models have no exact likelihood)")
        nll = heldout_trajectory_nll(pipe, args.n, args.steps, args.seed)
        tables.append(nll.parts_bits_per_dim(index=None).assign(model=name))
    df = pd.concat(tables, ignore_index=True)
    df = df[["model"] + [c for c in df.columns if c != "model"]]
    report(df, "likelihood parts per step", environment(n=args.n, steps=args.steps, seed=args.seed, models=models),
           args.out, digits=3)
    path = os.path.splitext(args.out)[0] + ".html"
    figure(df).write_html(path, include_plotlyjs="cdn")
    print("wrote", path)


if __name__ == "__main__":
    main()

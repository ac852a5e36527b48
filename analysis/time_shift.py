"""Where a few-step sampler puts its steps: the evaluator's score against the time grid's shift, no training — and,
for an NTM, what the same grid does to the likelihood bound.

A grid is t = t_min + (1 − t_min)·u′ with u′ = s·u / (1 + (s − 1)·u) on a uniform u (the SD3 / FLUX shift; s > 1 spends
more steps at high noise). Swapped in the diffusers way, `type(pipe.scheduler).from_config(config, ...)`: for an NTM
its `sample_shift` (the sampler's grid; the trajectory's own, `shift`, stays), for a flow-matching folder its
scheduler's `shift` (the Euler and the Gaussian sampler). For an NTM each row also gives the bound on x_{t_0} of
held-out renders (one forward trajectory each, K = the row's steps) with the trajectory's grid at that shift: the
density a model with that grid assigns, which is what `shift` (not `sample_shift`) would change.

    python -m analysis.time_shift --model ntm=assets/ntm-shapes32 --model fm=assets/fm-shapes32 \
        --shift 1 1.5 2 3 4 --steps 4 --out docs/time-shift-shapes

Rows: an NTM with its default final step, a flow-matching model with Euler steps; held-out prompts, fixed seeds.
Writes <out>.json/.csv/.md and <out>.html (score, and the NTM's bound, against shift).
"""
from __future__ import annotations

import argparse

import pandas as pd

from analysis import key_values
from analysis.benchmark import heldout_images, heldout_trajectory_nll
from analysis.score_model import score_model
from ntm_core.pipeline import NTMPipeline, load_pipeline
from ntm_core.report import environment, report

BOUND = "bound bits/dim on x_t0, trajectory at this shift"


def with_shift(pipe, shift: float, trajectory: bool = False):
    """The same pipeline (its networks shared, not copied) sampling on the grid of time shift `shift`; for an NTM with
    trajectory=True the trajectory's own grid too (its likelihoods), else that stays."""
    key = "shift" if trajectory or not isinstance(pipe, NTMPipeline) else "sample_shift"
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, **{key: float(shift)})
    return pipe


def sampling_shift(pipe) -> float:
    """The shift a folder samples on: an NTM's schedule says (sample_shift or its own), an FM scheduler's is its
    shift."""
    return pipe.scheduler.sampling_shift if isinstance(pipe, NTMPipeline) else float(pipe.scheduler.config.shift)


def heldout_bound(pipe: NTMPipeline, shift: float, steps: int, heldout) -> float:
    """Mean bound on x_{t_0} (bits/dim) of the held-out renders under the same networks with trajectory grid `shift`."""
    config = dict(pipe.scheduler.config)
    try:
        with_shift(pipe, shift, trajectory=True)
        return heldout_trajectory_nll(pipe, steps=steps, heldout=heldout).bound_bits_per_dim.mean().item()
    finally:
        pipe.scheduler = type(pipe.scheduler).from_config(config)


def sampler_of(pipe) -> str:
    return f"NTM, final step {pipe.final_step(None)}" if isinstance(pipe, NTMPipeline) else "FM, Euler"


def sweep(models: dict[str, str], shifts: list[float], steps: list[int], per_category: int, guidance: float,
          seed: int, n_heldout: int = 64) -> pd.DataFrame:
    rows = []
    heldout = heldout_images(n_heldout)
    for key, folder in models.items():
        pipe = load_pipeline(folder)
        bundled = sampling_shift(pipe)
        for shift in shifts:
            with_shift(pipe, shift)
            for k in steps:
                table = score_model(pipe, k, per_category=per_category, guidance=guidance, seed=seed)
                row = {"model": key, "sampler": sampler_of(pipe), "steps": k, "shift": float(shift),
                       "bundled sampling shift": bundled, "score overall": table.loc["overall", "score"],
                       "colour match": table.loc["overall", "colour_match"],
                       "shape fit": table.loc["overall", "shape_fit"], "prompts": int(table.loc["overall", "n"])}
                if isinstance(pipe, NTMPipeline):
                    row[BOUND] = heldout_bound(pipe, shift, k, heldout)
                rows.append(row)
                print(f"{key:6s} shift {shift:<5g} K={k:<3d} overall {row['score overall']:.3f}"
                      + (f"  bound on x_t0 {row[BOUND]:.3f}" if BOUND in row else ""), flush=True)
    return pd.DataFrame(rows)


def figure(df: pd.DataFrame, path: str) -> None:
    """Score against shift (every row) beside the NTM's bound against the same shift: the trade-off in one picture."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("evaluator score (held-out prompts)",
                                                        "NTM bound on x_t0, bits/dim (lower is better)"))
    for (sampler, steps), part in df.groupby(["sampler", "steps"], sort=False):
        name = f"{sampler}, {steps} steps"
        fig.add_trace(go.Scatter(x=part["shift"], y=part["score overall"], mode="lines+markers", name=name), 1, 1)
        if BOUND in part and part[BOUND].notna().any():
            fig.add_trace(go.Scatter(x=part["shift"], y=part[BOUND], mode="lines+markers", name=name + " (bound)"),
                          1, 2)
    fig.update_xaxes(type="log", title_text="time shift s (> 1: more steps at high noise)")
    fig.update_layout(title="Where the steps go: sample quality against the likelihood bound")
    fig.write_html(path, include_plotlyjs="cdn")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="KEY=FOLDER")
    ap.add_argument("--shift", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0, 4.0])
    ap.add_argument("--steps", type=int, nargs="+", default=[4])
    ap.add_argument("--per-category", type=int, default=32)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-heldout", type=int, default=64, help="held-out renders for an NTM's bound")
    ap.add_argument("--out", default=None, help="also write <out>.json/.csv/.md/.html")
    a = ap.parse_args(argv)
    models = key_values(ap, a.model, "--model")
    if not models:
        ap.error("give --model KEY=FOLDER (an NTM or a flow-matching folder), once per model")
    if min(a.shift) <= 0 or min(a.steps) < 1:
        ap.error("shifts must be > 0 and steps ≥ 1")
    df = sweep(models, a.shift, a.steps, a.per_category, a.guidance, a.seed, a.n_heldout)
    report(df, "evaluator score vs time shift", environment(models=models, per_category=a.per_category,
                                                            guidance=a.guidance, seed=a.seed, n_heldout=a.n_heldout),
           a.out, digits=3)
    if a.out:
        figure(df, a.out + ".html")
        print("wrote", a.out + ".html")


if __name__ == "__main__":
    main()

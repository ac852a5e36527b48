"""NTM's exact likelihood next to the flow-matching baseline's ODE likelihood, on the same noised images.

    python -m analysis.likelihood_vs_ode --ntm assets/ntm-shapes32 --fm assets/fm-shapes32 --n 16 \\
        --out docs/likelihood-vs-ode

Both models were trained on the same shapes data. The images are held-out renders with their captions (guidance 1),
noised once to x_{t_0} = (1 − t_0)·x + t_0·ε with t_0 = the NTM's t_min, so that both numbers are densities of
the same x_{t_0} in [−1, 1] scaling, in bits per image dimension:
- FM: log p(x_{t_0}) by the probability-flow ODE from t_0 to 1 (`flow_matching`'s ODESolver.compute_likelihood),
  Euler and midpoint at several numbers of function evaluations (NFE); the divergence exactly where D ≤
  --exact-max-dim, else Hutchinson with one Rademacher probe per image, the same probe at every NFE.
- NTM: the variational bound −log p(x_{t_0}) ≤ −log p(τ) + log q(x_{t_1..t_K} | x_{t_0}) with K = --steps, whose
  −log p(τ) is exact (one transporter pass over the K+1 states and one predictor pass); one forward trajectory per
  image, and --trajectories of them from the same x_{t_0}: their mean bound, and their importance-weighted bound
  after 2, 4, … of them (−log₂ of the mean of p(τ_i)/q(x_{t_1..t_K} | x_{t_0}), still an upper bound on
  −log₂ p(x_{t_0}) in expectation, tightening toward it).
Speed: seconds per image of each, measured in this run on this machine. FM's estimate counts as converged at the
smallest NFE within --tolerance bits/dim of the most accurate reading (midpoint at the largest NFE).
Writes <out>.json/.csv/.md and <out>.html (bits/dim against NFE and against wall time).
"""
from __future__ import annotations

import argparse
import math
import os
import time

import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from analysis.benchmark import heldout_images
from ntm_core.report import environment, report
from ntm_core.flow_matching import ode_log_likelihood, velocity
from ntm_core.pipeline import FlowMatchingPipeline, NTMPipeline, load_pipeline
from ntm_core.trajectory import LN2, continue_trajectory, importance_weighted

IMPORTANCE_WEIGHTED = "bound, importance-weighted"


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def fm_rows(fm: FlowMatchingPipeline, xt: torch.Tensor, text, t0: float, nfes: list[int], methods: list[str],
            exact: bool, seed: int) -> list[dict]:
    dim = xt[0].numel()
    vel = lambda x, t, txt: velocity(fm.predictor, x, t, txt)  # noqa: E731
    rows = []
    for method in methods:
        for nfe in nfes:
            if method == "midpoint" and nfe % 2:
                continue
            log_p, sec = _timed(lambda: ode_log_likelihood(vel, xt, t0, text, nfe, method, exact, seed).detach())
            bpd = -log_p / (dim * LN2)
            rows.append({"model": "FM (ODE)", "method": method, "NFE": nfe,
                         "divergence": "exact" if exact else "Hutchinson (1 probe)",
                         "bits/dim": bpd.mean().item(), "std error": (bpd.std() / math.sqrt(len(bpd))).item(),
                         "seconds/image": sec / len(xt)})
            r = rows[-1]
            print(f"  FM {method:8s} NFE {nfe:4d}: {r['bits/dim']:.4f} bits/dim, {r['seconds/image']:.3f} s/img")
    return rows


def ntm_rows(ntm: NTMPipeline, states: torch.Tensor, grid: torch.Tensor, text, trajectories: int,
             seed: int) -> list[dict]:
    model = ntm.ntm
    with torch.no_grad():  # two timed calls, the faster kept (the first one also warms up)
        nll, sec = _timed(lambda: model.trajectory_nll(states, grid, text))
        _, sec2 = _timed(lambda: model.trajectory_nll(states, grid, text))
    sec = min(sec, sec2)
    bound = nll.bound_bits_per_dim
    rows = [{"model": "NTM (exact trajectory NLL)", "method": f"bound, 1 trajectory, K={grid.numel() - 1}",
             "NFE": 1, "divergence": "exact (log-det)", "bits/dim": bound.mean().item(),
             "std error": (bound.std() / math.sqrt(len(bound))).item(), "seconds/image": sec / len(states)}]
    if trajectories > 1:  # the same x_{t_0}, fresh x_{t_1..t_K}: the bound's spread, its average, and the
        # importance-weighted bound after 2, 4, … of them (a bound on −log p(x_{t_0}) itself that tightens toward it)
        k, dims = grid.numel() - 1, states[0, 0].numel()
        more, secs = [], []
        for j in range(trajectories):
            g = torch.Generator().manual_seed(seed + 100 + j)
            with torch.no_grad():
                r, s = _timed(lambda: model.trajectory_nll(continue_trajectory(states[:, 0], grid, g), grid, text))
            more.append(r.bound_bits_per_dim.double())
            secs.append(s)
        more = torch.stack(more)
        avg = more.mean(0)
        rows.append({"model": "NTM (exact trajectory NLL)",
                     "method": f"bound, mean of {trajectories} trajectories, K={k}",
                     "NFE": trajectories, "divergence": "exact (log-det)", "bits/dim": avg.mean().item(),
                     "std error": (avg.std() / math.sqrt(len(avg))).item(), "seconds/image": sum(secs) / len(states)})
        for m in sorted({*(2**i for i in range(1, trajectories.bit_length())), trajectories}):  # 2, 4, …, all
            iw = importance_weighted(more[:m], dims, dim=0)
            rows.append({"model": "NTM (exact trajectory NLL)", "method": f"{IMPORTANCE_WEIGHTED}, K={k}", "NFE": m,
                         "divergence": "exact (log-det)", "bits/dim": iw.mean().item(),
                         "std error": (iw.std() / math.sqrt(len(iw))).item(),
                         "seconds/image": sum(secs[:m]) / len(states)})
    return rows


def converged_nfe(df: pd.DataFrame, tolerance: float) -> tuple[pd.Series, pd.Series]:
    """(the most accurate FM reading, the cheapest FM reading within tolerance of it)."""
    fm = df[df["model"] == "FM (ODE)"]
    ref = fm[fm["method"] == "midpoint"].sort_values("NFE").iloc[-1] if (fm["method"] == "midpoint").any() \
        else fm.sort_values("NFE").iloc[-1]
    ok = fm[(fm["bits/dim"] - ref["bits/dim"]).abs() <= tolerance].sort_values("seconds/image")
    return ref, ok.iloc[0]


def figure(df: pd.DataFrame, title: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("against function evaluations", "against wall time"))
    fm = df[df["model"] == "FM (ODE)"]
    for method, part in fm.groupby("method", sort=False):
        for col, x in ((1, "NFE"), (2, "seconds/image")):
            fig.add_scatter(x=part[x], y=part["bits/dim"], error_y=dict(array=part["std error"]), mode="lines+markers",
                            name=f"FM ODE, {method}", legendgroup=method, showlegend=col == 1, row=1, col=col)
    ntm = df[df["model"] != "FM (ODE)"]
    weighted = ntm["method"].str.startswith(IMPORTANCE_WEIGHTED)
    for col, x in ((1, "NFE"), (2, "seconds/image")):  # the importance-weighted bound: a curve over trajectories
        part = ntm[weighted]
        fig.add_scatter(x=part[x], y=part["bits/dim"], error_y=dict(array=part["std error"]), mode="lines+markers",
                        marker=dict(symbol="star", size=10), name="NTM, importance-weighted bound (x: trajectories)",
                        legendgroup="iw", showlegend=col == 1 and len(part) > 0, row=1, col=col)
    for r in ntm[~weighted].to_dict("records"):
        for col, x in ((1, r["NFE"]), (2, r["seconds/image"])):
            fig.add_scatter(x=[x], y=[r["bits/dim"]], error_y=dict(array=[r["std error"]]), mode="markers",
                            marker=dict(size=12, symbol="star"), name=f"NTM: {r['method']}", legendgroup=r["method"],
                            showlegend=col == 1, row=1, col=col)
    fig.update_xaxes(type="log", title_text="function evaluations (NTM: network passes)", row=1, col=1)
    fig.update_xaxes(type="log", title_text="seconds per image (this CPU)", row=1, col=2)
    fig.update_yaxes(title_text="−log₂ p(x_t0) per dimension (bits/dim, [−1, 1] scaling)", row=1, col=1)
    fig.update_layout(title=title, height=460, legend_orientation="h", legend_y=-0.25)
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ntm", default="assets/ntm-shapes32")
    ap.add_argument("--fm", default="assets/fm-shapes32")
    ap.add_argument("--n", type=int, default=16, help="held-out images")
    ap.add_argument("--steps", type=int, default=4, help="NTM trajectory steps K")
    ap.add_argument("--trajectories", type=int, default=8, help="NTM forward trajectories for the averaged bound")
    ap.add_argument("--nfe", type=int, nargs="+", default=[4, 8, 16, 50, 200])
    ap.add_argument("--methods", nargs="+", default=["euler", "midpoint"])
    ap.add_argument("--exact-max-dim", type=int, default=64, help="exact divergence up to this D, else Hutchinson")
    ap.add_argument("--tolerance", type=float, default=0.01, help="bits/dim: when FM's estimate counts as converged")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/likelihood-vs-ode")
    a = ap.parse_args()

    ntm, fm = load_pipeline(a.ntm), load_pipeline(a.fm)
    if not isinstance(ntm, NTMPipeline) or not isinstance(fm, FlowMatchingPipeline):
        raise SystemExit("--ntm must be an NTM folder and --fm a flow-matching folder")
    x, captions = heldout_images(a.n)
    x = x.to(dtype=torch.float32)
    text = ntm.encode_prompt(captions)[0]
    states, grid = ntm.ntm.forward_trajectory(x, a.steps, torch.Generator().manual_seed(a.seed))  # x_t0 = [:, 0]
    t0 = float(grid[0])
    exact = x[0].numel() <= a.exact_max_dim
    div = "exact" if exact else "Hutchinson"
    print(f"{a.n} held-out images, D = {x[0].numel()}, t_0 = {t0:g}; FM divergence: {div}")
    rows = ntm_rows(ntm, states, grid, text, a.trajectories, a.seed)
    rows += fm_rows(fm, states[:, 0].contiguous(), text, t0, a.nfe, a.methods, exact, a.seed)
    df = pd.DataFrame(rows)
    ref, conv = converged_nfe(df, a.tolerance)
    ntm_sec = df.iloc[0]["seconds/image"]
    summary = {
        "fm_reference": f"{ref['method']} NFE {ref['NFE']}: {ref['bits/dim']:.4f} bits/dim",
        "fm_converged": f"{conv['method']} NFE {conv['NFE']} (within {a.tolerance} bits/dim of the reference)",
        "fm_converged_seconds_per_image": conv["seconds/image"],
        "ntm_seconds_per_image": ntm_sec,
        "speedup_ntm_vs_converged_fm": conv["seconds/image"] / ntm_sec,
        "fm_at_fewest_nfe": {f"{r['method']} NFE {r['NFE']}": r["bits/dim"]
                             for r in df[df["model"] == "FM (ODE)"].to_dict("records") if r["NFE"] <= 8},
        "ntm_importance_weighted": {f"{r['NFE']} trajectories": r["bits/dim"]
                                    for r in df[df["method"].str.startswith(IMPORTANCE_WEIGHTED)].to_dict("records")},
    }
    env = environment(ntm=a.ntm, fm=a.fm, n=a.n, steps=a.steps, t0=t0, seed=a.seed)
    report(df, "Likelihood of the same noised images: NTM exact trajectory vs flow-matching ODE", env, a.out,
           extra={"summary": summary})
    print(summary)
    stem = os.path.splitext(a.out)[0]
    figure(df, f"−log p(x_t0): FM ODE estimate vs NTM (t_0 = {t0:g}, {a.n} held-out shapes images)").write_html(
        stem + ".html", include_plotlyjs="cdn")


if __name__ == "__main__":
    main()

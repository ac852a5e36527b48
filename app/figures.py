"""The app's plotly figures and pandas tables: likelihood parts, distributions, rankings, loss curves, latents."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import plotly.io as pio
import torch
from plotly.subplots import make_subplots

from ntm_core.images import to_uint8
from ntm_core.model import NTMSample, TrajectoryNLL


def nll_parts_figure(nll: TrajectoryNLL, index: int = 0, title: str = "") -> go.Figure:
    df = nll.parts_bits_per_dim(index)
    steps = df[df["step"] != "prior"]
    labels = [f"step {r.step}: t={r.t:g}→{r.s:g}" for r in steps.itertuples()]
    fig = go.Figure()
    for col in ("base ½‖z‖²", "Σ log σ", "−log|det J_T|", "const"):
        fig.add_bar(name=col, x=labels, y=steps[col])
    fig.add_scatter(name="step total", x=labels, y=steps["step total"], mode="lines+markers",
                    line=dict(color="black"))
    fig.update_layout(barmode="relative", title=title or "Exact −log p per reverse step (bits/dim)",
                      yaxis_title="bits per dimension", legend_orientation="h", height=380,
                      margin=dict(l=40, r=20, t=50, b=40))
    return fig


def distribution_figure(values: pd.DataFrame, x: str, y: str, title: str) -> go.Figure:
    """Box + points of `y` per `x` (e.g. trajectory bits/dim per image over several forward trajectories)."""
    fig = go.Figure()
    for key, grp in values.groupby(x, sort=False):
        fig.add_box(y=grp[y], name=str(key), boxpoints="all", jitter=0.4, pointpos=0)
    fig.update_layout(title=title, yaxis_title=y, showlegend=False, height=360, margin=dict(l=40, r=20, t=50, b=40))
    return fig


def ranking_figure(df: pd.DataFrame, label: str, value: str, title: str, error: str | None = None,
                   error_scale: float = 1.0) -> go.Figure:
    """Points with ±error_scale·df[error] bars (not bars from 0, which would hide differences of a few hundredths),
    and a line at 0, where `value` is a difference to a reference row."""
    df = df.sort_values(value)
    bars = df[error] * error_scale if error is not None and error in df else None
    fig = go.Figure(go.Scatter(x=df[value], y=df[label], mode="markers", marker=dict(size=10),
                               error_x=dict(type="data", array=bars, visible=bars is not None)))
    if (df[value] == 0).any():
        fig.add_vline(x=0, line=dict(color="gray", dash="dot"))
    fig.update_layout(title=title, xaxis_title=value, height=max(260, 40 * len(df) + 120),
                      yaxis=dict(autorange="reversed"), margin=dict(l=40, r=20, t=50, b=40))
    return fig


def settled_range(step: pd.Series, y: pd.Series, settle: float = 0.25, spike: float = 3.0) -> list[float] | None:
    """A y range that shows the curve after its first `settle` share of steps, when the start is so high (the
    untrained loss, `spike` × the rest's spread above it) that autorange would flatten everything after it; else
    None (autorange)."""
    ok = y.notna() & np.isfinite(y.astype(float))
    step, y = step[ok].astype(float), y[ok].astype(float)
    if len(y) < 5:
        return None
    later = y[step >= step.min() + settle * (step.max() - step.min())]
    lo, hi = float(later.min()), float(later.max())
    pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 1.0
    if float(y.max()) - hi <= spike * (hi - lo + pad):
        return None
    return [min(lo, float(y.min())) - pad, hi + pad]


def loss_curve_figure(metrics: pd.DataFrame, title: str = "", empty_note: str = "") -> go.Figure:
    """Loss (left axis) and bits/dim (right, dotted) against step, one colour per number of trajectory steps K: a
    step's loss depends on the K it drew, so one line through all of them would zigzag between K's levels.
    Without metrics: no axes, only a line that says why (`empty_note`, or that no step is logged yet)."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    if not len(metrics):
        fig.add_annotation(text=empty_note or "No step logged yet: the curve starts at the first log interval.",
                           x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=14))
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
    else:
        ks = sorted(metrics["num_steps"].dropna().unique()) if "num_steps" in metrics else []
        groups = ([(f" · K={int(k)}", metrics[metrics["num_steps"] == k]) for k in ks] if len(ks) > 1
                  else [("", metrics)])
        palette = pio.templates[pio.templates.default].layout.colorway or [None]
        for i, (suffix, rows) in enumerate(groups):
            colour = palette[i % len(palette)]
            fig.add_scatter(x=rows["step"], y=rows["loss"], name="loss" + suffix, mode="lines",
                            line=dict(color=colour))
            if "bits_per_dim" in rows:
                fig.add_scatter(x=rows["step"], y=rows["bits_per_dim"], name="bits/dim" + suffix, mode="lines",
                                line=dict(color=colour, dash="dot"), secondary_y=True)
        clipped = False
        for col, secondary, name in (("loss", False, "loss"), ("bits_per_dim", True, "bits/dim")):
            if col not in metrics:
                continue
            span = settled_range(metrics["step"], metrics[col])
            clipped |= span is not None
            fig.update_yaxes(title_text=name, secondary_y=secondary, range=span)
        if clipped:
            fig.add_annotation(text="axes fit the later steps: the first ones run off the top", x=1, y=1.02,
                               xref="paper", yref="paper", xanchor="right", yanchor="bottom", showarrow=False,
                               font=dict(size=11, color="grey"))
    fig.update_layout(title=title or "Training", xaxis_title="step", height=380,
                      legend=dict(orientation="h", y=-0.22, yanchor="top"), margin=dict(l=40, r=20, t=50, b=90))
    return fig


# ---- latents ----
def to_rgb(t: torch.Tensor, scale: float) -> np.ndarray:
    """[C, H, W] with values in [−scale, scale] → uint8 RGB (1 channel → grey; > 3 channels → the first 3)."""
    x = t.detach().float().cpu()
    x = x[:3] if x.shape[0] >= 3 else x[:1].repeat(3, 1, 1)
    return to_uint8(x / max(scale, 1e-8))


def latent_panels(sample: NTMSample, index: int = 0) -> dict[str, list[tuple[np.ndarray, str]]]:
    """Image panels per quantity, one column per state from t = 1 down to t_0, with one colour scale per quantity
    across all steps (so steps compare). μ, σ and z sit in the column of the state they produce; the t = 1 column
    has none (x_1 is drawn from the standard normal prior), so it holds a blank tile that says so."""
    K = sample.mu.shape[1]
    grid = sample.grid.tolist()
    x, u = sample.x[index], sample.u[index]
    out = {}
    for name, stack, caps in [
        ("x (state)", x.flip(0), [f"x at t={grid[K - i]:.3g}" for i in range(K + 1)]),
        ("u = f_T(x)", u.flip(0), [f"u at t={grid[K - i]:.3g}" for i in range(K + 1)]),
        ("μ (predictor mean)", sample.mu[index], [f"μ for t={grid[K - i - 1]:.3g}" for i in range(K)]),
        ("σ (predictor scale)", sample.sigma[index], [f"log σ for t={grid[K - i - 1]:.3g}" for i in range(K)]),
        ("z (noise drawn)", sample.z[index], [f"z for t={grid[K - i - 1]:.3g}" for i in range(K)]),
    ]:
        if name.startswith("σ"):  # positive: show log σ centred on its mean
            vals = stack.log()
            vals = vals - vals.mean()
        else:
            vals = stack
        scale = 1.0 if name.startswith("x") else float(vals.abs().max())
        tiles = [(to_rgb(v, scale), c) for v, c in zip(vals, caps)]
        if len(tiles) == K:
            blank = np.full_like(tiles[0][0], 255)
            tiles.insert(0, (blank, "t=1: prior N(0, I)"))
        out[name] = tiles
    return out


LATENT_STATS_COLUMNS = ["step", "t→s", "x std (source)", "u std (source)", "|u − x| mean", "μ std", "σ mean",
                        "z std"]


def latent_stats_table(sample: NTMSample, index: int = 0) -> pd.DataFrame:
    K = sample.mu.shape[1]
    grid = sample.grid.tolist()
    rows = []
    for i in range(K):
        k = K - i  # source grid index
        rows.append({"step": i + 1, "t→s": f"{grid[k]:.3g}→{grid[k - 1]:.3g}",
                     "x std (source)": sample.x[index, k].std().item(), "u std (source)": sample.u[index, k].std().item(),
                     "|u − x| mean": (sample.u[index, k] - sample.x[index, k]).abs().mean().item(),
                     "μ std": sample.mu[index, i].std().item(), "σ mean": sample.sigma[index, i].mean().item(),
                     "z std": sample.z[index, i].std().item()})
    return pd.DataFrame(rows, columns=LATENT_STATS_COLUMNS).round(4)


def latent_histogram_figure(sample: NTMSample, index: int = 0) -> go.Figure:
    """Per step: how far the transporter moves each value (u − x), and the predictor's log σ; one colour per step
    in both panels."""
    K = sample.mu.shape[1]
    colours = px.colors.qualitative.Plotly
    fig = make_subplots(rows=1, cols=2, subplot_titles=("u − x per step (what the transporter moves)",
                                                        "log σ per step (the predictor's scale)"))
    for i in range(K):
        k = K - i
        label = f"step {i + 1}: t={sample.grid[k].item():.3g}→{sample.grid[k - 1].item():.3g}"
        colour = colours[i % len(colours)]
        fig.add_histogram(x=(sample.u[index, k] - sample.x[index, k]).flatten().cpu().numpy(), name=label,
                          marker_color=colour, opacity=0.6, nbinsx=60, row=1, col=1, legendgroup=str(i))
        fig.add_histogram(x=sample.sigma[index, i].log().flatten().cpu().numpy(), name=label, marker_color=colour,
                          opacity=0.6, nbinsx=60, row=1, col=2, legendgroup=str(i), showlegend=False)
    fig.update_xaxes(title_text="u − x (value in the model's [−1, 1] scaling)", row=1, col=1)
    fig.update_xaxes(title_text="log σ", row=1, col=2)
    fig.update_yaxes(title_text="count (values in the image)", row=1, col=1)
    fig.update_layout(barmode="overlay", height=360, margin=dict(l=50, r=20, t=50, b=50), legend_orientation="h",
                      legend_y=-0.25)
    return fig


def latent_heatmap_figure(sample: NTMSample, index: int = 0) -> go.Figure:
    """|u − x| (channel mean) per step as heatmaps on one colour scale."""
    K = sample.mu.shape[1]
    diffs = [(sample.u[index, K - i] - sample.x[index, K - i]).abs().mean(0).cpu().numpy() for i in range(K + 1)]
    vmax = max(float(d.max()) for d in diffs) or 1.0
    fig = make_subplots(rows=1, cols=K + 1, subplot_titles=[f"t={sample.grid[K - i].item():.3g}" for i in range(K + 1)])
    for i, d in enumerate(diffs):
        fig.add_heatmap(z=d[::-1], zmin=0, zmax=vmax, colorscale="Viridis", showscale=i == K, row=1, col=i + 1)
    fig.update_layout(title="|f_T(x) − x| per state (channel mean)", height=260, margin=dict(l=20, r=20, t=60, b=20))
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig

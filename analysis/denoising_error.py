"""How a flow-matching backbone denoises, noise level by noise level, on held-out shapes images with their own
captions at t = 0.1 … 0.9: the error of its clean-image estimate x̂₀ = x_t − t·v(x_t, t, c) and of v itself, and
how patchy x̂₀ is.

The training loss averages over t and hides where a backbone fails. One that denoises well at low noise but not
at high noise lacks global coherence: each patch token decides alone, and its samples are fragments although its
loss looks reasonable. `seams` measures exactly that: the mean step between neighbouring pixels across patch
borders over the mean step within patches, in x̂₀ (`seams_data`: the same for the real images, ≈ 1). A backbone
whose tokens do not know where they are predicts a patchwork, seams ≫ 1. The "mean image" row (x̂₀ = the batch's
mean image, whatever x_t) is the error of knowing nothing.

    python -m analysis.denoising_error --model fm=assets/fm-shapes32 --out docs/denoising-error

A second table says whether the tokens can know where they are: the norm of the predictor's position table
against that of a token's content (its projected patch at t = 0.9), and for how many tokens the nearest table
entry is a grid neighbour's (1.0 for a sin-cos table).

Writes <out>.json/.csv/.md, <out>.html (plotly: x̂₀ error and seams against t, a line per model) and
<out>-positions.json/.csv/.md.
"""
from __future__ import annotations

import argparse

import pandas as pd
import torch
from diffusers.utils.torch_utils import randn_tensor

from analysis import key_values
from ntm_core.data.shapes import ShapesDataset
from ntm_core.flow_matching import velocity
from ntm_core.pipeline import FlowMatchingPipeline, load_pipeline
from ntm_core.report import environment, report

TIMES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def seam_ratio(images: torch.Tensor, patch: int) -> float:
    """Mean |step| between neighbouring pixels across patch borders / within patches ([B, C, H, W] images)."""
    steps_x = (images[..., :, 1:] - images[..., :, :-1]).abs()  # step from column j to j + 1
    steps_y = (images[..., 1:, :] - images[..., :-1, :]).abs()
    border_x = torch.arange(steps_x.shape[-1], device=images.device) % patch == patch - 1
    border_y = torch.arange(steps_y.shape[-2], device=images.device) % patch == patch - 1
    across = torch.cat([steps_x[..., border_x].flatten(), steps_y[..., border_y, :].flatten()]).float().mean()
    within = torch.cat([steps_x[..., ~border_x].flatten(), steps_y[..., ~border_y, :].flatten()]).float().mean()
    return (across / within).item()


@torch.no_grad()
def position_table_stats(predictor, x0: torch.Tensor, t: float = 0.9, seed: int = 0) -> dict:
    """How much a token's position weighs in its input, and how finely the table resolves the grid."""
    table = predictor.pos[0].float()
    n, cols = len(table), predictor.patches.width // predictor.patches.size
    row, col = torch.arange(n) // cols, torch.arange(n) % cols
    nearest = (torch.cdist(table, table) + torch.eye(n) * 1e9).argmin(1).cpu()
    neighbour = ((row - row[nearest]).abs() + (col - col[nearest]).abs() == 1).float().mean().item()
    g = torch.Generator(x0.device).manual_seed(seed)
    xt = (1 - t) * x0 + t * randn_tensor(x0.shape, generator=g, device=x0.device, dtype=x0.dtype)
    content = predictor.proj_in(predictor.patches.tokens(xt.to(table.dtype))).norm(dim=-1).mean().item()
    return {"table_norm": table.norm(dim=-1).mean().item(), "content_norm_t0.9": content,
            "nearest_is_neighbour": neighbour}


def held_out(n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    data = ShapesDataset("test", seed=seed)
    items = [data[i] for i in range(n)]
    return torch.stack([it["image"] for it in items]), [it["caption"] for it in items]


@torch.no_grad()
def denoising_error(pipe: FlowMatchingPipeline, x0: torch.Tensor, captions: list[str], times=TIMES, seed: int = 0,
                    draws: int = 2) -> pd.DataFrame:
    """Per t: mean squared error per pixel of x̂₀ and of v against the true x₀ and ε − x₀ ([−1, 1] pixels), and
    x̂₀'s seam ratio at the predictor's patch size, averaged over the images and `draws` noise draws per image
    (the same draws for every model, by seed)."""
    if not isinstance(pipe, FlowMatchingPipeline):
        raise TypeError(f"a flow-matching pipeline is needed (its velocity), not {type(pipe).__name__}")
    dtype = next(pipe.predictor.parameters()).dtype
    text, _ = pipe.encode_prompt(captions)
    x0 = x0.to(pipe.device, dtype)
    g = torch.Generator(pipe.device).manual_seed(seed)
    patch = pipe.predictor.config.patch_size
    rows = []
    for t in times:
        x0_err = v_err = seams = 0.0
        for _ in range(draws):
            eps = randn_tensor(x0.shape, generator=g, device=pipe.device, dtype=dtype)
            xt = (1 - t) * x0 + t * eps
            v = velocity(pipe.predictor, xt, t, text)
            x0_hat = xt - t * v
            x0_err += (x0_hat - x0).float().pow(2).mean().item() / draws
            v_err += (v - (eps - x0)).float().pow(2).mean().item() / draws
            seams += seam_ratio(x0_hat, patch) / draws
        rows.append({"t": t, "x0_mse": x0_err, "v_mse": v_err, "seams": seams, "seams_data": seam_ratio(x0, patch)})
    return pd.DataFrame(rows)


def figure(df: pd.DataFrame, title: str):
    # plotly here, not at the top: the training recipe runs this script on GPU machines that have no plotly
    import plotly.graph_objects as go
    from plotly.colors import DEFAULT_PLOTLY_COLORS
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("MSE of x̂₀ per pixel ([−1, 1] scale)",
                                                        "seams of x̂₀ (patch borders / within; data ≈ 1)"))
    for i, (name, part) in enumerate(df.groupby("model", sort=False)):
        colour = DEFAULT_PLOTLY_COLORS[i % len(DEFAULT_PLOTLY_COLORS)]
        fig.add_trace(go.Scatter(x=part["t"], y=part["x0_mse"], mode="lines+markers", name=name, legendgroup=name,
                                 line_color=colour), row=1, col=1)
        if part["seams"].notna().any():
            fig.add_trace(go.Scatter(x=part["t"], y=part["seams"], mode="lines+markers", name=name, legendgroup=name,
                                     line_color=colour, showlegend=False), row=1, col=2)
    fig.update_xaxes(title_text="noise level t")
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_layout(title=title, template="plotly_white")
    return fig


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, metavar="NAME=FOLDER",
                    help="a flow-matching pipeline folder; repeat to compare")
    ap.add_argument("--images", type=int, default=64, help="held-out images")
    ap.add_argument("--draws", type=int, default=2, help="noise draws per image and t")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write <out>.json/.csv/.md/.html")
    ap.add_argument("--no-plot", action="store_true", help="no .html (on a machine without plotly)")
    a = ap.parse_args(argv)
    models = key_values(ap, a.model, "--model")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x0, captions = held_out(a.images, a.seed)
    mean = (x0 - x0.mean(0, keepdim=True)).pow(2).mean().item()
    nan = float("nan")
    frames = [pd.DataFrame({"model": "mean image", "t": TIMES, "x0_mse": mean, "v_mse": nan, "seams": nan,
                            "seams_data": nan})]
    positions = []
    for name, folder in models.items():
        pipe = load_pipeline(folder).to(device)
        try:
            frames.append(denoising_error(pipe, x0, captions, seed=a.seed, draws=a.draws).assign(model=name))
        except TypeError as e:
            ap.error(f"{folder}: {e}")
        positions.append({"model": name, **position_table_stats(pipe.predictor, x0.to(pipe.device), seed=a.seed)})
    df = pd.concat(frames, ignore_index=True)[["model", "t", "x0_mse", "v_mse", "seams", "seams_data"]]
    title = f"x̂₀ error by noise level ({a.images} held-out shapes images, {a.draws} noise draws each)"
    report(df, title, environment(models=models, images=a.images, draws=a.draws, seed=a.seed), a.out)
    report(pd.DataFrame(positions), "the predictor's position table", environment(models=models, seed=a.seed),
           a.out and a.out.removesuffix(".json") + "-positions", digits=3)
    if a.out and not a.no_plot:
        figure(df, title).write_html(a.out.removesuffix(".json") + ".html", include_plotlyjs="cdn")


if __name__ == "__main__":
    main()

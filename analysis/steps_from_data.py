"""Which reverse step of a model loses the data: start its K-step sampler at the state x_{t_k} of a forward
trajectory from real images of the prompts (renders of the evaluator's own specs), sample only the last k steps,
and score the image with the evaluator (ntm_core.data.shapes_eval). k = K starts at x_1, which is pure noise, so it reads
as ordinary sampling; k = 1 is the last step alone; k = 0 is the real x_{t_0} (the ceiling). Every model gets the same
images, trajectories and sampling seeds.

A flow-matching folder is read as its K-step Gaussian sampler, which is exactly the NTM it initialises (NTM_METHOD
§5: the step-0 model of objective fm_to_ntm), so a finetune can be compared with where it started:

    python -m analysis.steps_from_data --model fm=runs/fm/pipeline --model ntm=runs/ntm/pipeline \\
        --split train --categories single_object --per-category 64 --out docs/steps-from-data

Writes <out>.json/.csv/.md and <out>.html (score and shape fit against the start time, one line per model).
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from analysis import key_values
from ntm_core.data.shapes_eval import score
from ntm_core.data.shapes import CATEGORIES, Spec, eval_prompts, render
from ntm_core.flow_matching import ntm_from_flow_matching
from ntm_core.images import from_uint8
from ntm_core.model import NTM
from ntm_core.pipeline import NTMPipeline, load_pipeline
from ntm_core.report import environment, report
from ntm_core.trajectory import TrajectorySchedule
from ntm_core.transporter import Transporter


def as_ntm(pipe, t_min: float = 0.05) -> NTM:
    """The NTM of an NTM pipeline; for a flow-matching pipeline, its Gaussian sampler as an NTM (identity transporter)."""
    if isinstance(pipe, NTMPipeline):
        return pipe.ntm
    c = pipe.predictor.config
    identity = Transporter(sample_size=c.sample_size, in_channels=c.in_channels, num_blocks=0)
    return ntm_from_flow_matching(pipe.predictor, identity, TrajectorySchedule(t_min=t_min)).to(pipe.device)


@torch.no_grad()
def steps_from_data(pipe, prompts: list[dict], num_steps: int = 4, guidance: float = 3.0, temperature: float = 1.0,
                    denoise: str = "none", seed: int = 0, batch: int = 64) -> pd.DataFrame:
    """One row per start step k = K..0: the evaluator's overall score, colour match and shape fit of x_{t_0}
    (denoise='score': after the trajectory-score Tweedie step) sampled from x_{t_k} of each prompt's render."""
    if denoise not in ("none", "score"):
        raise ValueError(f"denoise must be 'none' or 'score', got {denoise!r}")
    model = as_ntm(pipe).eval()
    dtype, device = next(model.predictor.parameters()).dtype, pipe.device
    specs = [Spec.from_dict(p["spec"]) for p in prompts]
    x0 = torch.stack([from_uint8(render(s, np.random.default_rng(p["seed"]))[0]) for s, p in zip(specs, prompts)])
    images = {k: [] for k in range(num_steps, -1, -1)}
    for i in range(0, len(prompts), batch):
        part = prompts[i : i + batch]
        text, n = pipe.encode_prompt([p["caption"] for p in part] if pipe.text_dim else None, 1, len(part))
        states, grid = model.forward_trajectory(x0[i : i + batch].to(device, dtype), num_steps,
                                                torch.Generator(device).manual_seed(seed + i))
        for k in images:
            gens = [torch.Generator(device).manual_seed(p["seed"]) for p in part]
            lat = model.sample_latents(n, text, num_steps, guidance, temperature, gens, start_from=(states, k))
            if denoise == "score":
                out = model.decode(lat, text, trajectory=True)
                with torch.enable_grad():
                    x = model.denoise_with_score(out.x, out.grid, text)
            else:
                x = model.decode(lat, text).images
            images[k].append(x.float().cpu())
    grid = model.schedule.grid(num_steps).tolist()
    rows = []
    for k, parts in images.items():
        overall = score(list(torch.cat(parts)), specs).loc["overall"]
        rows.append({"start step": k, "start t": round(grid[k], 4), "steps sampled": k,
                     "score": float(overall["score"]), "colour_match": float(overall["colour_match"]),
                     "shape_fit": float(overall["shape_fit"]), "n": len(prompts)})
    return pd.DataFrame(rows)


def figure(df: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for name, d in df.groupby("model", sort=False):
        fig.add_scatter(x=d["start t"], y=d["score"], mode="lines+markers", name=f"{name}: score")
        fig.add_scatter(x=d["start t"], y=d["shape_fit"], mode="lines+markers", name=f"{name}: shape fit",
                        line=dict(dash="dot"))
    fig.update_layout(title="Sampling from a real trajectory's state x_t: what is left of the data at t_0",
                      xaxis_title="start time t (1 = noise: ordinary sampling; 0.05 = the real x_{t_0})",
                      yaxis_title="evaluator score / shape fit", yaxis_range=[0, 1.02], height=420)
    return fig


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=FOLDER",
                    help="an NTM pipeline folder, or a flow-matching one (read as its Gaussian sampler)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--denoise", choices=("none", "score"), default="none")
    ap.add_argument("--per-category", type=int, default=32)
    ap.add_argument("--split", choices=("test", "train"), default="test")
    ap.add_argument("--categories", nargs="+", choices=CATEGORIES, default=list(CATEGORIES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write <out>.json/.csv/.md and <out>.html")
    a = ap.parse_args(argv)
    models = key_values(ap, a.model, "--model")
    if not models:
        ap.error("give --model NAME=FOLDER at least once")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    prompts = eval_prompts(a.per_category, a.seed, a.split, a.categories)
    tables = []
    for name, folder in models.items():
        pipe = load_pipeline(folder).to(device)
        df = steps_from_data(pipe, prompts, a.steps, a.guidance, a.temperature, a.denoise, a.seed)
        tables.append(df.assign(model=name))
    df = pd.concat(tables, ignore_index=True)
    df = df[["model"] + [c for c in df.columns if c != "model"]]
    report(df, f"sampling from a real trajectory's state, {a.steps} steps, guidance {a.guidance}, final step "
               f"{a.denoise}", environment(models=models, steps=a.steps, guidance=a.guidance, temperature=a.temperature,
                                          denoise=a.denoise, per_category=a.per_category, split=a.split,
                                          categories=a.categories, seed=a.seed), a.out, digits=3)
    if a.out:
        figure(df).write_html(os.path.splitext(a.out)[0] + ".html", include_plotlyjs="cdn")


if __name__ == "__main__":
    main()

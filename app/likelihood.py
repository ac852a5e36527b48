"""Likelihood: exact trajectory log-likelihoods (bits/dim) of generated images of a prompt, and of an uploaded
image under one or several prompts (a ranking of the prompts = zero-shot classification), with per-step parts,
the spread over several sampled forward trajectories, and CSV downloads."""
from __future__ import annotations

import tempfile

import gradio as gr
import pandas as pd
import torch

from analysis.figures import distribution_figure, nll_parts_figure, nll_parts_table, ranking_figure

from .widgets import EXAMPLE_PROMPTS, gpu, model_picker, show, user_errors

EXPLAIN = ("**bits/dim (trajectory)**: −log₂ p(τ) / ((K+1)·D), the exact density of the whole forward trajectory "
           "τ = (x_{t_0}, …, x_1) sampled from the image. **bound bits/dim**: the variational upper bound on "
           "−log₂ p(x_{t_0}) per image dimension (D = C·H·W, images scaled to [−1, 1]). Lower is more likely.")


def _csv(df: pd.DataFrame, stem: str) -> str:
    f = tempfile.NamedTemporaryFile("w", suffix=".csv", prefix=stem + "-", delete=False)
    df.to_csv(f, index=False)
    f.close()
    return f.name


def _rows(results, labels) -> pd.DataFrame:
    rows = []
    for j, nll in enumerate(results):
        for i, label in enumerate(labels):
            rows.append({"item": label, "trajectory": j + 1, "bits/dim (trajectory)": nll.bits_per_dim[i].item(),
                         "bound bits/dim": nll.bound_bits_per_dim[i].item()})
    return pd.DataFrame(rows)


def likelihood_of_generated(registry, prompt, model, steps, count, trajectories, seed, progress=None):
    pipe = registry.get_ntm(model)
    if progress is not None:
        progress(0.1, desc="generating images")
    out = pipe(prompt, num_images_per_prompt=int(count), num_inference_steps=4, guidance_scale=3.0,
               generator=torch.Generator().manual_seed(int(seed)), output_type="pt")
    images = out.images * 2 - 1
    if progress is not None:
        progress(0.5, desc="exact likelihoods of forward trajectories")
    results = pipe.log_likelihood(images, prompt, int(steps), int(trajectories),
                                  torch.Generator().manual_seed(int(seed) + 1))
    labels = [f"image {i + 1}" for i in range(images.shape[0])]
    df = _rows(results, labels)
    gallery = [(show(((im + 1) * 127.5).round().byte().permute(1, 2, 0).numpy(), 128), lb)
               for im, lb in zip(images, labels)]
    fig_parts = nll_parts_figure(results[0], 0, f"Per-step parts, image 1, trajectory 1 (K = {int(steps)})")
    fig_dist = distribution_figure(df, "item", "bits/dim (trajectory)",
                                   f"Over {int(trajectories)} forward trajectories per image")
    summary = df.groupby("item", sort=False)[["bits/dim (trajectory)", "bound bits/dim"]].agg(["mean", "std"])
    summary.columns = [" ".join(c) for c in summary.columns]
    return gallery, fig_parts, fig_dist, summary.reset_index().round(4), _csv(df, "likelihood-generated")


def likelihood_of_upload(registry, upload, prompts, model, steps, trajectories, seed, progress=None):
    if upload is None:
        raise ValueError("upload an image first")
    pipe = registry.get_ntm(model)
    candidates = [p.strip() for p in (prompts or "").splitlines() if p.strip()]
    if not candidates:
        raise ValueError("give at least one prompt (one per line)")
    if len(candidates) > 32:
        raise ValueError("at most 32 candidate prompts")
    path = upload if isinstance(upload, str) else getattr(upload, "name", upload)
    x = pipe.preprocess([path])  # raises a clear ValueError for anything that is not a readable image
    seen = show(((x[0] + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy(), 192)
    # the same forward trajectories for every prompt (same seed): differences come from the prompts alone
    loop = progress.tqdm(candidates, desc="scoring prompts") if progress is not None else candidates
    per_prompt = {p: pipe.log_likelihood(x, p, int(steps), int(trajectories), torch.Generator().manual_seed(int(seed)))
                  for p in loop}
    df = pd.concat([_rows(res, [p]) for p, res in per_prompt.items()], ignore_index=True)
    rank = (df.groupby("item", sort=False)["bits/dim (trajectory)"].agg(["mean", "std"]).reset_index()
            .rename(columns={"item": "prompt", "mean": "bits/dim", "std": "bits/dim std"}).sort_values("bits/dim"))
    rank.insert(0, "rank", range(1, len(rank) + 1))
    best = rank.iloc[0]["prompt"]
    fig_rank = ranking_figure(rank, "prompt", "bits/dim", "Candidate prompts, most likely first")
    fig_parts = nll_parts_figure(per_prompt[best][0], 0, "Per-step parts, most likely prompt (trajectory 1)")
    parts = nll_parts_table(per_prompt[best][0]).round(4)
    return seen, fig_rank, fig_parts, rank.round(4), parts, _csv(df, "likelihood-upload")


def build(registry):
    with gr.Tab("Likelihood", id="likelihood"):
        gr.Markdown(EXPLAIN)
        with gr.Tab("Generated images of a prompt"):
            with gr.Row():
                with gr.Column(scale=2, min_width=300):
                    prompt = gr.Textbox(label="Prompt", value=EXAMPLE_PROMPTS[0])
                    model_g = model_picker(registry, kind="ntm")
                    with gr.Row():
                        steps_g = gr.Slider(1, 8, value=4, step=1, label="K (trajectory steps)")
                        count = gr.Slider(1, 8, value=4, step=1, label="Images")
                    with gr.Row():
                        traj_g = gr.Slider(1, 16, value=4, step=1, label="Forward trajectories per image")
                        seed_g = gr.Number(value=0, precision=0, label="Seed")
                    go_g = gr.Button("Compute likelihoods", variant="primary")
                with gr.Column(scale=3):
                    gallery = gr.Gallery(label="Images", columns=4, height=180, object_fit="contain")
                    summary = gr.Dataframe(label="Per image (bits/dim)", interactive=False)
            with gr.Row():
                parts_g = gr.Plot()
                dist_g = gr.Plot()
            csv_g = gr.File(label="All results (CSV)")

            @gpu
            @user_errors
            def run_generated(prompt, model, steps, count, trajectories, seed, progress=gr.Progress()):
                return likelihood_of_generated(registry, prompt, model, steps, count, trajectories, seed, progress)

            go_g.click(run_generated, [prompt, model_g, steps_g, count, traj_g, seed_g],
                       [gallery, parts_g, dist_g, summary, csv_g], api_name="likelihood_generated")

        with gr.Tab("An uploaded image"):
            with gr.Row():
                with gr.Column(scale=2, min_width=300):
                    upload = gr.File(label="Image (any size or format)", file_types=["image"], type="filepath",
                                     elem_id="lik-upload")
                    prompts = gr.Textbox(label="Candidate prompts (one per line)", lines=5,
                                         value="\n".join(EXAMPLE_PROMPTS[:4]))
                    model_u = model_picker(registry, kind="ntm")
                    with gr.Row():
                        steps_u = gr.Slider(1, 8, value=4, step=1, label="K (trajectory steps)")
                        traj_u = gr.Slider(1, 16, value=4, step=1, label="Forward trajectories")
                        seed_u = gr.Number(value=0, precision=0, label="Seed")
                    go_u = gr.Button("Rank prompts by likelihood", variant="primary", elem_id="lik-button")
                with gr.Column(scale=3):
                    seen = gr.Image(label="As the model sees it", height=200, elem_id="lik-seen")
                    rank = gr.Dataframe(label="Ranking (zero-shot classification)", interactive=False)
            with gr.Row():
                rank_fig = gr.Plot()
                parts_u = gr.Plot()
            parts_table = gr.Dataframe(label="Per-step parts for the best prompt (bits/dim)", interactive=False)
            csv_u = gr.File(label="All results (CSV)")

            @gpu
            @user_errors
            def run_upload(upload, prompts, model, steps, trajectories, seed, progress=gr.Progress()):
                return likelihood_of_upload(registry, upload, prompts, model, steps, trajectories, seed, progress)

            go_u.click(run_upload, [upload, prompts, model_u, steps_u, traj_u, seed_u],
                       [seen, rank_fig, parts_u, rank, parts_table, csv_u], api_name="likelihood")
    return model_g, model_u

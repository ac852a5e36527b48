"""Latents: every step of one generation — x-space state, transporter latent u, predictor mean μ and scale σ,
the noise z — as image grids on one colour scale per quantity, plus heatmaps, histograms and statistics."""
from __future__ import annotations

import gradio as gr
import torch

from analysis.figures import latent_heatmap_figure, latent_histogram_figure, latent_panels, latent_stats_table

from .widgets import EXAMPLE_PROMPTS, gpu, model_picker, pick_seed, show, user_errors


def inspect_latents(registry, prompt, model, steps, guidance, seed, randomize):
    pipe = registry.get_ntm(model)
    seed = pick_seed(seed, randomize)
    out = pipe(prompt, num_inference_steps=int(steps), guidance_scale=float(guidance),
               generator=torch.Generator().manual_seed(seed), denoise="none", return_trajectory=True)
    panels = latent_panels(out.trajectory)
    galleries = [[(show(img, 160), cap) for img, cap in panels[name]] for name in panels]
    return (*galleries, latent_heatmap_figure(out.trajectory), latent_histogram_figure(out.trajectory),
            latent_stats_table(out.trajectory), seed)


def build(registry):
    with gr.Tab("Latents", id="latents"):
        gr.Markdown("What the transporter does: for each step, the state x, its latent u = f_T(x), and the Gaussian "
                    "(μ, σ) the predictor puts on the next latent. Channels are shown as RGB; each row shares one "
                    "colour scale (x: [−1, 1]; u, μ, z: ± their largest magnitude; σ: log σ around its mean).")
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", value=EXAMPLE_PROMPTS[2], scale=3)
            model = model_picker(registry, kind="ntm")
        with gr.Row():
            steps = gr.Slider(1, 4, value=4, step=1, label="Steps")
            guidance = gr.Slider(1.0, 8.0, value=3.0, step=0.5, label="Guidance scale")
            seed = gr.Number(value=0, precision=0, label="Seed")
            randomize = gr.Checkbox(value=False, label="Randomize seed")
            button = gr.Button("Inspect", variant="primary")
        names = ["x (state)", "u = f_T(x)", "μ (predictor mean)", "σ (predictor scale)", "z (noise drawn)"]
        galleries = [gr.Gallery(label=n, columns=5, height=200, object_fit="contain") for n in names]
        heatmap = gr.Plot(label="Transporter displacement")
        hist = gr.Plot(label="Distributions")
        stats = gr.Dataframe(label="Per-step statistics", interactive=False)

        @gpu
        @user_errors
        def run(prompt, model, steps, guidance, seed, randomize):
            return inspect_latents(registry, prompt, model, steps, guidance, seed, randomize)

        button.click(run, [prompt, model, steps, guidance, seed, randomize], [*galleries, heatmap, hist, stats, seed],
                     api_name="latents")
    return model

"""Latents: every step of one generation — x-space state, transporter latent u, predictor mean μ and scale σ,
the noise z — as image rows aligned by state (t = 1 … t_0) on one colour scale per quantity, plus heatmaps,
histograms and statistics."""
from __future__ import annotations

import gradio as gr
import torch

from .figures import (LATENT_STATS_COLUMNS, latent_heatmap_figure, latent_histogram_figure, latent_panels,
                      latent_stats_table)
from .widgets import (EXAMPLE_PROMPTS, GPU_SECONDS, MODEL_WORK, gpu, guidance_problem, guidance_slider, model_picker,
                      model_problem, number_problem, pick_seed, prompt_problem, raise_problems, seed_inputs,
                      run_on_first_open, seed_problem, show, user_errors, validator)

NAMES = ["x (state)", "u = f_T(x)", "μ (predictor mean)", "σ (predictor scale)", "z (noise drawn)"]
TILE = 128  # px per tile: a row of 5 (K = 4) fits the page with its captions


def problems(registry, prompt, model, steps, guidance, seed, randomize) -> list:
    return [prompt_problem(prompt), model_problem(registry, model, "ntm"),
            number_problem(steps, 1, 4, "Steps", integer=True),
            guidance_problem(guidance),
            seed_problem(seed, randomize), None]


def transporter_note(pipe, sample) -> str:
    """Says so when f_T is the identity in this model, so that a u row equal to the x row and a zero displacement are
    read as what the model is (step 0 of a finetune from flow matching, or the Gaussian-only ablation), not a bug."""
    if pipe.transporter.config.num_blocks == 0:
        return ("**`f_T` is the identity here: this is the Gaussian-only ablation** (no transporter), so u = x at "
                "every step and the displacement is zero; each step is one Gaussian in x-space.")
    moved = (sample.u - sample.x).abs().max().item()
    if moved > 1e-6 * max(sample.x.abs().max().item(), 1.0):
        return ""
    return ("**`f_T` is still the identity in this model** (u = x at every step, log-det 0): it is NTM at step 0 of "
            "its finetune from flow matching, whose transporter starts as the identity, so the u row repeats the x "
            "row and the displacement is zero. Finetuning is what moves u away from x.")


def inspect_latents(registry, prompt, model, steps, guidance, seed, randomize):
    raise_problems(problems(registry, prompt, model, steps, guidance, seed, randomize))
    pipe = registry.get_ntm(model)
    seed = pick_seed(seed, randomize)
    out = pipe(prompt, num_inference_steps=int(steps), guidance_scale=float(guidance),
               generator=torch.Generator().manual_seed(seed), denoise="none", return_trajectory=True)
    panels = latent_panels(out.trajectory)
    galleries = [[(show(img, TILE), cap) for img, cap in panels[name]] for name in NAMES]  # K + 1 tiles per row
    return (transporter_note(pipe, out.trajectory), *galleries, latent_heatmap_figure(out.trajectory),
            latent_histogram_figure(out.trajectory), latent_stats_table(out.trajectory), seed)


def build(registry):
    with gr.Tab("Latents", id="latents") as tab:
        gr.Markdown("What the transporter does: for each step, the state x, its latent u = f_T(x), and the Gaussian "
                    "(μ, σ) the predictor puts on the next latent. Columns are the states from t = 1 (pure noise) to "
                    "t_0; μ, σ and z sit under the state they produce. Each row shares one colour scale (x: [−1, 1]; "
                    "u, μ, z: ± their largest magnitude; σ: log σ around its mean).")
        with gr.Row(equal_height=True):
            prompt = gr.Textbox(label="Prompt", show_label=False, value=EXAMPLE_PROMPTS[2], lines=1, max_lines=1,
                                scale=5, container=False, placeholder="A prompt to trace", elem_id="lat-prompt")
            button = gr.Button("Inspect", variant="primary", scale=1, min_width=90)
        with gr.Row():
            model = model_picker(registry, kind="ntm")
            steps = gr.Slider(1, 4, value=4, step=1, label="Steps")
            guidance = guidance_slider(registry, model)
            seed, randomize = seed_inputs(randomize=False)
        note = gr.Markdown()
        galleries = [gr.Gallery(label=n, columns=5, height="fit-content", object_fit="contain", allow_preview=False,
                                elem_classes="pixelated", elem_id=f"lat-gallery-{i}" if i else "lat-gallery")
                     for i, n in enumerate(NAMES)]
        heatmap = gr.Plot(label="Transporter displacement |f_T(x) − x| per state")
        hist = gr.Plot(label="Distributions per step: u − x and log σ")
        stats = gr.Dataframe(label="Per-step statistics", interactive=False, headers=LATENT_STATS_COLUMNS)

        @gpu(duration=GPU_SECONDS["latents"])
        @user_errors
        def run(prompt, model, steps, guidance, seed, randomize):
            return inspect_latents(registry, prompt, model, steps, guidance, seed, randomize)

        inputs = [prompt, model, steps, guidance, seed, randomize]
        outputs = [note, *galleries, heatmap, hist, stats, seed]
        gr.on([button.click, prompt.submit], run, inputs, outputs, api_name="latents",
              validator=validator(problems, registry), **MODEL_WORK)
        run_on_first_open(tab, run, inputs, outputs, shown=galleries[0])
    return model

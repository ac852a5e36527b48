"""Generate: a prompt → images in 1–4 steps, with the final step of one's choice."""
from __future__ import annotations

import time

import gradio as gr
import torch

from ntm_core.pipeline import NTMPipeline

from .widgets import EXAMPLE_PROMPTS, gpu, model_picker, pick_seed, show, user_errors

FINAL = {"learned denoiser (fast)": "learned", "score denoising (exact score, slow)": "score",
         "none (x at t_min)": "none"}


def generate_images(registry, prompt, model, steps, guidance, temperature, seed, randomize, count, final,
                    progress=gr.Progress()):
    pipe = registry.get(model)
    seed = pick_seed(seed, randomize)
    mode = FINAL.get(final, final)
    if isinstance(pipe, NTMPipeline) and mode == "learned" and pipe.denoiser is None:
        mode = "score"
    images, start = [], time.perf_counter()
    for i in progress.tqdm(range(int(count)), desc="generating"):
        g = torch.Generator().manual_seed(seed + i)  # one seed per image: each is reproducible on its own
        kw = dict(num_inference_steps=int(steps), guidance_scale=float(guidance), generator=g)
        if isinstance(pipe, NTMPipeline):
            out = pipe(prompt, temperature=float(temperature), denoise=mode, return_log_prob=True, **kw)
            caption = f"seed {seed + i} · {out.nll.bits_per_dim[0].item():.3f} bits/dim (trajectory)"
        else:
            out = pipe(prompt, **kw)
            caption = f"seed {seed + i}"
        images.append((show(out.images[0]), caption))
    dt = time.perf_counter() - start
    note = (f"**{len(images)} image(s) in {dt:.2f} s** ({dt / max(len(images), 1):.2f} s each) · "
            f"{int(steps)} steps · final step: {mode if isinstance(pipe, NTMPipeline) else 'Euler (flow matching)'}"
            f" · model `{model}` on {registry.device}")
    if isinstance(pipe, NTMPipeline):
        note += ("  \nUnder each image: −log₂ p(τ) / ((K+1)·D), the exact density of the sampled trajectory under the "
                 "model that drew it (the guided one when guidance ≠ 1), from the sampler's own noise — no extra pass.")
    return images, note, seed


def build(registry):
    with gr.Tab("Generate", id="generate"):
        gr.Markdown("Few-step text-to-image with an exact trajectory likelihood. Each image has its own seed.")
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                prompt = gr.Textbox(label="Prompt", value=EXAMPLE_PROMPTS[0], lines=2, elem_id="gen-prompt")
                gr.Examples(EXAMPLE_PROMPTS, inputs=prompt, label="Examples (the shapes vocabulary)")
                model = model_picker(registry)
                with gr.Row():
                    steps = gr.Slider(1, 4, value=4, step=1, label="Steps")
                    count = gr.Slider(1, 8, value=4, step=1, label="Images")
                with gr.Row():
                    guidance = gr.Slider(1.0, 8.0, value=3.0, step=0.5, label="Guidance scale")
                    temperature = gr.Slider(0.0, 1.5, value=1.0, step=0.05, label="Temperature")
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, label="Seed")
                    randomize = gr.Checkbox(value=True, label="Randomize seed")
                final = gr.Radio(list(FINAL), value=list(FINAL)[0], label="Final step")
                button = gr.Button("Generate", variant="primary", elem_id="gen-button")
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="Images", columns=4, height=420, object_fit="contain", elem_id="gen-gallery")
                info = gr.Markdown()
        @gpu
        @user_errors
        def generate(prompt, model, steps, guidance, temperature, seed, randomize, count, final,
                     progress=gr.Progress()):
            return generate_images(registry, prompt, model, steps, guidance, temperature, seed, randomize, count,
                                   final, progress)

        fn = generate
        button.click(fn, [prompt, model, steps, guidance, temperature, seed, randomize, count, final],
                     [gallery, info, seed], api_name="generate")
        prompt.submit(fn, [prompt, model, steps, guidance, temperature, seed, randomize, count, final],
                      [gallery, info, seed], api_name=False)
    return model

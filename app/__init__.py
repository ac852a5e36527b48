"""NTM Studio's Gradio app: one module per tab; all model work goes through ntm_core's pipelines."""
from __future__ import annotations

import os

import gradio as gr

from . import compare, generate, latents, likelihood, train
from .registry import Registry
from .widgets import refresh_pickers

TITLE = "NTM Studio — Normalizing Trajectory Models"
INTRO = ("1–4-step text-to-image where every step is a conditional normalizing flow, so each sampled trajectory "
         "has an **exact likelihood** (arXiv 2605.08078). The default `ntm-shapes32` draws what a held-out prompt "
         "asks 71–77 % of the time at 4 steps (79 % as the best of 4 by that likelihood); which object of a pair "
         "goes left or on top it has not learned yet.")
# the lead above is what every visitor reads (on a phone, before the Run button); the rest waits in an accordion
STATUS = ("The default `ntm-shapes32` is NTM initialised from the flow-matching backbone `fm-shapes32` (10 "
          "H100-minutes) and not finetuned yet. At 4 steps the project's evaluator accepts 71–77 % of its samples on "
          "held-out prompts (FM at 50 Euler steps 81 %, real images 100 %). Positions are its weakest part: it puts "
          "the two objects on the right axis, but which one goes left (or on top) it has not learned, so that is a "
          "coin toss. Generate keeps, of 4 trajectories per image, the one of highest exact log p(τ | prompt): 79 % "
          "accepted (Advanced settings, 'Candidates per image'; 1 = a plain sample). It samples on a grid with more "
          "steps at high noise and computes likelihoods on the uniform one, each the better of the two for its job. "
          "Its learned denoiser is pending, so its final step is score denoising. Measured numbers, with the "
          "commands that produced them, are in each model card in `assets/` and in the README.")
CSS = """.gradio-container {max-width: 1280px !important}
#gen-gallery img, .pixelated img {image-rendering: pixelated}"""  # native 32 px images, enlarged without blur
QUEUE = dict(default_concurrency_limit=2, max_size=64)  # model work shares one limit of 2 (widgets.MODEL_WORK)
MAX_UPLOAD = "20mb"
ON_SPACE = bool(os.environ.get("SPACE_ID"))


def build_app(registry: Registry | None = None) -> gr.Blocks:
    registry = registry or Registry()
    with gr.Blocks(title=TITLE, delete_cache=(900, 3600)) as demo:  # served copies of outputs: gone after an hour
        with gr.Row(equal_height=True):
            gr.Markdown(f"## {TITLE}\n{INTRO}")
            gr.DuplicateButton("Duplicate to train your own", visible=ON_SPACE, scale=0)
        with gr.Accordion("What the bundled models do today, measured", open=False):
            gr.Markdown(STATUS)
        if not registry.choices():
            gr.Markdown("**No model found.** Bundled models live in `assets/`; trained ones in `runs/*/pipeline`.")
        with gr.Tabs() as tabs:
            pickers = [(generate.build(registry, demo), None)]
            pickers += [(compare.build(registry, demo), "ntm"), (latents.build(registry), "ntm")]
            lg, lu = likelihood.build(registry, demo)
            pickers += [(lg, "ntm"), (lu, "ntm")]
            train.build(registry)
        refresh_pickers(demo, tabs, registry, pickers)
    return demo


def launch(demo: gr.Blocks, **kwargs):
    """Queue on: model work from every tab shares one limit of 2 (2 CPU cores; measured by app.load_test), at
    most 64 waiting (then 503), uploads ≤ 20 MB, errors shown to users."""
    demo.queue(**QUEUE)
    return demo.launch(css=CSS, show_error=True, max_file_size=MAX_UPLOAD, **kwargs)

"""NTM Studio's Gradio app: one module per tab; all model work goes through ntm_core's pipelines."""
from __future__ import annotations

import gradio as gr

from . import compare, generate, latents, likelihood, train
from .registry import Registry
from .widgets import refresh_pickers

TITLE = "NTM Studio — Normalizing Trajectory Models"
INTRO = ("Few-step image generation whose every step is a conditional normalizing flow, so the whole sampling "
         "trajectory has an **exact likelihood** (Gu et al., arXiv 2605.08078). Models here are small and run on CPU. "
         "The bundled shapes models had 6–8 GPU-minutes of training each: their likelihoods are meaningful, their "
         "samples are still rough colour blobs and bars (each model's card in `assets/` has its measured numbers).")
CSS = ".gradio-container {max-width: 1280px !important}"


def build_app(registry: Registry | None = None) -> gr.Blocks:
    registry = registry or Registry()
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        if not registry.choices():
            gr.Markdown("**No model found.** Bundled models live in `assets/`; trained ones in `runs/*/pipeline`.")
        with gr.Tabs():
            pickers = [(generate.build(registry), None)]
            cmp_model, cmp_base = compare.build(registry)
            pickers += [(cmp_model, "ntm"), (cmp_base, None), (latents.build(registry), "ntm")]
            lg, lu = likelihood.build(registry)
            pickers += [(lg, "ntm"), (lu, "ntm")]
            init = train.build(registry)
            if init is not None:
                pickers.append((init, None))
        refresh_pickers(demo, registry, [(p, k) for p, k in pickers if not isinstance(p, gr.CheckboxGroup)])
    return demo


def launch(demo: gr.Blocks, **kwargs):
    """Queue on, a concurrency limit per event (CPU inference: 2 at a time), errors shown to users."""
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo.launch(css=CSS, show_error=True, **kwargs)

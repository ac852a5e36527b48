"""Compare: one prompt and seed through NTM + score denoising vs. the self-distilled denoiser (and optionally the
flow-matching baseline and the Gaussian-only ablation), with wall time, speed-up and pixel distance. An NTM without
a learned denoiser is compared with its own undenoised sample instead (what the score step costs and changes)."""
from __future__ import annotations

import math

import gradio as gr
import pandas as pd
import torch

from ntm_core.images import to_uint8, to_unit
from ntm_core.pipeline import NTMPipeline

from .generate import evaluator_readings, mark
from .widgets import (EXAMPLE_PROMPTS, GPU_SECONDS, MODEL_WORK, gpu, guidance_problem, guidance_slider, model_picker,
                      model_problem, number_problem, pick_seed, prompt_problem, raise_problems, seed_inputs,
                      run_on_first_open, seed_problem, show, user_errors, validator)

MAX_BASELINES = 4


def problems(registry, prompt, model, steps, guidance, seed, randomize, baselines) -> list:
    known = set(registry.choices())
    extra = None
    if not isinstance(baselines, (list, tuple, type(None))) or any(b not in known for b in baselines or []):
        extra = "pick the extra models from the list"
    elif len(set(baselines or [])) > MAX_BASELINES:
        extra = f"at most {MAX_BASELINES} extra models"
    return [prompt_problem(prompt), model_problem(registry, model, "ntm"),
            number_problem(steps, 1, 4, "Steps", integer=True),
            guidance_problem(guidance),
            seed_problem(seed, randomize), None, extra]


def baseline_choices(registry, model: str | None) -> list[str]:
    """What can run beside `model`: every other model trained on the same data (a digit model draws nothing a shapes
    prompt asks for); every other model when either's data is unknown."""
    try:
        data = registry.info(model).dataset if model else None
    except ValueError:
        data = None
    others = [label for label in registry.choices() if label != model]
    return [label for label in others if data is None or registry.info(label).dataset in (None, data)]


def baseline_update(registry, model, checked) -> gr.CheckboxGroup:
    """The "Also run" list for the picked model, keeping the boxes still on it ticked."""
    choices = baseline_choices(registry, model)
    return gr.CheckboxGroup(choices=choices, value=[c for c in checked or [] if c in choices])


def _run(pipe, prompt, steps, guidance, seed, **kw):
    g = torch.Generator().manual_seed(seed)
    return pipe(prompt, num_inference_steps=int(steps), guidance_scale=float(guidance), generator=g,
                output_type="model", **kw)


def compare(registry, prompt, model, steps, guidance, seed, randomize, baselines):
    raise_problems(problems(registry, prompt, model, steps, guidance, seed, randomize, baselines))
    pipe = registry.get_ntm(model)
    seed = pick_seed(seed, randomize)
    fast = "learned" if pipe.denoiser is not None else "none"
    _run(pipe, prompt, 1, guidance, seed, denoise=fast)  # warm-up: timings below are steady-state
    score = _run(pipe, prompt, steps, guidance, seed, denoise="score")
    other = _run(pipe, prompt, steps, guidance, seed, denoise=fast)
    names = {"learned": "NTM + learned denoiser", "none": "NTM, no final step (x at t_min)"}
    rows = [("NTM + score denoising", score), (names[fast], other)]
    for label in dict.fromkeys(baselines or []):  # each model once, however often it is named
        extra = registry.get(label)
        kw = {"denoise": "score"} if isinstance(extra, NTMPipeline) and extra.transporter.config.num_blocks == 0 else {}
        rows.append((label, _run(extra, prompt, steps, guidance, seed, **kw)))
    mse = (to_unit(score.images) - to_unit(other.images)).pow(2).mean().item()
    psnr = 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")
    pixels = [to_uint8(o.images[0]) for _, o in rows]
    checks = evaluator_readings(registry.info(model).dataset, [prompt] * len(rows), pixels)
    table = pd.DataFrame([{"method": name, "seconds": round(o.seconds, 4), "img/s": round(1 / o.seconds, 2)}
                          | ({} if check is None else {"evaluator": mark(check) + check[1]})
                          for (name, o), check in zip(rows, checks)])
    gallery = [(show(image), f"{mark(check)}{name} · {o.seconds:.2f} s")
               for (name, o), image, check in zip(rows, pixels, checks)]
    distance = f"MSE {mse:.5f}, PSNR {psnr:.1f} dB (images in [0, 1]). Seed {seed}, {int(steps)} steps."
    if fast == "learned":
        note = (f"**Learned denoiser: {score.seconds / other.seconds:.1f}× faster than score denoising** "
                f"({other.seconds:.3f} s vs {score.seconds:.3f} s). Pixel distance between the two outputs: {distance}")
    else:
        note = (f"`{model}` has no learned denoiser yet (the Train tab's *self-distilled denoiser for an NTM* "
                "trains one from it), so its score-denoised image is compared with its own sample at t_min, with no "
                f"final step: a sample with the score step takes {score.seconds:.3f} s, without it "
                f"{other.seconds:.3f} s ({score.seconds / other.seconds:.1f}×); the step removes the last noise. "
                f"Pixel distance: {distance}")
    return gallery, table, note, seed


def build(registry, demo):
    with gr.Tab("Compare", id="compare") as tab:
        gr.Markdown("The same prompt and seed through several final steps / models, side by side.")
        with gr.Row(equal_height=True):
            prompt = gr.Textbox(label="Prompt", show_label=False, value=EXAMPLE_PROMPTS[1], lines=1, max_lines=1,
                                scale=5, container=False, placeholder="A prompt to compare on", elem_id="cmp-prompt")
            button = gr.Button("Compare", variant="primary", scale=1, min_width=90)
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                model = model_picker(registry, "NTM model", kind="ntm",
                                     info="with a learned denoiser: score vs. learned; without: score vs. no final "
                                          "step")
                baselines = gr.CheckboxGroup(choices=baseline_choices(registry, registry.default("ntm")),
                                             label=f"Also run (same steps and seed; up to {MAX_BASELINES})",
                                             info="other models trained on the same data: e.g. the flow-matching "
                                                  "baseline or the Gaussian-only ablation")
                with gr.Row():
                    steps = gr.Slider(1, 4, value=4, step=1, label="Steps")
                    guidance = guidance_slider(registry, model)
                with gr.Row():
                    seed, randomize = seed_inputs(randomize=False)
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="Side by side", columns=4, height="fit-content", object_fit="contain",
                                     elem_id="cmp-gallery")
                note = gr.Markdown()
                table = gr.Dataframe(label="Wall time per method (this machine), and the evaluator's verdict on a "
                                           "shapes prompt", interactive=False,
                                     headers=["method", "seconds", "img/s"])

        @gpu(duration=GPU_SECONDS["compare"])
        @user_errors
        def run(prompt, model, steps, guidance, seed, randomize, baselines):
            return compare(registry, prompt, model, steps, guidance, seed, randomize, baselines)

        inputs, outputs = [prompt, model, steps, guidance, seed, randomize, baselines], [gallery, table, note, seed]
        gr.on([button.click, prompt.submit], run, inputs, outputs, api_name="compare",
              validator=validator(problems, registry), **MODEL_WORK)
        run_on_first_open(tab, run, inputs, outputs, shown=gallery)
        # on a page load too: a job that finished since appears
        gr.on([model.change, demo.load], lambda m, c: baseline_update(registry, m, c), [model, baselines], [baselines],
              api_name=False, queue=False)
    return model

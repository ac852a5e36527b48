"""Generate: a prompt → images in 1–4 steps, with the final step of one's choice. The page opens on a grid the model
drew for its example prompts; every control follows what the chosen model can do."""
from __future__ import annotations

import threading
import time

import gradio as gr
import numpy as np
import torch
from PIL import Image

from ntm_core.data.shapes_eval import reading
from ntm_core.data.shapes import spec_of_caption
from ntm_core.pipeline import NTMPipeline, default_final_step

from .registry import CANDIDATES_RANGE, trajectory_lengths
from .widgets import (GPU_SECONDS, MODEL_WORK, OUTPUTS, OutputFiles, gpu, guidance_problem, guidance_slider,
                      guidance_update, model_picker, model_problem, number_problem, pick_seed, prompt_problem,
                      raise_problems, seed_inputs, seed_problem, user_errors, validator, vocabulary_note)

FINAL = [("learned denoiser (fast)", "learned"), ("score denoising (exact score, slow)", "score"),
         ("none (x at t_min)", "none")]
NTM_STEPS, FM_STEPS = 4, 50  # the bundled NTMs train at K ≤ 4; the flow-matching baseline is an Euler ODE solver
CANDIDATES = 1  # an API call that names none: plain samples (the slider starts at the model's measured best)
CANDIDATES_INFO = ("per image, draw this many and keep the one the model finds most likely (exact log p(τ | prompt)); "
                   "C times the work")
EXAMPLE_SEED = 0


def final_choices(info) -> list[tuple[str, str]]:
    """The final steps an NTM offers (label, value): the learned denoiser only where the model has one."""
    return FINAL if info.has_denoiser else FINAL[1:]


def problems(registry, prompt, model, steps, guidance, temperature, seed, randomize, count, final,
             candidates=CANDIDATES) -> list:
    """One entry per input of the Generate event (None = fine), in the event's input order."""
    model_issue = model_problem(registry, model)
    info = registry.info(model) if model_issue is None else None
    final_problem = None
    if final not in [v for _, v in FINAL]:
        final_problem = "Final step must be learned, score or none"
    elif info is not None and info.is_ntm and final == "learned" and not info.has_denoiser:
        final_problem = f"{model} has no learned denoiser: pick score or none"
    max_steps = NTM_STEPS if info is None or info.is_ntm else FM_STEPS
    # flow matching ignores it, as it ignores temperature (the slider is disabled for it; an API call may send it)
    candidates_problem = number_problem(candidates, *CANDIDATES_RANGE, "Candidates", integer=True)
    return [prompt_problem(prompt), model_issue,
            number_problem(steps, 1, max_steps, "Steps", integer=True),
            guidance_problem(guidance),
            number_problem(temperature, 0.0, 1.5, "Temperature"),
            seed_problem(seed, randomize), None, number_problem(count, 1, 8, "Images", integer=True), final_problem,
            candidates_problem]


def draw(pipe, prompts: list[str], seeds: list[int], steps: int, guidance: float, temperature: float,
         final: str | None, candidates: int = CANDIDATES):
    """One image per (prompt, seed), in one batched call: PIL images at the model's resolution and their captions.
    Each image has its own generator, so image i is the image its seed draws alone. final None: the model's
    default final step. candidates > 1 (an NTM): each image is the most likely of that many trajectories."""
    kw = dict(num_inference_steps=int(steps), guidance_scale=float(guidance),
              generator=[torch.Generator().manual_seed(s) for s in seeds])
    if isinstance(pipe, NTMPipeline):
        out = pipe(prompts, temperature=float(temperature), denoise=final, return_log_prob=True,
                   num_candidates=int(candidates), **kw)
        bits = out.nll.bits_per_dim.tolist()
        best = f" · best of {int(candidates)}" if int(candidates) > 1 else ""
        # the number first: a thumbnail's caption is cut after about 24 characters
        captions = [f"τ: {bpd:.3f} bits/dim · seed {s}{best}" for s, bpd in zip(seeds, bits)]
    else:
        out = pipe(prompts, **kw)
        captions = [f"seed {s}" for s in seeds]
    return out.images, captions


def evaluator_readings(dataset: str | None, prompts: list[str], images) -> list[tuple[bool, str] | None]:
    """Per image (PIL, uint8 array or model-scaled tensor), the project's evaluator (ntm_core.data.shapes_eval, the check
    behind every score in the model cards):
    (accepted, what it found in words), or None where it cannot read the prompt: another dataset, or text outside
    the shapes captions' grammar."""
    specs = [spec_of_caption(p) if dataset == "shapes" else None for p in prompts]
    return [None if spec is None else reading(spec, np.asarray(image.convert("RGB")) if isinstance(image, Image.Image)
                                              else image)  # PIL images, or what `reading` takes
            for spec, image in zip(specs, images)]


def mark(check: tuple[bool, str] | None) -> str:
    """The caption's first characters: ✓ or ✗ for a checked image (the thumbnail cuts a caption after ~24)."""
    return "" if check is None else ("✓ " if check[0] else "✗ ")


def evaluator_note(checks: list, labels: list[str], dataset: str | None) -> str:
    """The verdicts in words: how many images the evaluator accepts, and what it found in the others (each named by
    its label: its seed, or its prompt)."""
    if all(c is None for c in checks):
        return ("  \nThe evaluator reads only prompts of the training captions' grammar (e.g. \"a red circle to "
                "the left of a blue square\", \"two green triangles\"), so these images are not checked."
                if dataset == "shapes" else "")
    ok = sum(c[0] for c in checks if c is not None)
    misses = [f"{label}: {c[1]}" for label, c in zip(labels, checks) if c is not None and not c[0]]
    return (f"  \n**The evaluator accepts {ok} of {len(checks)}** (✓/✗; exact counts, colours and kinds, and for a "
            "position where the two centres stand: the check behind every score in the model cards)."
            + (" What it found in the others:\n" + "".join(f"\n- {m}" for m in misses) if misses else ""))


def generate_images(registry, prompt, model, steps, guidance, temperature, seed, randomize, count, final,
                    candidates=CANDIDATES):
    """All images in one batched pipeline call (one generator per seed); the gallery shows gradio's timer meanwhile.
    (No gr.Progress here: with a single progress(0, …) call, the next click's validation message never appeared
    in Chromium with gradio 6.31 — tests/test_app_browser.py.)"""
    raise_problems(problems(registry, prompt, model, steps, guidance, temperature, seed, randomize, count, final,
                            candidates))
    pipe = registry.get(model)
    seed = pick_seed(seed, randomize)
    folder, start = OUTPUTS.new_folder(), time.perf_counter()
    seeds = list(range(seed, seed + int(count)))
    drawn, captions = draw(pipe, [prompt] * len(seeds), seeds, steps, guidance, temperature, final, candidates)
    dt = time.perf_counter() - start
    dataset = registry.info(model).dataset
    checks = evaluator_readings(dataset, [prompt] * len(seeds), drawn)
    images = [(OUTPUTS.png(folder, image, f"{prompt}-seed{s}"), mark(check) + caption)  # native-size PNG downloads
              for image, s, caption, check in zip(drawn, seeds, captions, checks)]
    ntm = isinstance(pipe, NTMPipeline)
    note = (f"**{len(images)} image(s) in {dt:.2f} s** ({dt / max(len(images), 1):.2f} s each) · "
            f"{int(steps)} steps · final step: {final if ntm else 'Euler (flow matching)'} · model `{model}` on "
            f"{registry.device}")
    if ntm:
        note += ("  \nUnder each image, τ: −log₂ p(τ) / ((K+1)·D) in bits/dim, the exact density of the sampled "
                 "trajectory under the model that drew it (the guided one when guidance ≠ 1), from the sampler's own "
                 "noise — no extra pass. The steps, noise to image: t = "
                 + " → ".join(f"{t:.3g}" for t in pipe.scheduler.sampling_grid(int(steps)).flip(0).tolist()) + ". "
                 "Lower is likelier: compare it between images of one prompt and model (the Likelihood tab scores "
                 "generated images beside real renders of their prompt).")
        if int(candidates) > 1:
            note += (f"  \n**Best of {int(candidates)}:** each image is, of {int(candidates)} trajectories its seed "
                     "draws, the one the model finds most likely: the highest exact log p(τ | prompt) of the model "
                     "without guidance. A selection, not a sample of the model; τ is still the kept trajectory's.")
    return images, note + evaluator_note(checks, [f"seed {s}" for s in seeds], dataset), seed


class ExampleGrid:
    """What a model draws for its example prompts (seed 0, default settings), made once per model and kept: the
    page shows it on load, before anyone clicks."""

    def __init__(self, registry, files: OutputFiles = OUTPUTS):
        self.registry, self.files, self._grids, self._lock = registry, files, {}, threading.Lock()

    def __call__(self, model: str) -> tuple[list, str]:
        """(gallery items, the note under them: how they were drawn and the evaluator's verdicts, `evaluator_note`);
        ([], "") for an unknown model or one without example prompts."""
        if model_problem(self.registry, model) is not None:
            return [], ""
        info = self.registry.info(model)
        key = (model, self.registry.folder(model))
        with self._lock:
            if key not in self._grids:
                pipe = self.registry.get(model)
                steps = NTM_STEPS if info.is_ntm else FM_STEPS
                folder = self.files.new_folder(keep=True)  # handed out to every later visitor: never pruned
                prompts = info.examples[:8]
                images, _ = draw(pipe, prompts, [EXAMPLE_SEED] * len(prompts), steps, info.guidance_scale, 1.0,
                                 None, info.num_candidates) if prompts else ([], [])
                checks = evaluator_readings(info.dataset, prompts, images)
                c = info.num_candidates
                best = f", each the most likely of {c} by its exact log p(τ | prompt)" if c > 1 else ""
                text = (f"What `{model}` draws for its example prompts (seed {EXAMPLE_SEED}, default settings{best}). "
                        "Type a prompt and press Enter, or click an example."
                        + evaluator_note(checks, [f"“{p}”" for p in prompts], info.dataset))
                self._grids[key] = ([(self.files.png(folder, image, f"{prompt}-seed{EXAMPLE_SEED}"),
                                      f"{mark(check)}example · {prompt}")
                                     for prompt, image, check in zip(prompts, images, checks)],
                                    text if prompts else "")
            return self._grids[key]


def controls(registry, model):
    """The Generate tab's controls for one model: what it ignores is disabled, with the reason."""
    if model_problem(registry, model) is not None:
        return gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
    info = registry.info(model)
    if not info.is_ntm:
        candidates = gr.update(interactive=False, value=1,
                               info="flow matching has no exact likelihood per image to rank candidates by")
        final = gr.update(choices=FINAL, value="none", interactive=False,
                          info="flow matching ends with its last Euler step: there is no final step to choose")
        temperature = gr.update(interactive=False, value=1.0,
                                info="flow matching has no temperature: its ODE is deterministic given the noise")
        steps = gr.update(maximum=FM_STEPS, value=FM_STEPS, info="Euler steps of the flow-matching ODE")
    else:
        final = gr.update(choices=final_choices(info), value=default_final_step(info.has_denoiser), interactive=True,
                          info=None if info.has_denoiser else "this model has no learned denoiser (score or none)")
        temperature = gr.update(interactive=True, info="scales the predictor's σ (1 = the model's density)")
        lengths = trajectory_lengths(registry.folder(model))  # what its training says, as on the Likelihood tab
        steps = gr.update(maximum=NTM_STEPS, value=NTM_STEPS, info="NTM steps" + (f": {lengths}" if lengths else ""))
        measured = " (this model's measured best)" if info.num_candidates != CANDIDATES else ""
        candidates = gr.update(interactive=True, value=info.num_candidates, info=CANDIDATES_INFO + measured)
    examples = gr.update(samples=[[p] for p in info.examples])
    return final, temperature, steps, examples, guidance_update(registry, model), candidates


def build(registry, demo: gr.Blocks):
    info = registry.info(registry.default()) if registry.default() else None
    examples_now = info.examples if info else []
    grid = ExampleGrid(registry)
    with gr.Tab("Generate", id="generate"):
        with gr.Row(equal_height=True):
            prompt = gr.Textbox(label="Prompt", show_label=False, value=examples_now[0] if examples_now else "",
                                lines=1, max_lines=1, scale=5, container=False, elem_id="gen-prompt",
                                placeholder="Describe an image, e.g. a red circle above a blue square")
            run = gr.Button("Run", variant="primary", scale=1, min_width=90, elem_id="gen-button")
        vocab = gr.Markdown(visible=False, elem_id="gen-vocab")
        with gr.Row():
            with gr.Column(scale=3, min_width=320):
                gallery = gr.Gallery(label="Images", columns=4, height=400, object_fit="contain", format="png",
                                     elem_id="gen-gallery", buttons=["download", "fullscreen"])
                note = gr.Markdown(elem_id="gen-note")
            with gr.Column(scale=2, min_width=280):
                model = model_picker(registry)
                examples = gr.Dataset(components=[prompt], samples=[[p] for p in examples_now], label="Examples",
                                      elem_id="gen-examples")
                with gr.Accordion("Advanced settings", open=False):
                    with gr.Row():
                        # the range allows flow matching's 50 (the API checks it); an NTM's 1–4 is set on load
                        steps = gr.Slider(1, FM_STEPS, value=NTM_STEPS, step=1, label="Steps")
                        count = gr.Slider(1, 8, value=4, step=1, label="Images")
                    with gr.Row():
                        guidance = guidance_slider(registry, model, follow=False)  # controls() sets it
                        temperature = gr.Slider(0.0, 1.5, value=1.0, step=0.05, label="Temperature")
                    with gr.Row():
                        seed, randomize = seed_inputs(randomize=True)
                    final = gr.Radio(FINAL, value=default_final_step(info is None or info.has_denoiser),
                                     label="Final step")
                    candidates = gr.Slider(*CANDIDATES_RANGE, value=info.num_candidates if info else CANDIDATES,
                                           step=1, label="Candidates per image", info=CANDIDATES_INFO)
        inputs = [prompt, model, steps, guidance, temperature, seed, randomize, count, final, candidates]

        @gpu(duration=GPU_SECONDS["generate"])
        @user_errors
        def generate(prompt, model, steps, guidance, temperature, seed, randomize, count, final,
                     candidates=CANDIDATES):
            return generate_images(registry, prompt, model, steps, guidance, temperature, seed, randomize, count,
                                   final, candidates)

        gr.on([run.click, prompt.submit], generate, inputs, [gallery, note, seed], api_name="generate",
              validator=validator(problems, registry), show_progress_on=[gallery], **MODEL_WORK)
        examples.click(lambda sample: sample[0], examples, prompt, api_name=False, queue=False).then(
            generate, inputs, [gallery, note, seed], api_name=False, show_progress_on=[gallery], **MODEL_WORK)
        gr.on([demo.load, model.change], lambda m: controls(registry, m), model,
              [final, temperature, steps, examples, guidance, candidates], api_name=False, queue=False)
        gr.on([prompt.change, model.change], lambda p, m: vocabulary_note(registry, p, m), [prompt, model], vocab,
              api_name=False, queue=False, show_progress="hidden")

        @gpu(duration=GPU_SECONDS["generate"])
        def show_examples(model):
            return grid(model)

        gr.on([demo.load, model.change], show_examples, model, [gallery, note], api_name=False,
              show_progress_on=[gallery], **MODEL_WORK)
    return model

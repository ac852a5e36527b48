"""Likelihood: exact trajectory log-likelihoods (bits/dim) of generated images of a prompt, and of an uploaded
image under one or several prompts (a ranking of the prompts = zero-shot classification, with ties called as
such), its bits/dim against the model's in-distribution histogram with a verdict, per-step parts, the spread over
several sampled forward trajectories, and CSV downloads. Every number names its density."""
from __future__ import annotations

import json
import math
import os

import gradio as gr
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from ntm_core.data.shapes import renders_of
from ntm_core.discrete_decoder import DiscreteDecoder, NoEightBitBound, eight_bit_bound
from ntm_core.images import from_uint8, to_uint8
from ntm_core.model import PARTS_COLUMNS
from ntm_core.pipeline import LIKELIHOOD_REFERENCE
from ntm_core.trajectory import importance_weighted

from .figures import distribution_figure, nll_parts_figure, ranking_figure
from .registry import ASSETS, trajectory_lengths
from .widgets import (EXAMPLE_PROMPTS, GPU_SECONDS, MODEL_WORK, OUTPUTS, gpu, model_picker, model_problem,
                      number_problem, prompt_problem, raise_problems, run_on_first_open, seed_problem, show,
                      user_errors, validator, vocabulary_note)

# (image, candidate prompts, the bundled model it is meant for)
EXAMPLE_UPLOADS = [(os.path.join(ASSETS, "examples", name), prompts, model) for name, prompts, model in [
    ("shapes-render.png", "a yellow circle and a yellow triangle\na red square\ntwo blue circles", "ntm-shapes32"),
    ("mnist-digit.png", "a handwritten digit seven\na handwritten digit one\na handwritten digit four",
     "ntm-mnist28"),
    ("outdoor-scene.jpg", "a yellow circle above a green square\na blue square", "ntm-shapes32")]]
MAX_CANDIDATES = 32
MAX_REALS = 4  # real renders beside the generated images
EIGHT_BIT_CHUNK = 16  # images per pass of the 8-bit bound (its Tweedie step is a gradient through all K steps)

EXPLAIN = (
    "Three densities, three numbers (lower = more likely; D = C·H·W image dimensions):\n"
    "- **trajectory bits/dim** — −log₂ p(τ) / ((K+1)·D): the *exact* density of the whole forward trajectory "
    "τ = (x_{t_0}, …, x_1) drawn from the image.\n"
    "- **bound on x_{t_0}** — −log₂ p(x_{t_0}) ≤ (−log p(τ) + log q(x_{t_1..t_K} | x_{t_0})) / (D ln 2): the image "
    "noised to t_min, a continuous density in [−1, 1] scaling (negative values are normal). Compare it only "
    "between images and prompts of one model.\n"
    "- **8-bit bound** — −log₂ P(x) of the 8-bit image, the bits/dim of RealNVP (1.06 on MNIST), Glow (1.05), "
    "FFJORD (0.99); shown for generated images and for an upload (under its most likely prompt). A model trained "
    "in the 8-bit configuration (t_min = 0): E_v[bound on x + v] + log₂ 128, v ~ U[0, 2/256) per pixel in [−1, 1] "
    "scaling. A model with t_min > 0, through its discrete decoder P(x | τ) (a table fitted on training images): "
    "bound on x_{t_0} − ½·log₂(2πe t_min²) + E[−log₂ P(x | τ)]. Each forward trajectory gives one such bound, "
    "−log₂ w / D with w = p(τ)·P(x | τ) / q(τ | x); several combine into a tighter one, −log₂ of the mean of their "
    "w (importance weighting), never above their mean.")
TIE_SE = 2.0  # a candidate within this many standard errors of the best one is a tie
ON_X_T0 = "bound bits/dim on x_t0"  # every number names its density (issue 13): this one is the noised image's
ON_TRAJECTORY, EIGHT_BIT = "bits/dim (trajectory)", "8-bit bound bits/dim"
DENSITIES = (ON_TRAJECTORY, ON_X_T0, EIGHT_BIT)  # the generated images' table: one column per density
# the verdict beside the prompt: the numbers after it scroll off a narrow table first
RANK_COLUMNS = ["rank", "prompt", "verdict", ON_X_T0, ON_X_T0 + " std", "Δ vs best", "Δ std error"]


def _csv(df: pd.DataFrame, stem: str) -> str:
    return OUTPUTS.csv(df, stem)  # pruned after an hour


def generated_problems(registry, prompt, model, steps, count, trajectories, seed, reals=0) -> list:
    return [prompt_problem(prompt), model_problem(registry, model, "ntm"),
            number_problem(steps, 1, 8, "K", integer=True), number_problem(count, 1, 8, "Images", integer=True),
            number_problem(trajectories, 1, 16, "Forward trajectories", integer=True), seed_problem(seed),
            number_problem(reals, 0, MAX_REALS, "Real renders", integer=True)]


def real_renders(dataset: str | None, prompt: str, n: int, shape: tuple, seed: int) -> torch.Tensor | None:
    """n images of the prompt drawn by the shapes data's own renderer ([n, C, H, W], model scaling): what the
    model's samples should look like, scored beside them. None where there is no renderer for it (another dataset,
    a prompt outside the captions' grammar, not RGB)."""
    pixels = renders_of(prompt, n, seed, shape[1]) if dataset == "shapes" and n > 0 and shape[0] == 3 else None
    return None if pixels is None else from_uint8(pixels)


def upload_problems(registry, upload, prompts, model, steps, trajectories, seed) -> list:
    lines = [p for p in (prompts or "").splitlines() if p.strip()] if isinstance(prompts, str) else None
    if lines is None or not lines:
        prompt_issue = "give at least one candidate prompt (one per line)"
    elif len(lines) > MAX_CANDIDATES:
        prompt_issue = f"at most {MAX_CANDIDATES} candidate prompts"
    else:
        prompt_issue = next(filter(None, map(prompt_problem, lines)), None)
    return [None if upload else "upload an image first", prompt_issue, model_problem(registry, model, "ntm"),
            number_problem(steps, 1, 8, "K", integer=True),
            number_problem(trajectories, 1, 16, "Forward trajectories", integer=True), seed_problem(seed)]


def _rows(results, labels) -> pd.DataFrame:
    rows = []
    for j, nll in enumerate(results):
        for i, label in enumerate(labels):
            rows.append({"item": label, "trajectory": j + 1, ON_TRAJECTORY: nll.bits_per_dim[i].item(),
                         ON_X_T0: nll.bound_bits_per_dim[i].item()})
    return pd.DataFrame(rows)


def load_reference(folder: str | None) -> dict | None:
    """The model's in-distribution bits/dim (null prompt), bundled in its folder; None if it has none."""
    path = os.path.join(folder, LIKELIHOOD_REFERENCE) if folder else None  # analysis.likelihood_reference
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        ref = json.load(f)
    return ref if ref.get("values") else None


def verdict(value: float, reference: list[float]) -> tuple[float, str]:
    """(percentile of `value` among the reference values, plain words)."""
    ref = np.asarray(reference)
    pct = float((ref < value).mean() * 100)
    lo, hi = np.percentile(ref, [1, 99])
    if value > hi:
        far = (value - np.median(ref)) / max(float(np.std(ref)), 1e-9)
        return pct, (f"**unusual for this model** — less likely than 99 % of its in-distribution images "
                     f"({far:.0f} σ above their median)")
    if value < lo:
        return pct, ("**unusually likely** — more likely than 99 % of its in-distribution images "
                     "(often a near-empty image)")
    return pct, "**typical** — inside the range of the model's in-distribution images"


def reference_figure(reference: dict, value: float) -> go.Figure:
    fig = go.Figure()
    fig.add_histogram(x=reference["values"], nbinsx=40, name="in-distribution images", marker_color="#8fa8c8")
    fig.add_vline(x=value, line_color="crimson", line_width=3, annotation_text="your image",
                  annotation_position="top")
    fig.update_layout(title=f"Null-prompt bound on x_t0, bits/dim: your image vs {len(reference['values'])} "
                            f"{reference.get('source', 'in-distribution images')}",
                      xaxis_title="bound bits/dim on x_t0 (lower = more likely)", yaxis_title="images",
                      showlegend=False, height=340, margin=dict(l=40, r=20, t=60, b=40))
    return fig


def rank_candidates(scores: torch.Tensor, candidates: list[str]) -> pd.DataFrame:
    """scores [P, T] (bound bits/dim on x_t0, shared trajectories) → ranking with the paired difference to the best prompt and
    whether it is within noise of it (|Δ| < TIE_SE standard errors of the paired difference over trajectories)."""
    mean = scores.mean(1)
    order = mean.argsort().tolist()
    best = order[0]
    t = scores.shape[1]
    rows = []
    for r, i in enumerate(order):
        diff = scores[i] - scores[best]
        se = diff.std().item() / math.sqrt(t) if t > 1 else float("nan")
        if i == best:
            call = "most likely"
        elif t < 2:
            call = "can't tell (use ≥ 2 trajectories)"
        else:
            call = "tie with the best (within noise)" if diff.mean().item() < TIE_SE * se else "less likely"
        rows.append({"rank": r + 1, "prompt": candidates[i], ON_X_T0: mean[i].item(),
                     ON_X_T0 + " std": scores[i].std().item() if t > 1 else float("nan"),
                     "Δ vs best": diff.mean().item(), "Δ std error": se, "verdict": call})
    return pd.DataFrame(rows, columns=RANK_COLUMNS)


def likelihood_of_generated(registry, prompt, model, steps, count, trajectories, seed, reals=0, progress=None):
    """The model's samples of a prompt under its three densities, and beside them `reals` real renders of the same
    prompt (shapes prompts): a sample scored far above the real images is one the model itself finds unlike them."""
    raise_problems(generated_problems(registry, prompt, model, steps, count, trajectories, seed, reals))
    pipe = registry.get_ntm(model)
    if progress is not None:
        progress(0.1, desc="generating images")
    out = pipe(prompt, num_images_per_prompt=int(count), num_inference_steps=4,
               guidance_scale=registry.info(model).guidance_scale,
               generator=torch.Generator().manual_seed(int(seed)), output_type="model")
    images = from_uint8(to_uint8(out.images))  # the images as shown: 8-bit, so that P(x) is defined
    labels = [f"image {i + 1}" for i in range(images.shape[0])]
    real = real_renders(registry.info(model).dataset, prompt, int(reals), pipe.sample_shape, int(seed))
    if real is not None:
        images = torch.cat([images, real.to(images)])
        labels += [f"real render {i + 1}" for i in range(real.shape[0])]
    if progress is not None:
        progress(0.4, desc="exact likelihoods of forward trajectories")
    results = pipe.log_likelihood(images, prompt, int(steps), int(trajectories),
                                  torch.Generator().manual_seed(int(seed) + 1))
    df = _rows(results, labels)
    if progress is not None:
        progress(0.7, desc="8-bit bounds")
    eight, weighted, _ = eight_bit_bounds(pipe, images, prompt, int(steps), int(trajectories), int(seed),
                                          registry.folder(model))
    if eight is not None:
        df[EIGHT_BIT] = eight.flatten().tolist()  # rows are trajectory-major, as eight's
    gallery = [(show(to_uint8(im), 128), lb) for im, lb in zip(images, labels)]
    fig_parts = nll_parts_figure(results[0], 0, f"Per-step parts, image 1, trajectory 1 (K = {int(steps)})")
    fig_dist = distribution_figure(df, "item", ON_TRAJECTORY,
                                   f"Over {int(trajectories)} forward trajectories per image")
    table = mean_std_table(df, [ON_TRAJECTORY, ON_X_T0])
    if eight is not None:  # the tightest bound of each image: its trajectories importance-weighted (the CSV has each)
        table[EIGHT_BIT] = [f"{v:.3f}" for v in weighted.tolist()]
    return gallery, fig_parts, fig_dist, table, _csv(df, "likelihood-generated")


def mean_std_table(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Per item, each column as "mean ± std" over its trajectories (one column per density keeps the table as wide as
    the page; the CSV has every number)."""
    stats = df.groupby("item", sort=False)[cols].agg(["mean", "std"])
    out = pd.DataFrame({"item": stats.index})
    for c in cols:
        out[c] = [f"{m:.3f}" if pd.isna(sd) else f"{m:.3f} ± {sd:.3f}"
                  for m, sd in zip(stats[(c, "mean")], stats[(c, "std")])]
    return out


def likelihood_of_upload(registry, upload, prompts, model, steps, trajectories, seed, progress=None):
    raise_problems(upload_problems(registry, upload, prompts, model, steps, trajectories, seed))
    pipe = registry.get_ntm(model)
    candidates = list(dict.fromkeys(p.strip() for p in prompts.splitlines() if p.strip()))
    path = upload if isinstance(upload, str) else getattr(upload, "name", upload)
    x = pipe.preprocess([path])  # raises a clear ValueError for anything that is not a readable image
    seen = show(to_uint8(x[0]), 192)
    steps, trajectories = int(steps), int(trajectories)
    if progress is not None:
        progress(0.1, desc=f"scoring {len(candidates)} prompts × {trajectories} trajectories")
    # the same forward trajectories for every prompt: differences come from the prompts alone
    scores = pipe.prompt_nll(x, candidates, steps, trajectories, torch.Generator().manual_seed(int(seed)))[0]
    rank = rank_candidates(scores, candidates)
    best = rank.iloc[0]["prompt"]
    df = pd.DataFrame([{"item": p, "trajectory": j + 1, ON_X_T0: scores[i, j].item()}
                       for i, p in enumerate(candidates) for j in range(trajectories)])
    # the quantity the verdicts are drawn from: each prompt's paired difference to the best, ± TIE_SE standard
    # errors (each prompt's own spread over the trajectories is mostly the trajectories', shared by all prompts)
    fig_rank = ranking_figure(rank, "prompt", "Δ vs best", f"Bits/dim above the best prompt (±{TIE_SE:g} std errors; "
                              "a bar over 0: a tie)", error="Δ std error", error_scale=TIE_SE)
    if progress is not None:
        progress(0.7, desc="per-step parts and the in-distribution check")
    (best_nll,) = pipe.log_likelihood(x, best, steps, 1, torch.Generator().manual_seed(int(seed)))
    fig_parts = nll_parts_figure(best_nll, 0, "Per-step parts, most likely prompt (trajectory 1)")
    parts = best_nll.parts_bits_per_dim().round(4)
    note = _ranking_note(rank) + eight_bit_note(pipe, x, best, steps, trajectories, seed, registry.folder(model))
    ref = load_reference(registry.folder(model))
    if ref is None:
        fig_ref = go.Figure().update_layout(title="No in-distribution reference bundled with this model", height=200)
        note += "\n\nThis model has no in-distribution reference, so no verdict on how typical the image is."
    else:
        g = torch.Generator().manual_seed(int(seed))
        null = pipe.ntm.nll(x, pipe.null_text(x.shape[0]), int(ref["steps"]), g)
        value = null.bound_bits_per_dim[0].item()
        pct, words = verdict(value, ref["values"])
        fig_ref = reference_figure(ref, value)
        note += (f"\n\n**In-distribution check** (null prompt, K = {ref['steps']}): {value:.3f} bits/dim on x_t0, "
                 f"above {pct:.0f} % of {len(ref['values'])} {ref.get('source', 'in-distribution images')} — {words}.")
    return seen, note, fig_rank, fig_ref, fig_parts, rank.round(4), parts, _csv(df, "likelihood-upload")


def eight_bit_bounds(pipe, x: torch.Tensor, prompts, steps: int, trajectories: int, seed: int, folder):
    """The 8-bit bounds (bits/dim) of 8-bit images x [B, ...] under their prompts (one per image, or one for all):
    each drawn trajectory's own, −log₂ w / D with w = p(τ)·P(x | τ) / q(τ | x) ([trajectories, B]), their
    importance-weighted combination ([B], never above their mean), and how they were formed; (None, None, why not)
    for a model that has no 8-bit bound."""
    b = x.shape[0]
    xs = x.repeat(trajectories, 1, 1, 1)
    if pipe.text_dim:
        prompts = [prompts] * b if isinstance(prompts, str) else list(prompts)
        text = pipe.encode_prompt(prompts * trajectories)[0]
    else:
        text = None
    decoder, generator, values = DiscreteDecoder.load(folder), torch.Generator().manual_seed(int(seed) + 2), []
    try:  # in chunks: the Tweedie step's gradient keeps every step's activations, which for a whole request
        # (12 images × 16 trajectories at K = 8) filled this machine's 24 GiB and the app was killed
        for i in range(0, len(xs), EIGHT_BIT_CHUNK):
            rows = slice(i, i + EIGHT_BIT_CHUNK)
            bound = eight_bit_bound(pipe.ntm, xs[rows], decoder, None if text is None else text.rows(rows), steps,
                                    generator)
            values.append(bound.sample_bits_per_dim.detach())
    except NoEightBitBound as e:
        return None, None, str(e)
    values = torch.cat(values).reshape(trajectories, b)
    return values, importance_weighted(values, x[0].numel(), dim=0), bound.describe()


def eight_bit_note(pipe, x: torch.Tensor, prompt: str, steps: int, trajectories: int, seed: int, folder) -> str:
    """The 8-bit bound of one image under `prompt` from `trajectories` forward trajectories, in words."""
    values, weighted, how = eight_bit_bounds(pipe, x, prompt, steps, trajectories, seed, folder)
    if values is None:
        return f"\n\n**8-bit bound**: none — {how}."
    values, t = values[:, 0], len(values)
    if t > 1:
        value = (f"**{weighted[0].item():.3f} bits/dim**, importance-weighted over {t} forward trajectories (their "
                 f"mean {values.mean().item():.3f} ± {values.std().item() / math.sqrt(t):.3f})")
    else:
        value = f"**{values[0].item():.3f} bits/dim** (one forward trajectory)"
    return (f"\n\n**8-bit bound** under *{prompt}*: {value} = −log₂ P(x) per dimension of the 8-bit image at most "
            f"({how}; on MNIST RealNVP 1.06, Glow 1.05, FFJORD 0.99).")


def _ranking_note(rank: pd.DataFrame) -> str:
    best = rank.iloc[0]
    ties = rank[rank["verdict"].str.startswith("tie")]["prompt"].tolist()
    if len(rank) == 1:
        return f"One candidate: **{best['prompt']}** at {best[ON_X_T0]:.3f} bits/dim (bound on x_t0)."
    if rank["verdict"].str.startswith("can't tell").any():
        return (f"Most likely: **{best['prompt']}**. With one trajectory the ranking cannot tell a win from noise: "
                "raise *Forward trajectories* to 2 or more.")
    if ties:
        return (f"**No clear winner**: {', '.join(repr(t) for t in ties)} "
                f"{'is' if len(ties) == 1 else 'are'} within noise of **{best['prompt']}** "
                f"(Δ < {TIE_SE:g} standard errors over the forward trajectories).")
    return (f"Most likely: **{best['prompt']}**, ahead of the next by {rank.iloc[1]['Δ vs best']:.4f} bits/dim "
            f"({rank.iloc[1]['Δ vs best'] / rank.iloc[1]['Δ std error']:.1f} standard errors).")


def build(registry, demo):
    with gr.Tab("Likelihood", id="likelihood") as tab:
        gr.Markdown(EXPLAIN)
        with gr.Tab("Generated images of a prompt"):
            with gr.Row():
                with gr.Column(scale=2, min_width=300):
                    prompt = gr.Textbox(label="Prompt (Enter runs)", value=EXAMPLE_PROMPTS[0], lines=1, max_lines=1)
                    vocab_g = gr.Markdown(visible=False)
                    model_g = model_picker(registry, kind="ntm")
                    with gr.Row():
                        steps_g = gr.Slider(1, 8, value=4, step=1, label="K (trajectory steps)")
                        count = gr.Slider(1, 8, value=4, step=1, label="Images")
                    with gr.Row():
                        traj_g = gr.Slider(1, 16, value=4, step=1, label="Forward trajectories per image")
                        seed_g = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                    reals_g = gr.Slider(0, MAX_REALS, value=2, step=1, label="Real renders of the prompt",
                                        info="shapes prompts: drawn by the training data's renderer and scored "
                                             "beside the samples, as the reference they should match")
                    go_g = gr.Button("Compute likelihoods", variant="primary")
                with gr.Column(scale=3):
                    gallery = gr.Gallery(label="Images", columns=4, height=180, object_fit="contain",
                                         elem_id="likg-gallery")
                    summary = gr.Dataframe(label="Per image, bits/dim: mean ± std over the forward trajectories; "
                                           "the 8-bit bound importance-weighted over them",
                                           interactive=False, headers=["item", *DENSITIES])
            with gr.Row():
                parts_g = gr.Plot()
                dist_g = gr.Plot()
            csv_g = gr.File(label="All results (CSV)")

            @gpu(duration=GPU_SECONDS["likelihood_generated"])
            @user_errors
            def run_generated(prompt, model, steps, count, trajectories, seed, reals, progress=gr.Progress()):
                return likelihood_of_generated(registry, prompt, model, steps, count, trajectories, seed, reals,
                                               progress)

            inputs_g, outputs_g = [prompt, model_g, steps_g, count, traj_g, seed_g, reals_g], [gallery, parts_g,
                                                                                                dist_g, summary, csv_g]
            gr.on([go_g.click, prompt.submit], run_generated, inputs_g, outputs_g, api_name="likelihood_generated",
                  validator=validator(generated_problems, registry), **MODEL_WORK)
            run_on_first_open(tab, run_generated, inputs_g, outputs_g, shown=gallery, show_progress="full")

        with gr.Tab("An uploaded image") as upload_tab:
            with gr.Row():
                with gr.Column(scale=2, min_width=300):
                    # the first example is loaded, so the sub-tab opens on its ranking (run_on_first_open below)
                    ntms = registry.choices("ntm")
                    example_rows = [[path, p, m if m in ntms else registry.default("ntm")]
                                    for path, p, m in EXAMPLE_UPLOADS if os.path.exists(path)]
                    first_upload, first_prompts = (example_rows[0][:2] if example_rows
                                                   else (None, "\n".join(EXAMPLE_PROMPTS[:4])))
                    upload = gr.File(value=first_upload, label="Image (any size or format)", file_types=["image"],
                                     type="filepath", elem_id="lik-upload")
                    prompts = gr.Textbox(label="Candidate prompts (one per line)", lines=5, value=first_prompts)
                    vocab_u = gr.Markdown(visible=False)
                    model_u = model_picker(registry, kind="ntm")
                    with gr.Row():
                        steps_u = gr.Slider(1, 8, value=4, step=1, label="K (trajectory steps)")
                        traj_u = gr.Slider(1, 16, value=4, step=1, label="Forward trajectories")
                        seed_u = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                    go_u = gr.Button("Rank prompts by likelihood", variant="primary", elem_id="lik-button")
                    examples = gr.Examples(example_rows, inputs=[upload, prompts, model_u],
                                           label="Example uploads: in-distribution render, MNIST digit, outdoor scene "
                                                 "(a click loads one with its prompts and model, and ranks them)")
                with gr.Column(scale=3):
                    seen = gr.Image(label="As the model sees it", height=200, elem_id="lik-seen")
                    note_u = gr.Markdown(elem_id="lik-note")
                    rank = gr.Dataframe(label="Ranking (zero-shot classification)", interactive=False,
                                        headers=RANK_COLUMNS)
            with gr.Row():
                rank_fig = gr.Plot(label="Ranking")
                ref_fig = gr.Plot(label="Against the model's in-distribution images")
            parts_u = gr.Plot(label="Per-step parts")
            parts_table = gr.Dataframe(label="Per-step parts for the best prompt (bits/dim)", interactive=False,
                                       headers=PARTS_COLUMNS)
            csv_u = gr.File(label="All results (CSV)")

            @gpu(duration=GPU_SECONDS["likelihood"])
            @user_errors
            def run_upload(upload, prompts, model, steps, trajectories, seed, progress=gr.Progress()):
                return likelihood_of_upload(registry, upload, prompts, model, steps, trajectories, seed, progress)

            inputs_u = [upload, prompts, model_u, steps_u, traj_u, seed_u]
            outputs_u = [seen, note_u, rank_fig, ref_fig, parts_u, rank, parts_table, csv_u]
            check_u = validator(upload_problems, registry)
            # an image the user uploads is ranked at once (1–3 s), as the examples are; Rank reruns after edits
            gr.on([go_u.click, upload.upload], run_upload, inputs_u, outputs_u, api_name="likelihood",
                  validator=check_u, **MODEL_WORK)
            run_on_first_open(upload_tab, run_upload, inputs_u, outputs_u, shown=seen, show_progress="full")
            examples.load_input_event.then(run_upload, inputs_u, outputs_u, api_name=False, validator=check_u,
                                           **MODEL_WORK)
        for picker, slider, text, vocab in ((model_g, steps_g, prompt, vocab_g), (model_u, steps_u, prompts, vocab_u)):
            gr.on([picker.change, demo.load], lambda m: k_slider(registry, m), [picker], [slider], api_name=False,
                  queue=False)
            gr.on([text.change, picker.change], lambda p, m: vocabulary_note(registry, p, m, scoring=True),
                  [text, picker], vocab, api_name=False, queue=False, show_progress="hidden")
    return model_g, model_u


def k_slider(registry, model) -> gr.Slider:
    """The K slider's note for the picked model: the lengths it trained at (a trained NTM ranks worse elsewhere:
    ntm-mnist28 classifies digits at 0.60 at K = 4, 0.27 at K = 8, README)."""
    folder = registry.folder(model)
    return gr.Slider(info=trajectory_lengths(folder) if folder else "")

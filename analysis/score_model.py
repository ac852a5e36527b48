"""Score one model on the held-out prompts with the evaluator (ntm_core.data.shapes_eval), on the machine at hand: the
check a training recipe runs after each job, where it trained (on the GPU when there is one), so that a session
knows at once whether a model draws. analysis.benchmark is the full table (all rows, likelihoods, CPU speed).

    python -m analysis.score_model runs/fm-shapes32/pipeline --steps 50 --out runs/score-fm
    python -m analysis.score_model assets/ntm-shapes32 --steps 4 --option denoise=learned
    python -m analysis.score_model assets/ntm-shapes32 --failures     # also why images fail, per category, and
                                                                      # which relations position images draw

Default steps: 50 Euler steps for a flow-matching model, 4 for an NTM (with its default final step).
"""
from __future__ import annotations

import argparse

import pandas as pd
import torch

from analysis import key_values
from analysis.benchmark import generate
from ntm_core.data.shapes_eval import failure_table, per_image, relation_table, score
from ntm_core.config import parse_value
from ntm_core.data.shapes import CATEGORIES, eval_prompts
from ntm_core.pipeline import NTMPipeline, load_pipeline
from ntm_core.report import environment, report


def eval_images(pipe, steps: int, options: dict | None = None, per_category: int = 32, guidance: float = 3.0,
                seed: int = 0, batch: int = 80, split: str = "test", categories=CATEGORIES) -> tuple[list, list]:
    """(images, their specs): what `pipe` draws at `steps` for the held-out prompts (split='train': the training
    prompts), ready for the evaluator's tables (`score`, `failure_table`)."""
    prompts = eval_prompts(per_category, seed, split, categories)
    images, _ = generate(pipe, [p["caption"] for p in prompts], steps, options or {}, guidance, seed, batch)
    return list(images.float().cpu()), [p["spec"] for p in prompts]


def score_model(pipe, steps: int, options: dict | None = None, per_category: int = 32, guidance: float = 3.0,
                seed: int = 0, batch: int = 80, split: str = "test", categories=CATEGORIES) -> pd.DataFrame:
    """The evaluator's table (score, colour match and shape fit per category and overall) for `pipe` at `steps`,
    on the held-out prompts (split='train': the training prompts)."""
    return score(*eval_images(pipe, steps, options, per_category, guidance, seed, batch, split, categories))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a pipeline folder (a bundle in assets/ or a run's pipeline/)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--option", nargs="*", default=[], metavar="KEY=VALUE",
                    help="the pipeline call's options, e.g. denoise=score or sampler=gaussian")
    ap.add_argument("--per-category", type=int, default=32)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=("test", "train"), default="test",
                    help="held-out prompts (default), or the training prompts: what a model learned")
    ap.add_argument("--categories", nargs="+", choices=CATEGORIES, default=list(CATEGORIES))
    ap.add_argument("--failures", action="store_true",
                    help="also the table of why images fail, per category (written to <out>-failures.*)")
    ap.add_argument("--out", default=None, help="also write <out>.json/.csv/.md")
    a = ap.parse_args(argv)
    # as the pipeline takes them: temperature=0.5 a number, denoise=score a word (the trainer's --set parsing)
    options = {k: parse_value(v) for k, v in key_values(ap, a.option, "--option").items()}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = load_pipeline(a.model).to(device)
    steps = a.steps or (4 if isinstance(pipe, NTMPipeline) else 50)
    try:
        images, specs = eval_images(pipe, steps, options, a.per_category, a.guidance, a.seed, split=a.split,
                                    categories=a.categories)
    except (TypeError, ValueError) as e:  # an option the pipeline does not take, or a value it refuses
        ap.error(f"{a.model}: {e}")
    settings = f"{steps} steps" + (f", {options}" if options else "")
    prompts = "held-out" if a.split == "test" else "training"
    env = environment(model=a.model, steps=steps, options=options, per_category=a.per_category,
                      guidance=a.guidance, seed=a.seed, split=a.split, categories=a.categories)
    report(score(images, specs).reset_index(), f"{a.model} at {settings} on the {prompts} prompts", env, a.out,
           digits=3)
    if a.failures:
        rows = per_image(images, specs)
        report(failure_table(rows).reset_index(), "why images fail (fraction of each category's images; with "
               "'passes', each row sums to 1)", env, a.out and f"{a.out}-failures", digits=3)
        if rows["drawn"].notna().any():
            report(relation_table(rows).reset_index(), "position prompts with both objects drawn once: the relation "
                   "asked against the one drawn (fractions of each row), and whether the axis and the side were right",
                   env, a.out and f"{a.out}-relations", digits=3)


if __name__ == "__main__":
    main()

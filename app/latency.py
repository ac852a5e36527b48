"""Latency of one generation through the app's own code path (app.generate.generate_images), as a user sees it.
It lives with what it measures: the app.

    python -m app.latency --model ntm-shapes32 --steps 4 --repeats 10 --out results/app_latency
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from ntm_core.report import environment, report

from .generate import final_choices, generate_images
from .registry import Registry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ntm-shapes32", help="a label from the app's model picker")
    ap.add_argument("--prompt", default="a red circle to the left of a blue square")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--candidates", type=int, default=None,
                    help="candidates per image (default: the model's, where the Generate tab starts)")
    ap.add_argument("--out", default="results/app_latency")
    a = ap.parse_args()

    registry = Registry()
    info = registry.info(a.model)
    candidates = a.candidates or info.num_candidates
    rows = []
    for _, final in final_choices(info):
        generate_images(registry, a.prompt, a.model, a.steps, 3.0, 1.0, 0, False, 1, final, candidates)
        secs = []
        for r in range(a.repeats):
            start = time.perf_counter()
            generate_images(registry, a.prompt, a.model, a.steps, 3.0, 1.0, r, False, 1, final, candidates)
            secs.append(time.perf_counter() - start)
        rows.append({"model": a.model, "steps": a.steps, "final step": final, "candidates": candidates,
                     "median s / image": np.median(secs), "max s / image": max(secs)})
    report(pd.DataFrame(rows), "one image through the app's generate path",
           environment(repeats=a.repeats, prompt=a.prompt), a.out)


if __name__ == "__main__":
    main()

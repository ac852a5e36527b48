"""Training throughput of every objective on one configuration, measured with the real trainer.

    python -m analysis.bench_training --config ntm_core/configs/shapes32.yaml --steps 6 --out results/bench_training.json

Each objective trains `--steps` optimizer steps from the config (fm_to_ntm starts from the fm run just made,
denoiser from the ntm run); the first step (warm-up) is dropped and the median of the rest is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import pandas as pd

from analysis.report import environment, report
from ntm_core.config import load_config
from ntm_core.train import train

ORDER = ("ntm", "gauss", "fm", "fm_to_ntm", "denoiser")


def benchmark(config: str, steps: int, overrides=()) -> pd.DataFrame:
    rows, folders = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for obj in ORDER:
            extra = [f"objective={obj}", f"output_dir={os.path.join(tmp, obj)}", f"train.steps={steps}",
                     f"train.checkpoint_every={steps + 1}", "train.warmup_steps=1", *overrides]
            if obj == "fm_to_ntm":
                extra.append(f"init_from={folders['fm']}")
            if obj == "denoiser":
                extra.append(f"init_from={folders['ntm']}")
            cfg = load_config(config, extra)
            folders[obj] = train(cfg)
            with open(os.path.join(tmp, obj, "metrics.jsonl")) as f:
                m = pd.DataFrame([json.loads(line) for line in f])
            timed = m.iloc[1:] if len(m) > 1 else m
            rows.append({"objective": obj, "batch_size": cfg["train"]["batch_size"],
                         "samples_per_s": timed["samples_per_s"].median(),
                         "seconds_per_step": timed["seconds"].median(), "steps_timed": len(timed),
                         "K": ",".join(str(k) for k in sorted(set(m["num_steps"])))})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="ntm_core/configs/shapes32.yaml")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    report(benchmark(args.config, args.steps, args.set), "training throughput", environment(config=args.config),
           args.out, digits=3)


if __name__ == "__main__":
    main()

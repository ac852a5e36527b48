"""Transporter speed on this machine: parallel forward vs. the KV-cached and the naive token-by-token inverse.

    python -m analysis.bench_transporter --out results/bench_transporter.json

Default: a 32×32×3 image, patch 4 → 64 tokens of 48 dims, 2 blocks × 2 layers, width 128 (the shapes32 size).
Reports the median wall time over repeats (after a warm-up), per call and per image, and the cached-vs-naive
speed-up measured in the same run.
"""
from __future__ import annotations

import argparse

import pandas as pd
import torch

from analysis import median_seconds
from ntm_core.report import environment, report
from ntm_core.transporter import Transporter


def benchmark(batch_sizes=(1, 16), repeats: int = 5, naive_repeats: int = 2, seed: int = 0, **config) -> pd.DataFrame:
    cfg = dict(sample_size=32, in_channels=3, patch_size=4, num_blocks=2, layers_per_block=2, width=128, heads=4)
    cfg.update(config)
    torch.manual_seed(seed)
    model = Transporter(**cfg).eval()
    with torch.no_grad():  # random, non-identity weights: the inverse must do real work
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    rows = []
    for b in batch_sizes:
        x = torch.randn(b, cfg["in_channels"], cfg["sample_size"], cfg["sample_size"])
        with torch.no_grad():
            u, _ = model(x, 0.05)
            err = (model.inverse(u, 0.05) - x).abs().max().item()
            timings = {
                "forward": median_seconds(lambda _: model(x, 0.05), repeats),
                "inverse_cached": median_seconds(lambda _: model.inverse(u, 0.05), repeats),
                "inverse_naive": median_seconds(lambda _: model.inverse(u, 0.05, use_cache=False), naive_repeats),
            }
        for name, sec in timings.items():
            rows.append({"batch": b, "op": name, "seconds": sec, "ms_per_image": 1000 * sec / b,
                         "images_per_s": b / sec, "max_roundtrip_err": err})
    df = pd.DataFrame(rows)
    df["speedup_vs_naive"] = df.apply(
        lambda r: df[(df.batch == r.batch) & (df.op == "inverse_naive")].seconds.item() / r.seconds, axis=1)
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None, help="write JSON (and .csv, .md beside it)")
    args = ap.parse_args()
    report(benchmark(tuple(args.batch_sizes), args.repeats), "transporter benchmark", environment(), args.out)


if __name__ == "__main__":
    main()

"""Choose the predictor backbone on flow matching, by measurement: each candidate trains the FM objective for the
same wall-clock on the GPU, then draws the held-out prompts at 50 Euler steps and is scored by the evaluator.

    python -m analysis.backbone_sweep --candidate p4-w160-d4 p2-w256-d8 --seconds 100 --out docs/backbone-sweep

Candidates are named as in `analysis.backbone_latency` (p<patch>-w<width>-d<depth>[-h<heads>]), whose table says
which of them keep the app under 1 s per image on the 2-core CPU; sweep only those.
"""
from __future__ import annotations

import argparse
import os
import tempfile

import pandas as pd
import torch

from analysis.backbone_latency import parse
from analysis.score_model import score_model
from ntm_core.config import load_config
from ntm_core.pipeline import load_pipeline
from ntm_core.report import environment, report
from ntm_core.runs import RunFolder
from ntm_core.train import train


def sweep(candidates, config: str, seconds: float, per_category: int, guidance: float, overrides=()) -> pd.DataFrame:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in candidates:
            arch = parse(name)
            out = os.path.join(tmp, name)
            cfg = load_config(config, ["objective=fm", f"output_dir={out}", f"train.max_seconds={seconds}",
                                       *(f"model.predictor.{k}={v}" for k, v in arch.items()), *overrides])
            pipe = load_pipeline(train(cfg)).to("cuda" if torch.cuda.is_available() else "cpu")
            table = score_model(pipe, 50, {}, per_category, guidance)
            run = RunFolder(out)
            status = run.status()
            rows.append({"candidate": name, "params (M)": sum(p.numel() for p in pipe.predictor.parameters()) / 1e6,
                         "steps": status.get("step"), "samples seen": status.get("samples"),
                         "final loss": float(run.metrics()["loss"].tail(20).mean()),
                         "FM@50 score": table.loc["overall", "score"],
                         "colour match": table.loc["overall", "colour_match"],
                         "shape fit": table.loc["overall", "shape_fit"],
                         **{c: table.loc[c, "score"] for c in table.index if c != "overall"}})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidate", nargs="+", required=True)
    ap.add_argument("--config", default="ntm_core/configs/shapes32_fm.yaml")
    ap.add_argument("--seconds", type=float, default=100)
    ap.add_argument("--per-category", type=int, default=32)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    df = sweep(a.candidate, a.config, a.seconds, a.per_category, a.guidance, a.set)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    report(df, f"backbone sweep: flow matching, {a.seconds:g} s of training each, held-out prompts at 50 Euler steps",
           environment(config=a.config, gpu=gpu, per_category=a.per_category, guidance=a.guidance), a.out, digits=3)


if __name__ == "__main__":
    main()

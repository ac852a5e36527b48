"""Which predictor backbones keep the app under 1 s per image on this CPU — measured before any GPU time is spent.

    python -m analysis.backbone_latency --candidate p4-w160-d4 p2-w192-d6 p2-w256-d8 --out docs/backbone-latency

Each candidate (patch p, width w, depth d[, heads h]) is built as the default model would be — an NTM finetuned
from flow matching (a Markov predictor) with the shapes32 transporter and a learned denoiser at the same patch —
with untrained weights (the time does not depend on their values), and timed through the pipeline per image at
each --batch: 4 steps with the learned denoiser (the app's default path), with the transporter's inverse (none) and
with trajectory-score denoising (its forward and backward pass), and the flow-matching model at 50 Euler steps (the
baseline the Compare tab draws). "score / learned" is the learned denoiser's speed-up over the score step, the
paper's 9×, measured in the same run:

    python -m analysis.backbone_latency --config ntm_core/configs/shapes32_fm.yaml --candidate p2-w192-d6 \
        --batch 1 16 --out docs/denoiser-speed
"""
from __future__ import annotations

import argparse
import re

import pandas as pd
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from analysis import median_seconds
from ntm_core.report import environment, report
from ntm_core.config import load_config
from ntm_core.denoiser import Denoiser
from ntm_core.pipeline import FlowMatchingPipeline, NTMPipeline
from ntm_core.predictor import Predictor
from ntm_core.trajectory import TrajectorySchedule
from ntm_core.transporter import Transporter

SPEC = re.compile(r"^p(\d+)-w(\d+)-d(\d+)(?:-h(\d+))?$")
PROMPT = "a red circle to the left of a blue square"


def parse(name: str) -> dict:
    m = SPEC.match(name)
    if not m:
        raise ValueError(f"a candidate reads p<patch>-w<width>-d<depth>[-h<heads>], e.g. p2-w256-d8; got {name!r}")
    p, w, d, h = (int(g) if g else None for g in m.groups())
    return {"patch_size": p, "width": w, "depth": d, "heads": h or max(1, w // 64)}


def measure(name: str, cfg: dict, repeats: int, batch: int = 1) -> dict:
    arch = parse(name)
    torch.manual_seed(0)
    shape = {"sample_size": cfg["data"]["image_size"], "in_channels": cfg["data"]["channels"]}
    text_kw = {"text_encoder_path": cfg["text"]["encoder"], "text_max_length": cfg["text"]["max_length"]}
    fm = Predictor(**arch, **shape, text_dim=384, markov=True, s_conditioning=False).eval()
    ntm_predictor = Predictor(**arch, **shape, text_dim=384, markov=True).eval()
    transporter = Transporter(**cfg["model"]["transporter"], **shape, text_dim=384).eval()
    denoiser = Denoiser(**cfg["model"]["denoiser"], **shape, patch_size=arch["patch_size"], text_dim=384).eval()
    ntm = NTMPipeline(transporter, ntm_predictor, TrajectorySchedule(**cfg["model"]["schedule"]), denoiser, **text_kw)
    fm_pipe = FlowMatchingPipeline(fm, FlowMatchEulerDiscreteScheduler(shift=1.0), **text_kw)
    seed = lambda r: torch.Generator().manual_seed(r)  # noqa: E731
    row = {"candidate": name, **arch, "batch": batch,
           "predictor params (M)": sum(p.numel() for p in fm.parameters()) / 1e6,
           "bundle MB (bf16)": 2 * sum(p.numel() for m in (ntm_predictor, transporter, denoiser)
                                       for p in m.parameters()) / 1e6}

    def per_image(call, n):  # seconds per image of one call at this batch
        return median_seconds(call, n) / batch

    with torch.inference_mode():
        for final in ("learned", "none"):
            row[f"NTM@4 {final} s"] = per_image(lambda r: ntm(PROMPT, 4, 3.0, num_images_per_prompt=batch,
                                                                generator=seed(r), denoise=final), repeats)
    # the score step differentiates the trajectory NLL, so it runs outside inference mode
    row["NTM@4 score s"] = per_image(lambda r: ntm(PROMPT, 4, 3.0, num_images_per_prompt=batch, generator=seed(r),
                                                     denoise="score"), repeats)
    with torch.inference_mode():
        row["FM@50 s"] = per_image(lambda r: fm_pipe(PROMPT, 50, 3.0, num_images_per_prompt=batch, generator=seed(r)),
                                   max(1, repeats // 3))
    row["score / learned"] = row["NTM@4 score s"] / row["NTM@4 learned s"]
    row["fits the app (< 1 s)"] = row["NTM@4 learned s"] < 1.0
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidate", nargs="+", default=["p4-w160-d4", "p2-w192-d6", "p2-w256-d8", "p2-w320-d8",
                                                        "p2-w384-d12"])
    ap.add_argument("--config", default="ntm_core/configs/shapes32.yaml", help="data, text, transporter, denoiser")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, nargs="+", default=[1], help="images per call; times are per image")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    cfg = load_config(a.config)
    df = pd.DataFrame([measure(c, cfg, a.repeats, b) for c in a.candidate for b in a.batch])
    report(df, "backbone candidates: seconds per image through the pipeline, untrained weights",
           environment(config=a.config, prompt=PROMPT, repeats=a.repeats), a.out, digits=3)


if __name__ == "__main__":
    main()

"""The in-distribution reference the app's Likelihood tab compares an upload with: the null-prompt bound on
−log₂ p(x_{t_0}) per dimension of N in-distribution images, written into the model folder as
likelihood_reference.json (plain JSON: the app needs no data set at run time).

    python -m analysis.likelihood_reference --model assets/ntm-shapes32 --data shapes --n 256
    python -m analysis.likelihood_reference --model assets/ntm-mnist28 --data mnist --mnist ../shared/data/mnist

shapes: renders of the training specs (the model's training distribution, fresh seeds); mnist: MNIST test images.
One forward trajectory per image, K = --steps, seeded.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

from ntm_core.data.idx import IdxDataset
from ntm_core.data.shapes import ShapesDataset
from ntm_core.pipeline import LIKELIHOOD_REFERENCE, NTMPipeline, load_pipeline


def images(data: str, n: int, size: int, channels: int, mnist_root: str, seed: int) -> tuple[torch.Tensor, str]:
    if data == "shapes":
        ds = ShapesDataset("train", seed=seed + 777, image_size=size)
        return torch.stack([ds[i]["image"] for i in range(n)]), "renders of the training specs"
    ds = IdxDataset(mnist_root, "mnist", "test", image_size=size, channels=channels)
    return torch.stack([ds[i]["image"] for i in range(min(n, len(ds)))]), "MNIST test images"


@torch.no_grad()
def reference(pipe: NTMPipeline, x: torch.Tensor, steps: int, seed: int, batch: int = 128) -> np.ndarray:
    out = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        nll = pipe.ntm.nll(xb, pipe.null_text(len(xb)), steps, torch.Generator().manual_seed(seed + i))
        out.append(nll.bound_bits_per_dim)
    return torch.cat(out).numpy()


def write_reference(folder: str, pipe: NTMPipeline, data: str, n: int, steps: int, seed: int,
                    mnist_root: str = "", command: str = "") -> np.ndarray:
    """Score n in-distribution images and write the reference JSON into the model folder; returns the values."""
    c, h, _ = pipe.sample_shape
    x, source = images(data, n, h, c, mnist_root, seed)
    values = reference(pipe, x, steps, seed)
    out = {"density": "null-prompt bound on -log2 p(x_t0) per dimension, [-1, 1] scaling, 1 forward trajectory",
           "steps": steps, "source": source, "n": int(len(values)), "command": command,
           "values": [round(float(v), 5) for v in values]}
    with open(os.path.join(folder, LIKELIHOOD_REFERENCE), "w") as f:
        json.dump(out, f, indent=1)
    return values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", choices=["shapes", "mnist"], required=True)
    ap.add_argument("--mnist", default="../shared/data/mnist", help="MNIST IDX folder (only to build the file)")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    pipe = load_pipeline(a.model)
    if not isinstance(pipe, NTMPipeline):
        raise SystemExit("--model must be an NTM folder")
    values = write_reference(a.model, pipe, a.data, a.n, a.steps, a.seed, a.mnist,
                             "python -m analysis.likelihood_reference " + " ".join(sys.argv[1:]))
    q = np.percentile(values, [1, 50, 99])
    print(f"{a.model}: {len(values)} values, bits/dim 1/50/99 % = {q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}")


if __name__ == "__main__":
    main()

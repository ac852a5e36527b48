"""MNIST likelihood analysis of an NTM trained on MNIST with label prompts (e.g. assets/ntm-mnist28).

    python -m analysis.mnist --model assets/ntm-mnist28 --data ../shared/data --out results/mnist

Measures, in one run:
1. bits/dim on the MNIST test set. The density is that of the noised image x_{t_0} = (1 − t_0)·x + t_0·ε in the
   model's [−1, 1] pixel scaling, bounded through one sampled forward trajectory:
   −log p(x_{t_0}) ≤ −log p(τ) + log q(x_{t_1..t_K} | x_{t_0}) (NTM_METHOD §4). Reported per image dimension in
   bits, as is and shifted by log2(127.5) to 8-bit pixel units (the same density, [0, 255] scaling). Also the exact
   trajectory NLL per trajectory dimension. Conditional (the true label's prompt) and unconditional (null prompt).
2. Sample accuracy: images generated for each digit's prompt, classified by a small CNN trained here on MNIST
   train (its own test accuracy is reported next to it).
3. Out-of-distribution ranking: unconditional NLL of MNIST test vs Fashion-MNIST test images; AUROC of
   "lower NLL ⇒ MNIST" (1.0 = perfect separation).
Writes <out>.json/.csv/.md (one row per measurement).
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from analysis.report import environment, report
from ntm_core.data.idx import DIGITS, IdxDataset
from ntm_core.pipeline import load_pipeline


class DigitClassifier(nn.Module):
    """A small CNN: enough for ~99 % MNIST test accuracy after one epoch."""

    def __init__(self, size: int = 28):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * (size // 4) ** 2, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        return self.head(self.conv(x))


def stack(ds: IdxDataset, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    idx = range(len(ds) if n is None else min(n, len(ds)))
    x = torch.stack([ds[i]["image"] for i in idx])  # the dataset's own scaling, padding and channels
    return x, torch.from_numpy(ds.labels[list(idx)].astype(np.int64))


def train_classifier(root: str, size: int, epochs: int = 1, seed: int = 0) -> tuple[DigitClassifier, float]:
    torch.manual_seed(seed)
    x, y = stack(IdxDataset(root, "mnist", "train", image_size=size))
    xt, yt = stack(IdxDataset(root, "mnist", "test", image_size=size))
    clf = DigitClassifier(size)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in tqdm(range(0, len(x), 128), desc="classifier", leave=False):
            b = perm[i : i + 128]
            loss = F.cross_entropy(clf(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    clf.eval()
    with torch.no_grad():
        acc = torch.cat([clf(xt[i : i + 1000]).argmax(1) for i in range(0, len(xt), 1000)]).eq(yt).float().mean()
    return clf, float(acc)


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score(pos) > score(neg)) + ½ P(tie), by ranks (Mann–Whitney U)."""
    scores = np.concatenate([pos, neg])
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


@torch.no_grad()
def nll(pipe, x: torch.Tensor, prompts: list[str], steps: int, seed: int, batch: int = 250):
    """Per-image (bound bits/dim, trajectory bits/dim) with one forward trajectory each; '' = null prompt."""
    bound, traj = [], []
    for i in tqdm(range(0, len(x), batch), desc="nll", leave=False):
        text = pipe.text_encoder.encode(prompts[i : i + batch]) if pipe.text_dim else None
        r = pipe.ntm.nll(x[i : i + batch], text, steps, torch.Generator().manual_seed(seed + i))
        bound.append(r.bound_bits_per_dim)
        traj.append(r.bits_per_dim)
    return torch.cat(bound).numpy(), torch.cat(traj).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="assets/ntm-mnist28")
    ap.add_argument("--data", default="../shared/data", help="folder with mnist/ and fashion-mnist/ IDX files")
    ap.add_argument("--n", type=int, default=2000, help="test images per dataset for the likelihoods")
    ap.add_argument("--samples-per-digit", type=int, default=50)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/mnist")
    a = ap.parse_args()

    pipe = load_pipeline(a.model)
    c, size, _ = pipe.sample_shape
    mnist = IdxDataset(os.path.join(a.data, "mnist"), "mnist", "test", image_size=size, channels=c)
    fashion = IdxDataset(os.path.join(a.data, "fashion-mnist"), "fashion-mnist", "test", image_size=size, channels=c)
    xm, ym = stack(mnist, a.n)
    xf, _ = stack(fashion, a.n)
    rows = []
    shift = math.log2(127.5)  # [−1, 1] → [0, 255] scaling of the same density

    labels = [mnist.caption(int(y)) for y in ym]
    t0 = time.perf_counter()
    b_cond, t_cond = nll(pipe, xm, labels, a.steps, a.seed)
    b_unc, t_unc = nll(pipe, xm, [""] * len(xm), a.steps, a.seed)
    b_fash, _ = nll(pipe, xf, [""] * len(xf), a.steps, a.seed)
    nll_seconds = time.perf_counter() - t0
    for name, bound, traj in (("MNIST test, label prompt", b_cond, t_cond), ("MNIST test, null prompt", b_unc, t_unc)):
        rows.append({"measurement": f"bound bits/dim on x_t0 ([-1,1] scale), {name}", "value": bound.mean(),
                     "std error": bound.std() / math.sqrt(len(bound))})
        rows.append({"measurement": f"bound bits/dim on x_t0 (8-bit scale), {name}", "value": bound.mean() + shift,
                     "std error": bound.std() / math.sqrt(len(bound))})
        rows.append({"measurement": f"trajectory NLL bits/dim, {name}", "value": traj.mean(),
                     "std error": traj.std() / math.sqrt(len(traj))})
    rows.append({"measurement": "bound bits/dim on x_t0 ([-1,1] scale), Fashion-MNIST test, null prompt",
                 "value": b_fash.mean(), "std error": b_fash.std() / math.sqrt(len(b_fash))})
    rows.append({"measurement": "AUROC, MNIST test vs Fashion-MNIST test by unconditional NLL",
                 "value": auroc(-b_unc, -b_fash), "std error": float("nan")})

    clf, clf_acc = train_classifier(os.path.join(a.data, "mnist"), size, seed=a.seed)
    rows.append({"measurement": "classifier accuracy on MNIST test (trained here, 1 epoch)", "value": clf_acc,
                 "std error": float("nan")})
    digits = [d for d in range(10) for _ in range(a.samples_per_digit)]
    prompts = [f"a handwritten digit {DIGITS[d]}" for d in digits]
    for denoise in ("score", "none"):
        preds = []
        for i in tqdm(range(0, len(prompts), 50), desc=f"samples ({denoise})", leave=False):
            g = torch.Generator().manual_seed(a.seed + i)
            img = pipe(prompts[i : i + 50], num_inference_steps=a.steps, guidance_scale=a.guidance, generator=g,
                       output_type="pt", denoise=denoise).images * 2 - 1
            with torch.no_grad():
                preds.append(clf(img[:, :1]).argmax(1))
        acc = torch.cat(preds).eq(torch.tensor(digits)).float()
        rows.append({"measurement": f"sample accuracy, {a.steps} steps, guidance {a.guidance}, denoise={denoise}",
                     "value": acc.mean().item(), "std error": (acc.std() / math.sqrt(len(acc))).item()})
    df = pd.DataFrame(rows)
    report(df, "MNIST likelihood analysis", environment(model=a.model, n=a.n, steps=a.steps, seed=a.seed,
                                                        nll_seconds=round(nll_seconds, 1)), a.out)


if __name__ == "__main__":
    main()

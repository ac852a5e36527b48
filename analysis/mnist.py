"""MNIST likelihood analysis of an NTM trained on MNIST with label prompts (e.g. assets/ntm-mnist28).

    python -m analysis.mnist --model assets/ntm-mnist28 --data ../shared/data --out results/mnist

Measures, in one run (--parts picks a subset):
1. likelihood: bits/dim on the MNIST test set, each row naming its density.
   - For a model with t_min > 0 (ntm-mnist28): the bound on the noised image x_{t_0} = (1 − t_0)·x + t_0·ε in
     the model's [−1, 1] scaling, −log p(x_{t_0}) ≤ −log p(τ) + log q(x_{t_1..t_K} | x_{t_0}) (NTM_METHOD §4),
     as is and in [0, 255] pixel units (+log2 127.5: the same continuous density, *not* a bound on the 8-bit image).
   - For a model in the 8-bit configuration (t_min = 0, dequantized; ntm-mnist28-bpd): the upper bound on
     −log2 P(x) of the 8-bit image, the number RealNVP (1.06), Glow (1.05) and FFJORD (0.99) report.
   - The exact trajectory NLL per trajectory dimension. Conditional (the label's prompt) and null prompt.
   - Out-of-distribution: AUROC of MNIST test vs Fashion-MNIST test by the null-prompt bound (scipy's
     Mann–Whitney U; 1.0 = perfect separation).
2. classify: zero-shot classification of MNIST test digits by Bayes' rule over the 10 digit prompts (uniform
   prior): the prompt with the lowest bound, each image's forward trajectories shared by all ten prompts; the
   trajectories' bounds averaged, and combined by importance weighting (ntm_core.trajectory.importance_weighted).
   Each trajectory draws its own x_{t_0}, so the weighted combination estimates the image's density smoothed by
   the start's noise, E_{x_{t_0} ~ q(· | x)} p(x_{t_0} | prompt), not p(x_{t_0} | prompt) at one x_{t_0}: still a
   score for Bayes' rule (the same trajectories under every prompt).
3. samples: images generated for each digit's prompt, read by a small CNN trained here on MNIST train (its own
   test accuracy is reported next to it).
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

from analysis.metrics import auroc
from ntm_core.report import environment, report
from ntm_core.data.idx import DIGITS, IdxDataset
from ntm_core.pipeline import load_pipeline
from ntm_core.trajectory import importance_weighted


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


@torch.no_grad()
def nll(pipe, x: torch.Tensor, prompts: list[str], steps: int, seed: int, batch: int = 250):
    """Per-image (bound bits/dim on x_{t_0}, trajectory bits/dim, 8-bit bound or None) with one forward trajectory
    each; '' = null prompt."""
    bound, traj, data = [], [], []
    for i in tqdm(range(0, len(x), batch), desc="nll", leave=False):
        text = pipe.text_encoder.encode(prompts[i : i + batch]) if pipe.text_dim else None
        r = pipe.ntm.nll(x[i : i + batch], text, steps, torch.Generator().manual_seed(seed + i))
        bound.append(r.bound_bits_per_dim)
        traj.append(r.bits_per_dim)
        if r.has_data_bound:
            data.append(r.data_bits_per_dim)
    return torch.cat(bound).numpy(), torch.cat(traj).numpy(), torch.cat(data).numpy() if data else None


def zero_shot_scores(pipe, x: torch.Tensor, steps: int, trajectories: int, seed: int, batch: int = 100) -> np.ndarray:
    """Bounds [N, 10, trajectories] under the ten digit prompts, each image's forward trajectories shared by the ten
    prompts; Bayes' rule (uniform prior) picks the prompt with the lowest mean (accuracy_by_trajectories)."""
    prompts = [f"a handwritten digit {DIGITS[d]}" for d in range(10)]
    g = torch.Generator().manual_seed(seed)
    return torch.cat([pipe.prompt_nll(x[i : i + batch], prompts, steps, trajectories, g)
                      for i in tqdm(range(0, len(x), batch), desc="zero-shot", leave=False)]).numpy()


def accuracy_by_trajectories(scores: np.ndarray, labels: np.ndarray, dims: int | None = None) -> dict[int, np.ndarray]:
    """Correct [N] per number of trajectories used (1, 2, 4, … up to all): how far the estimate has converged —
    a rise with more trajectories is noise in the bound, a plateau is the model. The trajectories' bounds are
    averaged, or with `dims` (D) combined by importance weighting (trajectory.importance_weighted)."""
    def estimate(s):
        return s.mean(-1) if dims is None else importance_weighted(torch.as_tensor(s), dims).numpy()

    t, out, n = scores.shape[-1], {}, 1
    while n < t:
        out[n] = estimate(scores[..., :n]).argmin(1) == labels
        n *= 2
    out[t] = estimate(scores).argmin(1) == labels
    return out


def _row(name: str, values: np.ndarray) -> dict:
    return {"measurement": name, "value": float(values.mean()),
            "std error": float(values.std() / math.sqrt(len(values)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="assets/ntm-mnist28")
    ap.add_argument("--data", default="../shared/data", help="folder with mnist/ and fashion-mnist/ IDX files")
    ap.add_argument("--n", type=int, default=2000, help="test images per dataset for the likelihoods")
    ap.add_argument("--samples-per-digit", type=int, default=50)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--temperature", type=float, default=1.0, help="the samples' noise scale (NTM temperature)")
    ap.add_argument("--candidates", type=int, default=1,
                    help="samples: per image, the most likely of this many trajectories (num_candidates)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--classify-n", type=int, default=1000, help="test images for zero-shot classification")
    ap.add_argument("--classify-trajectories", type=int, default=4)
    ap.add_argument("--parts", nargs="+", default=["likelihood", "classify", "samples"],
                    choices=["likelihood", "classify", "samples"])
    ap.add_argument("--out", default="results/mnist")
    a = ap.parse_args()

    parts = set(a.parts)
    pipe = load_pipeline(a.model)
    c, size, _ = pipe.sample_shape
    mnist = IdxDataset(os.path.join(a.data, "mnist"), "mnist", "test", image_size=size, channels=c)
    xm, ym = stack(mnist, a.n)
    rows = []
    timings = {}
    if "likelihood" in parts:
        fashion = IdxDataset(os.path.join(a.data, "fashion-mnist"), "fashion-mnist", "test", image_size=size,
                             channels=c)
        xf, _ = stack(fashion, a.n)
        labels = [mnist.caption(int(y)) for y in ym]
        t0 = time.perf_counter()
        b_cond, t_cond, d_cond = nll(pipe, xm, labels, a.steps, a.seed)
        b_unc, t_unc, d_unc = nll(pipe, xm, [""] * len(xm), a.steps, a.seed)
        b_fash, _, _ = nll(pipe, xf, [""] * len(xf), a.steps, a.seed)
        timings["nll_seconds"] = round(time.perf_counter() - t0, 1)
        shift = math.log2(127.5)  # [−1, 1] → [0, 255] scaling of the same continuous density
        for name, bound, traj, data in (("MNIST test, label prompt", b_cond, t_cond, d_cond),
                                        ("MNIST test, null prompt", b_unc, t_unc, d_unc)):
            if data is not None:
                rows.append(_row(f"8-bit bound on -log2 P(x) (dequantized), {name}", data))
            else:
                rows.append(_row(f"bound on -log2 p(x_t0), noised image, [-1,1] scaling, {name}", bound))
                rows.append(_row(f"same density in [0,255] pixel units (not an 8-bit bound), {name}", bound + shift))
            rows.append(_row(f"trajectory NLL bits/dim, {name}", traj))
        rows.append(_row("bound on -log2 p(x_t0), Fashion-MNIST test, null prompt", b_fash))
        rows.append({"measurement": "AUROC, MNIST test vs Fashion-MNIST test by the null-prompt bound",
                     "value": auroc(-b_unc, -b_fash), "std error": float("nan")})
    if "classify" in parts:
        xc, yc = stack(mnist, a.classify_n)
        t0 = time.perf_counter()
        scores = zero_shot_scores(pipe, xc, a.steps, a.classify_trajectories, a.seed)
        timings["classify_seconds"] = round(time.perf_counter() - t0, 1)
        for how, dims in (("mean bound", None), ("importance-weighted", xc[0].numel())):
            for t, correct in accuracy_by_trajectories(scores, yc.numpy(), dims).items():
                rows.append(_row(f"zero-shot accuracy, Bayes over 10 digit prompts, {how}, {t} trajectories, "
                                 f"{len(correct)} test images", correct.astype(float)))
    if "samples" in parts:
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
                           output_type="model", denoise=denoise, temperature=a.temperature,
                           num_candidates=a.candidates).images
                with torch.no_grad():
                    preds.append(clf(img[:, :1]).argmax(1))
            acc = torch.cat(preds).eq(torch.tensor(digits)).float()
            name = (f"sample accuracy, {a.steps} steps, guidance {a.guidance}, denoise={denoise}"
                    + (f", temperature {a.temperature}" if a.temperature != 1.0 else "")
                    + (f", most likely of {a.candidates}" if a.candidates > 1 else ""))
            rows.append(_row(name, acc.numpy()))
    df = pd.DataFrame(rows)
    report(df, "MNIST likelihood analysis", environment(model=a.model, n=a.n, steps=a.steps, seed=a.seed, **timings),
           a.out)


if __name__ == "__main__":
    main()

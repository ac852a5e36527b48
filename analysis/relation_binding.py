"""Why position prompts fail on the side (issue 11: the models draw "left of" on the right axis, on the right side
half the time): does the side reach the network, and does the network use it?

    python -m analysis.relation_binding --model assets/ntm-shapes32 --out docs/relation-binding

Which object a position caption puts on the low side (left / top) depends on the relation word *and* on the word
order ("a red circle left of a blue square" vs "… right of …", or the objects swapped), so it must be bound, not
read off a bag of words.

--parts text: what the predictor receives from MiniLM, the pooled vector (its adaLN conditioning) and the token
  states (its cross-attention context). A probe fitted on the training captions names, for the held-out captions
  (all wordings), the object on the low side, 1 of 18: linear on the pooled vector, and one cross-attention read
  (a learned query over the projected token states, as the predictor's layers read them).
--parts paths: which of the two paths the network draws from. The held-out prompts of every category (as
  analysis.score_model) are drawn with the text as trained, with the token states masked (the pooled vector alone),
  and with the pooled vector zeroed (the token states alone), and scored by the evaluator.
--parts likelihood: the NTM's own answer. Renders of held-out position specs are scored under their caption and
  under rewrites of it, each forward trajectory shared by all of them (`NTMPipeline.prompt_nll`): the fraction of
  images the caption explains better, and the mean margin in bits per image. A model that knows the side prefers
  the caption to its side-flipped and object-swapped rewrites, and not to the same layout reworded ("B right of A"
  for "A left of B", which holds in the image too).
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from analysis.benchmark import generate
from ntm_core.data.shapes_eval import score
from analysis.zero_shot_shapes import items
from ntm_core.conditioning import TextEmbedding
from ntm_core.data.shapes import COLORS, Spec, caption_variants, eval_prompts, split_specs
from ntm_core.pipeline import NTMPipeline, load_pipeline
from ntm_core.report import environment, report
from ntm_core.text import get_text_encoder, padded

OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
OTHER_AXIS = {"left of": "above", "right of": "below", "above": "left of", "below": "right of"}


def low_side(spec: Spec) -> tuple[str, str]:
    """The object a position spec places on the low side: left of a horizontal relation, top of a vertical one."""
    return spec.objects[0] if spec.relation in ("left of", "above") else spec.objects[1]


def rewrites(spec: Spec) -> dict[str, Spec]:
    """The caption's rewrites the likelihood part scores it against; only 'same layout reworded' is still true of
    an image of `spec`."""
    a, b = spec.objects
    other = next(c for c in COLORS if c not in (a[0], b[0]))
    return {"side flipped": Spec("position", (a, b), relation=OPPOSITE[spec.relation]),
            "objects swapped": Spec("position", (b, a), relation=spec.relation),
            "same layout reworded": Spec("position", (b, a), relation=OPPOSITE[spec.relation]),
            "other axis": Spec("position", (a, b), relation=OTHER_AXIS[spec.relation]),
            "first colour changed": Spec("position", ((other, a[1]), b), relation=spec.relation)}


# --- text: can the side be read from what the predictor receives? -------------------------------------------------

def _captions(split: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Every wording of every position spec of a split, with the object it puts on the low side."""
    caps, low = [], []
    for spec in split_specs(split, ["position"])["position"]:
        for c in sorted(set(caption_variants(spec))):
            caps.append(c)
            low.append(low_side(spec))
    return caps, low


class CrossAttentionProbe(nn.Module):
    """One cross-attention read of projected token states by a learned query, then a linear read-out."""

    def __init__(self, text_dim: int, classes: int, width: int = 64, heads: int = 4):
        super().__init__()
        self.proj = nn.Linear(text_dim, width)
        self.query = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.out = nn.Linear(width, classes)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.proj(tokens)
        read, _ = self.attn(self.query.expand(len(h), -1, -1), h, h, key_padding_mask=~mask)
        return self.out(read[:, 0])


def _fit_linear(x: torch.Tensor, y: torch.Tensor, classes: int) -> nn.Linear:
    """Multinomial logistic regression (L-BFGS, a little L2) on standardised features."""
    probe = nn.Linear(x.shape[1], classes)
    opt = torch.optim.LBFGS(probe.parameters(), max_iter=300)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(probe(x), y) + 1e-3 * probe.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return probe


def _fit_cross_attention(tokens: torch.Tensor, mask: torch.Tensor, y: torch.Tensor, classes: int, steps: int,
                         seed: int) -> CrossAttentionProbe:
    """AdamW on minibatches of 256 captions."""
    torch.manual_seed(seed)
    probe = CrossAttentionProbe(tokens.shape[-1], classes)
    opt = torch.optim.AdamW(probe.parameters(), 1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(0, len(y), (256,), generator=g)
        loss = F.cross_entropy(probe(tokens[i], mask[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return probe


def text_rows(steps: int = 600, seed: int = 0) -> list[dict]:
    encoder = get_text_encoder()
    (tr_caps, tr_low), (te_caps, te_low) = _captions("train"), _captions("test")
    objects = sorted(set(tr_low) | set(te_low))
    index = {o: i for i, o in enumerate(objects)}
    y = {"train": torch.tensor([index[o] for o in tr_low]), "held-out": torch.tensor([index[o] for o in te_low])}
    text = padded(encoder.embed(tr_caps + te_caps), encoder.dim)  # one padding for both splits
    text = {"train": text.rows(slice(0, len(tr_caps))), "held-out": text.rows(slice(len(tr_caps), None))}
    mean, std = text["train"].pooled.mean(0), text["train"].pooled.std(0) + 1e-6
    with torch.enable_grad():
        linear = _fit_linear((text["train"].pooled - mean) / std, y["train"], len(objects))
        cross = _fit_cross_attention(text["train"].tokens, text["train"].mask, y["train"], len(objects), steps, seed)
    reads = {"the pooled vector (adaLN path), linear probe": lambda t: linear((t.pooled - mean) / std),
             "the token states (cross-attention context), one cross-attention read probe":
                 lambda t: cross(t.tokens, t.mask)}
    out = []
    for features, read in reads.items():
        for split, t in text.items():
            with torch.no_grad():
                ok = (read(t).argmax(1) == y[split]).double().numpy()
            out.append({"part": "text", "measure": f"low-side object from {features}",
                        "captions": f"{split} ({len(ok)})", "value": ok.mean(),
                        "std error": ok.std() / math.sqrt(len(ok)), "chance": 1 / len(objects)})
    return out


# --- paths: which text path does the network draw from? -----------------------------------------------------------

def text_paths(text: TextEmbedding) -> dict[str, TextEmbedding]:
    """The text as trained, and with one of the predictor's two paths emptied (what the null prompt has there)."""
    return {"as trained": text,
            "pooled vector alone (token states masked)": TextEmbedding(text.tokens, torch.zeros_like(text.mask),
                                                                       text.pooled),
            "token states alone (pooled vector zeroed)": TextEmbedding(text.tokens, text.mask,
                                                                       torch.zeros_like(text.pooled))}


def path_rows(pipe, per_category: int = 32, steps: int = 4, guidance: float = 3.0, seed: int = 0) -> list[dict]:
    prompts = eval_prompts(per_category, seed, "test")
    specs = [p["spec"] for p in prompts]
    text = pipe.encode_prompt([p["caption"] for p in prompts])[0]
    out = []
    for name, embeds in text_paths(text).items():
        images, _ = generate(pipe, embeds, steps, {}, guidance, seed, batch=80)
        table = score(list(images.float().cpu()), specs)
        for category in ("overall", "position"):
            n = len(specs) if category == "overall" else sum(s["category"] == "position" for s in specs)
            p = float(table.loc[category, "score"])
            out.append({"part": "paths", "measure": f"evaluator score, {category}: text {name}",
                        "captions": f"held-out prompts ({n}), {steps} steps", "value": p,
                        "std error": math.sqrt(p * (1 - p) / n), "chance": float("nan")})
    return out


# --- likelihood: does the model's density prefer the caption to its rewrites? -------------------------------------

def likelihood_rows(pipe: NTMPipeline, n: int = 64, steps: int = 4, trajectories: int = 4, seed: int = 0,
                    split: str = "test") -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    margins: dict[str, list[float]] = {}
    start = time.perf_counter()
    for it in items(split, n, seed, "position"):
        spec = Spec.from_dict(it["spec"])
        alt = rewrites(spec)
        prompts = [caption_variants(s)[0] for s in (spec, *alt.values())]
        bits = pipe.prompt_nll(it["image"][None], prompts, steps, trajectories, g)[0].double().mean(-1)
        per_image = (bits - bits[0]) * it["image"].numel()  # −log₂ p under the rewrite minus under the caption
        for name, m in zip(alt, per_image[1:].tolist()):
            margins.setdefault(name, []).append(m)
    seconds = (time.perf_counter() - start) / n
    label = f"{'held-out' if split == 'test' else 'training'} position renders ({n})"
    out = []
    for name, m in margins.items():
        m = np.asarray(m)
        wins = (m > 0).astype(float)
        out.append({"part": "likelihood", "measure": f"caption more likely than '{name}'", "captions": label,
                    "value": wins.mean(), "std error": wins.std() / math.sqrt(len(wins)), "chance": 0.5,
                    "mean margin, bits/image": m.mean(), "margin std error": m.std() / math.sqrt(len(m)),
                    "seconds/image": seconds})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="assets/ntm-shapes32")
    ap.add_argument("--parts", nargs="+", default=["text", "paths", "likelihood"],
                    choices=["text", "paths", "likelihood"])
    ap.add_argument("--per-category", type=int, default=32, help="held-out prompts per category (paths part)")
    ap.add_argument("--guidance", type=float, default=3.0, help="paths part")
    ap.add_argument("--n", type=int, default=64, help="renders per split (likelihood part)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--trajectories", type=int, default=4)
    ap.add_argument("--probe-steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/relation-binding")
    a = ap.parse_args(argv)
    rows = text_rows(a.probe_steps, a.seed) if "text" in a.parts else []
    pipe = load_pipeline(a.model) if {"paths", "likelihood"} & set(a.parts) else None
    if "paths" in a.parts:
        rows += path_rows(pipe, a.per_category, a.steps, a.guidance, a.seed)
    if "likelihood" in a.parts:
        if not isinstance(pipe, NTMPipeline):
            ap.error("--model must be an NTM folder (the likelihood part needs its exact density)")
        for split in ("test", "train"):
            rows += likelihood_rows(pipe, a.n, a.steps, a.trajectories, a.seed, split)
    report(pd.DataFrame(rows), "Does the side of a position prompt reach the network, and does the network use it?",
           environment(model=a.model, steps=a.steps, trajectories=a.trajectories, probe_steps=a.probe_steps,
                       per_category=a.per_category, guidance=a.guidance, seed=a.seed, parts=a.parts), a.out, digits=3)


if __name__ == "__main__":
    main()

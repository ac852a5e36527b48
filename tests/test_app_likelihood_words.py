"""The Likelihood tab in plain words: a ranking calls ties within noise, an upload gets a verdict against the
model's in-distribution histogram."""
import numpy as np
import torch

from app.likelihood import rank_candidates, verdict


def test_verdict_against_the_reference():
    ref = np.random.default_rng(0).normal(0.6, 0.05, 2000).tolist()
    pct, words = verdict(0.6, ref)
    assert 40 < pct < 60 and "typical" in words
    pct, words = verdict(6.69, ref)
    assert pct == 100 and "unusual for this model" in words
    pct, words = verdict(0.2, ref)
    assert pct == 0 and "unusually likely" in words


def test_ranking_calls_ties_and_wins():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(16, generator=g) * 0.013  # trajectory noise, shared by every prompt
    scores = torch.stack([
        0.600 + base + 0.002 * torch.randn(16, generator=g),  # a red circle
        0.602 + base + 0.002 * torch.randn(16, generator=g),  # a red square: 0.002 apart, inside the noise
        0.700 + base + 0.002 * torch.randn(16, generator=g),  # two green triangles: far behind
    ])
    rank = rank_candidates(scores, ["a red circle", "a red square", "two green triangles"])
    assert rank["prompt"].tolist()[-1] == "two green triangles"
    # every bits/dim column names its density (here the bound on the noised image x_t0)
    assert all("x_t0" in c for c in rank.columns if "bits/dim" in c) and "bound bits/dim on x_t0" in rank
    verdicts = dict(zip(rank["prompt"], rank["verdict"]))
    assert verdicts["two green triangles"] == "less likely"
    second = rank.iloc[1]
    assert second["verdict"].startswith("tie") or second["Δ vs best"] > 2 * second["Δ std error"]
    # a 0.002 bits/dim gap measured with 2 noisy trajectories, no pairing benefit: a tie
    noisy = torch.tensor([[0.600, 0.630], [0.612, 0.622]])
    assert rank_candidates(noisy, ["a", "b"]).iloc[1]["verdict"].startswith("tie")
    one = rank_candidates(scores[:, :1], ["a", "b", "c"])
    assert one.iloc[1]["verdict"].startswith("can't tell")

"""Sample-quality metrics that need no pretrained network."""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import mannwhitneyu


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance 2E‖X−Y‖ − E‖X−X'‖ − E‖Y−Y'‖ between two samples [n, d], [m, d] (V-statistic).

    Zero iff the distributions are equal (in the limit); the estimate itself is ≥ 0."""
    x, y = x.flatten(1).double(), y.flatten(1).double()
    return (2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()).item()


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score(pos) > score(neg)) + ½ P(tie): the Mann–Whitney U statistic of pos over n_pos·n_neg."""
    u = mannwhitneyu(np.asarray(pos), np.asarray(neg), alternative="two-sided").statistic
    return float(u / (len(pos) * len(neg)))

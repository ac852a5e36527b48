"""analysis.likelihood_vs_ode's NTM rows: from one x_{t_0}, the bound of M forward trajectories averaged and
importance-weighted. On a 1-D toy (D = 1, K = 1) the true −log p(x_{t_0}) = −log ∫ p(x_{t_0}, x_1) dx_1 is a
quadrature; the weighted bound must read lower as M grows, stay above it, and close most of one trajectory's gap."""
import math
from types import SimpleNamespace

import torch

from analysis.likelihood_vs_ode import IMPORTANCE_WEIGHTED, ntm_rows

from .conftest import small_ntm


def test_importance_weighted_rows_tighten_toward_the_true_density():
    model = small_ntm(sample_size=1, in_channels=1, patch_size=1, num_blocks=2, text=False, t_min=0.3, std=0.05,
                      seed=2)
    grid = model.schedule.grid(1, dtype=torch.float64)
    n = 2000  # independent estimates of the same x_{t_0}
    for y in (-0.8, 0.1, 0.9):
        x1 = torch.linspace(-7, 7, 4001, dtype=torch.float64)
        with torch.no_grad():
            total = model.trajectory_nll(torch.stack([torch.full_like(x1, y), x1], 1).reshape(-1, 2, 1, 1, 1),
                                         grid).total
        true = -(torch.logsumexp(-total, 0) + math.log(x1[1] - x1[0])).item() / math.log(2)  # bits, D = 1
        states = torch.full((n, 2, 1, 1, 1), y, dtype=torch.float64)  # only state 0 (x_{t_0}) is read
        rows = ntm_rows(SimpleNamespace(ntm=model), states, grid, None, 16, seed=3)
        weighted = {r["NFE"]: r for r in rows if r["method"].startswith(IMPORTANCE_WEIGHTED)}
        mean = next(r for r in rows if r["method"].startswith("bound, mean of 16"))
        assert list(weighted) == [2, 4, 8, 16]
        bits = [weighted[m]["bits/dim"] for m in (2, 4, 8, 16)]
        assert bits == sorted(bits, reverse=True) and bits[0] < mean["bits/dim"], (y, bits, mean)
        assert bits[-1] > true - 4 * weighted[16]["std error"], (y, bits, true)
        assert bits[-1] - true < 0.5 * (mean["bits/dim"] - true), (y, bits, mean["bits/dim"], true)
        assert [weighted[m]["seconds/image"] for m in (2, 4, 8, 16)] == sorted(weighted[m]["seconds/image"]
                                                                              for m in (2, 4, 8, 16))
        print(f"x_t0 = {y:+.1f}: −log2 p {true:.4f}, mean bound {mean['bits/dim']:.4f}, importance-weighted 2/4/8/16 "
              + " / ".join(f"{b:.4f}" for b in bits))

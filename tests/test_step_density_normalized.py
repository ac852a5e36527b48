"""One reverse step's density p(x_s | x_t, history) integrates to 1 over x_s (2-D state, quadrature)."""
import pytest
import torch

from ntm_core.trajectory import time_grid

from .conftest import small_ntm, zero_log_sigma_head


@pytest.mark.parametrize("markov", [False, True])
def test_reverse_step_density_integrates_to_one(markov):
    # a 1×1×2 state: patch 1 → two 1-d tokens, so the transporter is a genuine autoregressive flow over 2 dims
    model = small_ntm(sample_size=[1, 2], in_channels=1, patch_size=1, num_blocks=3, markov=markov, text=False,
                      std=0.15, seed=3)
    zero_log_sigma_head(model)  # keeps σ moderate so a fixed window holds the mass; f_T stays random
    grid = time_grid(2, t_min=0.3, dtype=torch.float64)  # steps t=1 → 0.65 → 0.3
    x_t2, x_t1 = torch.tensor([0.4, -1.1], dtype=torch.float64), torch.tensor([0.9, 0.2], dtype=torch.float64)
    n, lim = 241, 12.0
    axis = torch.linspace(-lim, lim, n, dtype=torch.float64)
    xs = torch.cartesian_prod(axis, axis)  # [n², 2] candidate x_{t_0}
    states = torch.stack([xs, x_t1.expand_as(xs), x_t2.expand_as(xs)], dim=1).reshape(-1, 3, 1, 1, 2)
    with torch.no_grad():
        nll = model.trajectory_nll(states, grid)
    logdet = nll.logdet[:, -1]
    assert logdet.max() - logdet.min() > 0.5, "the transporter must bend space for the test to mean anything"
    density = torch.exp(-nll.step[:, -1]).reshape(n, n)  # last step t_1 → t_0, given (x_{t_1}, x_{t_2})
    edge = torch.cat([density[0], density[-1], density[:, 0], density[:, -1]])
    assert edge.max() < 1e-8, "the window must hold the mass"
    mass = density.sum() * (axis[1] - axis[0]) ** 2
    assert mass.item() == pytest.approx(1.0, abs=2e-3)
    # the same check fails for an unnormalised variant (drop the log-det): the test can fail
    wrong = torch.exp(-(nll.step[:, -1] + logdet)).sum() * (axis[1] - axis[0]) ** 2
    assert abs(wrong.item() - 1.0) > 0.05

"""f_T = identity reduces NTM to a K-step Gaussian diffusion model: its NLL is the closed-form Gaussian posterior NLL."""
import torch
from scipy.stats import norm

from ntm_core.trajectory import sample_trajectory, time_grid

from .conftest import random_text, small_ntm, zero_log_sigma_head


def test_identity_transporter_gives_gaussian_posterior_nll():
    model = small_ntm(num_blocks=0, std=0.05, seed=1)
    zero_log_sigma_head(model)
    text = random_text(2)
    grid = time_grid(4, 0.05, dtype=torch.float64)
    states = sample_trajectory(torch.randn(2, 3, 8, 8, dtype=torch.float64), grid, torch.Generator().manual_seed(0))
    nll = model.trajectory_nll(states, grid, text)
    assert torch.equal(nll.logdet, torch.zeros_like(nll.logdet))

    # independent reference: the predictor's x̂_0, then the posterior by Gaussian conditioning, scored with scipy
    src = states[:, 1:].flip(1)
    t, s = grid[1:].flip(0), grid[:-1].flip(0)
    _, _, v = model.predictor(src, t, s, text)
    for i in range(4):
        ti, si = t[i].item(), s[i].item()
        x_t, x_s = src[:, i].detach().numpy(), states[:, 3 - i].detach().numpy()
        x0_hat = x_t - ti * v[:, i].detach().numpy()
        a_ts = (1 - ti) / (1 - si)
        cov_st, var_s, var_t = a_ts * si**2, si**2, ti**2
        mean = (1 - si) * x0_hat + cov_st / var_t * (x_t - (1 - ti) * x0_hat)
        std = (var_s - cov_st**2 / var_t) ** 0.5
        ref = -norm.logpdf(x_s, mean, std).reshape(2, -1).sum(1)
        assert torch.allclose(nll.step[:, i], torch.from_numpy(ref), atol=1e-8, rtol=1e-10)
    prior = -norm.logpdf(states[:, -1].numpy()).reshape(2, -1).sum(1)
    assert torch.allclose(nll.prior, torch.from_numpy(prior), atol=1e-8)
    assert torch.allclose(nll.total, nll.prior + nll.step.sum(1))


def test_transporter_changes_the_density():
    """The same predictor with a non-identity transporter gives a different NLL (the reduction is not vacuous)."""
    a, b = small_ntm(num_blocks=0, seed=1), small_ntm(num_blocks=2, seed=1)
    b.predictor.load_state_dict(a.predictor.state_dict())
    grid = time_grid(4, 0.05, dtype=torch.float64)
    states = sample_trajectory(torch.randn(2, 3, 8, 8, dtype=torch.float64), grid, torch.Generator().manual_seed(0))
    assert not torch.allclose(a.trajectory_nll(states, grid).total, b.trajectory_nll(states, grid).total)

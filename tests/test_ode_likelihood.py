"""The flow-matching baseline's ODE likelihood (via the `flow_matching` package) on Gaussian data, where the exact
velocity and the exact density of every x_t are known in closed form. Data x_0 ~ N(0, Q diag(s²) Qᵀ) give
x_t ~ N(0, Q diag(α_t² s² + t²) Qᵀ) and v(x, t) = E[ε − x_0 | x_t] = Q diag((t − α_t s²)/(α_t² s² + t²)) Qᵀ x."""
import math

import pytest
import torch


from ntm_core.flow_matching import ode_log_likelihood


class GaussianData:
    def __init__(self, dim: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.s2 = torch.linspace(0.05, 0.6, dim, dtype=torch.float64) ** 2
        self.q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))

    def var(self, t):
        return (1 - t) ** 2 * self.s2 + t**2

    def velocity(self, x, t, text=None):
        t = torch.as_tensor(t, dtype=x.dtype)
        c = (t - (1 - t) * self.s2) / self.var(t)
        return ((x @ self.q) * c) @ self.q.T

    def log_p(self, x, t):
        var = self.var(t)
        y = x @ self.q
        return -0.5 * (y.pow(2) / var).sum(1) - 0.5 * torch.log(2 * math.pi * var).sum()

    def sample(self, n, t, seed=1):
        g = torch.Generator().manual_seed(seed)
        return (torch.randn(n, len(self.s2), generator=g, dtype=torch.float64) * self.var(t).sqrt()) @ self.q.T


@pytest.mark.parametrize("t_start", [0.0, 0.05])
def test_ode_likelihood_converges_to_the_exact_density(t_start):
    data = GaussianData(3)
    x = data.sample(64, t_start)
    truth = data.log_p(x, t_start)
    fine = ode_log_likelihood(data.velocity, x, t_start, nfe=400, method="midpoint", exact_divergence=True)
    assert (fine - truth).abs().max() < 2e-3
    coarse = ode_log_likelihood(data.velocity, x, t_start, nfe=4, method="euler", exact_divergence=True)
    assert (coarse - truth).abs().mean() > 10 * (fine - truth).abs().mean()  # few steps are visibly off


def test_hutchinson_is_unbiased_and_seeded():
    data = GaussianData(16)
    x = data.sample(400, 0.05)
    exact = ode_log_likelihood(data.velocity, x, 0.05, nfe=64, method="midpoint", exact_divergence=True)
    est = ode_log_likelihood(data.velocity, x, 0.05, nfe=64, method="midpoint", seed=3)
    again = ode_log_likelihood(data.velocity, x, 0.05, nfe=64, method="midpoint", seed=3)
    assert torch.equal(est, again)
    diff = est - exact
    assert diff.abs().max() > 1e-2  # a one-probe estimate, not the exact divergence
    assert diff.mean().abs() < 4 * diff.std() / math.sqrt(len(diff))


def test_bad_arguments():
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="multiple of 2"):
        ode_log_likelihood(GaussianData(2).velocity, x, nfe=5, method="midpoint")
    with pytest.raises(ValueError, match="method"):
        ode_log_likelihood(GaussianData(2).velocity, x, nfe=4, method="rk4")

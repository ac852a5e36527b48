"""The forward trajectory of NTM_METHOD §2: marginals, posterior, joint covariance S, forward density."""
import math

import pytest
import torch

from ntm_core.trajectory import (TrajectorySchedule, alpha, forward_log_prob, kernel, posterior_coefficients,
                                 sample_trajectory, sigma, time_grid, trajectory_covariance)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_time_grid_endpoints_and_order(shift):
    g = time_grid(4, t_min=0.05, shift=shift)
    assert g.shape == (5,) and g[0].item() == pytest.approx(0.05) and g[-1].item() == 1.0
    assert torch.all(g[1:] > g[:-1])


def test_shift_spends_steps_at_high_noise():
    assert torch.all(time_grid(4, 0.05, 3.0)[1:-1] > time_grid(4, 0.05, 1.0)[1:-1])


def test_bad_grid_arguments_raise():
    for kwargs in ({"num_steps": 0}, {"num_steps": 4, "t_min": -0.1}, {"num_steps": 4, "t_min": 1.0},
                   {"num_steps": 4, "shift": -1.0}):
        with pytest.raises(ValueError):
            time_grid(**kwargs)
    assert time_grid(4, t_min=0.0)[0] == 0.0  # the 8-bit configuration starts the trajectory at the data


def test_posterior_equals_gaussian_conditioning():
    """q(x_s | x_t, x_0) from the formula vs. conditioning the joint N((α_s x0, α_t x0), [[σ_s², c], [c, σ_t²]])."""
    for t, s in [(1.0, 0.6), (0.7, 0.3), (0.3, 0.05)]:
        t, s = torch.tensor(t, dtype=torch.float64), torch.tensor(s, dtype=torch.float64)
        x0, xt = torch.tensor(0.8, dtype=torch.float64), torch.tensor(-0.4, dtype=torch.float64)
        a_ts, _ = kernel(t, s)
        cov_st = a_ts * sigma(s) ** 2  # Cov(x_s, x_t | x0)
        mean = alpha(s) * x0 + cov_st / sigma(t) ** 2 * (xt - alpha(t) * x0)
        var = sigma(s) ** 2 - cov_st**2 / sigma(t) ** 2
        c_t, c_0, v = posterior_coefficients(t, s)
        assert (c_t * xt + c_0 * x0).item() == pytest.approx(mean.item(), abs=1e-12)
        assert v.item() == pytest.approx(var.item(), abs=1e-12)


def test_chain_keeps_marginals_and_covariance_S():
    g = torch.Generator().manual_seed(0)
    grid = time_grid(4, 0.05)
    x0 = torch.full((200_000, 1), 0.7, dtype=torch.float64)
    states = sample_trajectory(x0, grid, g)[..., 0]  # [n, K+1]
    assert torch.allclose(states.mean(0), alpha(grid) * 0.7, atol=5e-3)
    emp = torch.cov(states.T)
    assert torch.allclose(emp, trajectory_covariance(grid), atol=6e-3)
    assert torch.allclose(emp.diagonal(), sigma(grid) ** 2, atol=6e-3)


def test_forward_density_matches_joint_gaussian_with_S():
    """log q(x_{t_0} | x_0) + log q(x_{t_1..t_K} | x_{t_0}) == log N(τ; a x_0, S) for a 1-D state."""
    g = torch.Generator().manual_seed(1)
    grid = time_grid(3, 0.1)
    x0 = torch.tensor([[0.3]], dtype=torch.float64)
    states = sample_trajectory(x0, grid, g)
    first = torch.distributions.Normal(alpha(grid[0]) * 0.3, sigma(grid[0])).log_prob(states[0, 0, 0])
    joint = torch.distributions.MultivariateNormal(alpha(grid) * 0.3, trajectory_covariance(grid))
    assert (first + forward_log_prob(states, grid)[0]).item() == pytest.approx(joint.log_prob(states[0, :, 0]).item(),
                                                                               abs=1e-10)


def test_covariance_at_t1_is_explicit():
    S = trajectory_covariance(time_grid(2, 0.2))
    assert S[-1, -1].item() == 1.0 and S[0, -1].item() == 0.0 and not torch.isnan(S).any()
    assert trajectory_covariance(time_grid(4, 0.05).to("meta")).shape == (5, 5)  # never reads the grid on the host
    assert torch.equal(S, S.T)  # symmetric: the same entry whichever of the two times comes first
    assert math.isclose(S[0, 1].item(), (alpha(torch.tensor(0.6)) / alpha(torch.tensor(0.2)) * 0.2**2).item(),
                        rel_tol=1e-6)


def test_the_sampler_grid_follows_sample_shift_and_the_trajectory_grid_does_not():
    s = TrajectorySchedule(t_min=0.05, shift=1.0, sample_shift=3.0)
    assert torch.allclose(s.grid(4, torch.float64), time_grid(4, 0.05, 1.0))
    assert torch.allclose(s.sampling_grid(4, torch.float64), time_grid(4, 0.05, 3.0))
    assert float(s.sampling_grid(4)[1]) > float(s.grid(4)[1]) + 0.2  # shift 3: more steps at high noise
    plain = TrajectorySchedule(t_min=0.05, shift=2.0)
    assert torch.equal(plain.sampling_grid(4), plain.grid(4))
    assert s.sampling_shift == 3.0 and plain.sampling_shift == 2.0
    with pytest.raises(ValueError, match="shift"):
        TrajectorySchedule(sample_shift=0.0)


def test_train_shifts_are_drawn_per_batch_independently_of_k():
    s = TrajectorySchedule(t_min=0.05, shift=1.0, train_num_steps=[1, 2, 4], train_shifts=[1.0, 3.0])
    picks = [(s.train_num_steps_for(key), s.train_shift_for(key)) for key in range(600)]
    assert {p: picks.count(p) for p in set(picks)} == {(k, v): 100 for k in (1, 2, 4) for v in (1.0, 3.0)}
    assert torch.allclose(s.grid(4, torch.float64, shift=3.0), time_grid(4, 0.05, 3.0))
    assert torch.allclose(s.grid(4, torch.float64), time_grid(4, 0.05, 1.0))  # likelihoods keep the trajectory's
    assert TrajectorySchedule(shift=2.0).train_shift_for(5) is None  # no train_shifts: the trajectory's own grid
    with pytest.raises(ValueError, match="shift"):
        TrajectorySchedule(train_shifts=[1.0, -1.0])
    with pytest.raises(ValueError, match="train_shifts"):
        TrajectorySchedule(train_shifts=[])

"""The 8-bit likelihood configuration: a trajectory that starts at uniformly dequantized data (t_0 = 0).

On a 1-D discrete toy (D = 1, 16 pixel values, K = 1) the true −log P(x) = −log ∫_bin p(y) dy of the model is
computed by quadrature over (y, x_1). Two inequalities, each of which a wrong constant or a wrong density breaks:
    −log P(x) ≤ J = E_v[−log p(x + v)] + log(1/width)        (dequantization, Jensen; tight for narrow bins)
    J ≤ E_v E_q[−log p(τ) + log q(x_1 | y)] + log(1/width)   (what the model reports: `data_bits_per_dim`)."""
import math

import pytest
import torch

from ntm_core.model import NTM
from ntm_core.predictor import Predictor
from ntm_core.trajectory import TrajectorySchedule, dequantize, time_grid
from ntm_core.transporter import Transporter

from .conftest import random_text, small_ntm

LEVELS = 16  # pixel values −1 + 2k/15 in model scaling; bins of width 2/16


def _toy() -> NTM:
    return small_ntm(sample_size=1, in_channels=1, patch_size=1, num_blocks=2, text=False, t_min=0.0,
                     min_sigma=0.3, dequantize_levels=LEVELS, std=0.15, seed=2)


@torch.no_grad()
def _true_nll_and_jensen_nats(model: NTM, value: float) -> tuple[float, float]:
    """(−log P(x), J) for x = value: p(y) = ∫ p(y, x_1) dx_1 by the midpoint rule, then over the bin."""
    grid = model.schedule.grid(1, dtype=torch.float64)
    width = 2.0 / LEVELS
    ny, nx, lo, hi = 24, 1201, -8.0, 8.0
    y = value + (torch.arange(ny, dtype=torch.float64) + 0.5) * width / ny
    x1 = lo + (torch.arange(nx, dtype=torch.float64) + 0.5) * (hi - lo) / nx
    yy, xx = torch.meshgrid(y, x1, indexing="ij")
    states = torch.stack([yy.flatten(), xx.flatten()], 1).reshape(-1, 2, 1, 1, 1)
    total = model.trajectory_nll(states, grid).total.reshape(ny, nx)
    p_y = torch.exp(-total).sum(1) * ((hi - lo) / nx)
    true = -math.log((p_y.mean() * width).item())
    jensen = (-p_y.log()).mean().item() - math.log(width)
    return true, jensen


@torch.no_grad()
def test_dequantized_bound_is_above_the_true_discrete_nll():
    model = _toy()
    values = [-1.0 + 2.0 * k / (LEVELS - 1) for k in (0, 5, 9, 15)]
    n = 10000
    for v in values:
        true, jensen = _true_nll_and_jensen_nats(model, v)
        assert true <= jensen < true + 0.02, (v, true, jensen)  # narrow bins: Jensen's gap is small
        x = torch.full((n, 1, 1, 1), v, dtype=torch.float64)
        nll = model.nll(x, num_steps=1, generator=torch.Generator().manual_seed(0))
        assert nll.has_data_bound and float(nll.grid[0]) == 0.0
        bound_nats = nll.data_bits_per_dim * math.log(2)
        mean, err = bound_nats.mean().item(), bound_nats.std().item() / math.sqrt(n)
        assert mean > jensen - 4 * err, (v, mean, jensen, true)
        print(f"x={v:+.3f}: −log P {true:.4f}, J {jensen:.4f}, reported bound {mean:.4f} ± {err:.4f} nats")


def test_dequantization_stays_in_the_bin_and_follows_the_generator():
    model = _toy()
    x = torch.full((1000, 1, 1, 1), 1.0 / 3.0, dtype=torch.float64)
    a = model.nll(x, num_steps=2, generator=torch.Generator().manual_seed(5))
    b = model.nll(x, num_steps=2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.total, b.total)
    y = dequantize(x, LEVELS, torch.Generator().manual_seed(5))  # uniform over the pixel's bin [x, x + 2/L)
    width = 2.0 / LEVELS
    assert (y >= x).all() and (y < x + width).all() and abs(y.std().item() - width / math.sqrt(12)) < 0.1 * width


def test_configuration_errors():
    with pytest.raises(ValueError, match="t_min = 0"):
        TrajectorySchedule(t_min=0.05, dequantize_levels=256)
    t = Transporter(sample_size=2, in_channels=1, patch_size=1, num_blocks=1, width=16, heads=2)
    p = Predictor(sample_size=2, in_channels=1, patch_size=1, width=16, depth=1, heads=2)
    with pytest.raises(ValueError, match="min_sigma"):
        NTM(t, p, TrajectorySchedule(t_min=0.0, dequantize_levels=256))
    nll = small_ntm().nll(torch.zeros(2, 3, 8, 8, dtype=torch.float64), random_text(2), 2)
    assert not nll.has_data_bound
    with pytest.raises(ValueError, match="8-bit"):
        nll.data_bits_per_dim


def test_models_without_dequantization_score_the_data_as_given():
    """t_min > 0 models are untouched by the 8-bit configuration: no dequantization noise enters the trajectory."""
    from ntm_core.trajectory import sample_trajectory

    model = small_ntm()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2 - 1
    a = model.nll(x, random_text(2), 3, torch.Generator().manual_seed(0))
    grid = model.schedule.grid(3, dtype=torch.float64)
    b = model.trajectory_nll(sample_trajectory(x, grid, torch.Generator().manual_seed(0)), grid, random_text(2))
    assert torch.equal(a.total, b.total) and a.dequantization_width == 0.0


def test_a_dequantized_trajectory_on_a_grid_from_noised_images_is_refused():
    model = _toy()
    x = torch.full((4, 1, 1, 1), 1.0 / 3.0, dtype=torch.float64)
    states, grid = model.forward_trajectory(x, 2, torch.Generator().manual_seed(0))
    width = model.schedule.dequantization_width
    assert model.trajectory_nll(states, grid, dequantization_width=width).has_data_bound
    noised = time_grid(2, 0.05, dtype=torch.float64)
    with pytest.raises(ValueError, match="starts at t = 0"):
        model.trajectory_nll(states, noised, dequantization_width=width)

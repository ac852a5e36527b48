"""Trajectory-score denoising (NTM_METHOD §6).

The sampled x_{t_0} still carries noise of level t_0. A trajectory τ = (x_{t_0}, …, x_{t_K}) given x_0 is
y = a·x_0 + n with a_k = α_{t_k} and n ~ N(0, S ⊗ I); the generalised Tweedie formula
E[a x_0 | y] = y + S ∇_y log p(y) applied to row 0 gives
    x̂_den = (x_{t_0} − (S ∇_τ L(τ))_0) / α_{t_0},   L = −log p(τ).
With the exact score of the true trajectory density this is exactly E[x_0 | τ].
"""
from __future__ import annotations

from typing import Callable

import torch

from .trajectory import alpha, trajectory_covariance


def tweedie_denoise(states: torch.Tensor, nll_grad: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """states, nll_grad: [B, K+1, ...] in grid order (∇ of −log p(τ) w.r.t. each state). Returns [B, ...]."""
    S0 = trajectory_covariance(grid.to(torch.float64))[0].to(states)  # row 0 of S: [K+1]
    correction = torch.einsum("k,bk...->b...", S0, nll_grad)
    return (states[:, 0] - correction) / alpha(grid[0]).to(states)


def score_denoise(nll_fn: Callable[[torch.Tensor], torch.Tensor], states: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Denoise with the score of a differentiable trajectory NLL: nll_fn(states) → [B] (−log p(τ) per sample)."""
    with torch.enable_grad():
        states = states.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(nll_fn(states).sum(), states)
    return tweedie_denoise(states.detach(), grad, grid)

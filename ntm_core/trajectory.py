"""The forward trajectory (NTM_METHOD §2): fixed, parameter-free.

Interpolant x_t = α_t x_0 + σ_t ε with α_t = 1 − t, σ_t = t. A trajectory lives on a time grid
t_0 = t_min < t_1 < … < t_K = 1; index k of every tensor below is the grid index (k = K is pure noise).

Small pure functions over a grid (k-diffusion style), plus `TrajectorySchedule`, the diffusers-style
config object that owns t_min / shift / the training step counts and is saved with a model.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from diffusers import ConfigMixin, SchedulerMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils.torch_utils import randn_tensor

LOG_2PI = math.log(2 * math.pi)
LN2 = math.log(2.0)  # nats → bits


def rand_tensor(shape, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    """U[0, 1) noise by `randn_tensor`'s rule: drawn where the generator lives (a CPU generator gives the same
    numbers on every machine; a CUDA generator keeps the draw on the GPU), then moved to `device`."""
    where = generator.device if generator is not None else "cpu"
    return torch.rand(shape, generator=generator, device=where, dtype=dtype).to(device)


def alpha(t: torch.Tensor) -> torch.Tensor:
    return 1.0 - t


def sigma(t: torch.Tensor) -> torch.Tensor:
    return t


def time_grid(num_steps: int, t_min: float = 0.05, shift: float = 1.0, dtype=torch.float64) -> torch.Tensor:
    """K+1 increasing times, t_0 = t_min, t_K = 1. t_min = 0 starts the trajectory at the data itself (the
    8-bit likelihood configuration, where the data are dequantized first).

    `shift` > 1 spends more steps at high noise (the SD3 / FLUX time shift s·u / (1 + (s − 1)·u)),
    applied to the uniform grid on [0, 1] before it is mapped onto [t_min, 1], so both ends stay fixed.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0.0 <= t_min < 1.0:
        raise ValueError(f"t_min must lie in [0, 1), got {t_min}")
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    u = torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64)
    u = shift * u / (1.0 + (shift - 1.0) * u)
    t = t_min + (1.0 - t_min) * u
    t[-1] = 1.0  # exact, whatever rounding did
    return t.to(dtype)


def kernel(t: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Markov forward kernel q(x_t | x_s) = N(α_{t|s} x_s, σ²_{t|s} I) for s < t: (α_{t|s}, σ²_{t|s})."""
    a_ts = alpha(t) / alpha(s)
    var_ts = sigma(t) ** 2 - a_ts**2 * sigma(s) ** 2
    return a_ts, var_ts.clamp_min(0.0)


def posterior_coefficients(t: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q(x_s | x_t, x_0) = N(c_t x_t + c_0 x_0, var): returns (c_t, c_0, var). Finite at t = 1 (α_t = 0)."""
    a_ts, var_ts = kernel(t, s)
    var_t = sigma(t) ** 2
    c_t = a_ts * sigma(s) ** 2 / var_t
    c_0 = alpha(s) * var_ts / var_t
    var = var_ts * sigma(s) ** 2 / var_t
    return c_t, c_0, var


def sample_trajectory(x0: torch.Tensor, grid: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Run the Markov forward chain from data: returns states [B, K+1, *x0.shape[1:]], state k at time grid[k].

    x_{t_0} = α_{t_0} x_0 + σ_{t_0} ε_0, then x_{t_k} = α_{t_k|t_{k−1}} x_{t_{k−1}} + σ_{t_k|t_{k−1}} ε_k,
    which keeps every marginal equal to the interpolant's.
    """
    grid = grid.to(x0)
    noise = randn_tensor((x0.shape[0], grid.numel()) + x0.shape[1:], generator=generator, device=x0.device,
                         dtype=x0.dtype)
    states = [alpha(grid[0]) * x0 + sigma(grid[0]) * noise[:, 0]]
    for k in range(1, grid.numel()):
        a_ts, var_ts = kernel(grid[k], grid[k - 1])
        states.append(a_ts * states[-1] + var_ts.sqrt() * noise[:, k])
    return torch.stack(states, dim=1)


def continue_trajectory(x_start: torch.Tensor, grid: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A forward trajectory from a given state x_{t_0} = x_start (not from x_0): states [B, K+1, ...], state 0 is
    x_start and state k follows the Markov kernel from state k − 1. Fresh x_{t_1..t_K} for the same x_{t_0}."""
    grid = grid.to(x_start)
    states = [x_start]
    for k in range(1, grid.numel()):
        a_ts, var_ts = kernel(grid[k], grid[k - 1])
        noise = randn_tensor(x_start.shape, generator=generator, device=x_start.device, dtype=x_start.dtype)
        states.append(a_ts * states[-1] + var_ts.sqrt() * noise)
    return torch.stack(states, dim=1)


def forward_log_prob(states: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """log q(x_{t_1..t_K} | x_{t_0}) of given states [B, K+1, ...], summed over dims: [B]."""
    grid = grid.to(states)
    logp = torch.zeros(states.shape[0], dtype=states.dtype, device=states.device)
    dim = states[0, 0].numel()
    for k in range(1, grid.numel()):
        a_ts, var_ts = kernel(grid[k], grid[k - 1])
        resid = (states[:, k] - a_ts * states[:, k - 1]).flatten(1)
        logp = logp - 0.5 * (resid**2).sum(1) / var_ts - 0.5 * dim * (torch.log(var_ts) + LOG_2PI)
    return logp


def importance_weighted(bits: torch.Tensor, dims: int, dim: int = -1) -> torch.Tensor:
    """Bounds of one image from M independent forward trajectories along `dim`, each −log₂ w_i / D with w_i an
    unbiased estimate of the density (w = p(x, τ)/q(τ | x)) → −log₂((1/M)·Σ_i w_i) / D, the importance-weighted
    bound (Burda et al. 2016): averaging the estimates, not their logs. By Jensen it is never above the mean of
    the bounds, in expectation it is still an upper bound on −log₂ p(x), and it tightens toward it as M grows
    (with many dimensions it is the best trajectory's bound + log₂(M) / D). The weights must be the whole
    trajectory's: a term the bounds share only in expectation (log q(x_{t_0} | x) of a noised start) must enter
    at its drawn value (EightBitBound.sample_bits_per_dim)."""
    nats = -bits.double() * (dims * LN2)
    return -(torch.logsumexp(nats, dim) - math.log(bits.shape[dim])) / (dims * LN2)


def trajectory_covariance(grid: torch.Tensor) -> torch.Tensor:
    """S with Cov(x_{t_i}, x_{t_j} | x_0) = S_ij · I: for t_i ≤ t_j, S_ij = (α_{t_j}/α_{t_i}) σ²_{t_i}.

    The diagonal is written as σ²_t directly, since at t = 1 the ratio would be 0/0. Whole-tensor ops only: the
    denoiser's training step builds S every step, and reading grid values on the host would wait for the GPU.
    """
    grid = grid.to(torch.float64) if not grid.is_floating_point() else grid
    lo, hi = torch.minimum(grid[:, None], grid[None, :]), torch.maximum(grid[:, None], grid[None, :])
    S = alpha(hi) / alpha(lo) * sigma(lo) ** 2
    S.diagonal().copy_(sigma(grid) ** 2)
    return S


def dequantize(x: torch.Tensor, levels: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantization of images in [−1, 1] scaling whose pixels take `levels` values (k/(levels−1) in
    [0, 1]): x + v, v ~ U[0, 2/levels) per dimension — U[0, 1/levels) in [0, 1] scaling. The bins
    [x, x + 2/levels) of distinct pixel values are disjoint, so for any density p on R^D
        −log P(x) ≤ E_v[−log p(x + v)] + D·log(levels/2)   (Jensen; bin volume (2/levels)^D)."""
    v = rand_tensor(x.shape, generator, x.device, x.dtype)
    return x + v * (2.0 / levels)


class TrajectorySchedule(SchedulerMixin, ConfigMixin):
    """The trajectory's settings, saved with a model as scheduler_config.json.

    t_min: the last (least noisy) time; the sampler ends there and a denoiser removes what is left.
    shift: time shift of the grid. train_num_steps: the step counts K sampled per training batch.
    dequantize_levels: 0, or the number of pixel values of the data (256): the likelihood configuration whose
        trajectory starts at uniformly dequantized pixels at t = 0 (needs t_min = 0), so that the trajectory
        bound is a bound on the 8-bit data, −log P(x) (see `TrajectoryNLL.data_bits_per_dim`).
    sample_shift: the time shift the few-step sampler draws on, where it differs from the trajectory's (None: the
        same grid). For a model whose steps were not trained on one grid — an NTM at step 0 is its flow-matching
        model's Gaussian sampler, exact on any grid: there more steps at high noise draw better (shift 3: 0.77 vs
        0.63 at K = 4), fewer give the tighter bound (−2.17 vs −1.34 bits/dim on x_{t_0}; docs/time-shift-shapes).
        A sample's log p(τ) is the density on the grid it was drawn on, which the trajectory carries.
    train_shifts: the time shifts whose grids training draws from, one per batch like K (None: `shift` alone). A
        trained NTM keeps the grid it was trained on (ntm-mnist28 reads 0.38 → 0.27 from sample_shift 1 to 3), so a
        model meant to sample on sample_shift and bound on shift trains on both.
    """

    config_name = "scheduler_config.json"

    @register_to_config
    def __init__(self, t_min: float = 0.05, shift: float = 1.0, train_num_steps: Sequence[int] = (4,),
                 dequantize_levels: int = 0, sample_shift: float | None = None,
                 train_shifts: Sequence[float] | None = None):
        for s in [shift] + ([] if sample_shift is None else [sample_shift]) + list(train_shifts or []):
            time_grid(1, t_min, s)  # validates
        if train_shifts is not None and not len(train_shifts):
            raise ValueError("train_shifts must name at least one shift (or be null: the trajectory's own)")
        if not train_num_steps or any(int(k) < 1 for k in train_num_steps):
            raise ValueError(f"train_num_steps must be positive integers, got {train_num_steps}")
        if dequantize_levels < 0 or dequantize_levels == 1:
            raise ValueError(f"dequantize_levels must be 0 (off) or the number of pixel values, "
                             f"got {dequantize_levels}")
        if dequantize_levels and t_min != 0.0:
            raise ValueError("dequantize_levels needs t_min = 0: the 8-bit bound holds only for a trajectory that "
                             f"starts at the dequantized data (got t_min = {t_min})")

    @property
    def dequantization_width(self) -> float:
        """Width of a dequantization bin in [−1, 1] scaling (0 when the data are not dequantized)."""
        levels = self.config.dequantize_levels
        return 2.0 / levels if levels else 0.0

    def grid(self, num_steps: int, dtype=torch.float32, device=None, shift: float | None = None) -> torch.Tensor:
        """The trajectory's grid: training, likelihoods, forward trajectories (`shift`: a training batch's from
        train_shifts; None: the trajectory's own)."""
        shift = self.config.shift if shift is None else shift
        return time_grid(num_steps, self.config.t_min, shift).to(dtype=dtype, device=device)

    @property
    def sampling_shift(self) -> float:
        """The time shift the sampler draws on: sample_shift, else the trajectory's own."""
        return float(self.config.shift if self.config.sample_shift is None else self.config.sample_shift)

    def sampling_grid(self, num_steps: int, dtype=torch.float32, device=None) -> torch.Tensor:
        """The grid the sampler draws a new trajectory on."""
        return self.grid(num_steps, dtype, device, shift=self.sampling_shift)

    def train_num_steps_for(self, key: int) -> int:
        """The step count K of one training step, picked from train_num_steps by an integer key (the trainer passes
        its per-step seed, so every process picks the same K and a resumed run picks what the first one did)."""
        choices = list(self.config.train_num_steps)
        return int(choices[key % len(choices)])

    def train_shift_for(self, key: int) -> float | None:
        """The time shift of one training step's grid, picked from train_shifts by the same key, independently of K
        (the key's digits past K's); None (the trajectory's own grid) when there is no train_shifts."""
        shifts = self.config.train_shifts
        if not shifts:
            return None
        return float(shifts[(key // len(self.config.train_num_steps)) % len(shifts)])

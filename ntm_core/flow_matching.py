"""The flow-matching baseline (NTM_METHOD §5's starting point): the predictor backbone as a velocity model
v(x_t, t, c) ≈ ε − x_0 on x_t = (1 − t) x_0 + t ε. Sampled with diffusers' FlowMatchEulerDiscreteScheduler,
or as a K-step Gaussian sampler (the posterior q(x_s | x_t, x̂_0) with x̂_0 = x_t − t·v), which is exactly what an
NTM initialised from this model computes at step 0.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor
from flow_matching.solver import ODESolver
from flow_matching.utils import ModelWrapper

from .conditioning import TextEmbedding, guide, is_guided, with_null
from .predictor import Predictor
from .trajectory import LOG_2PI, posterior_coefficients, rand_tensor


def velocity(predictor: Predictor, x: torch.Tensor, t, text: TextEmbedding | None = None) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
    return predictor(x[:, None], t[:, None], t[:, None], text)[2][:, 0]


def guided_velocity(predictor, x, t, text, guidance_scale: float) -> torch.Tensor:
    if not is_guided(text, guidance_scale):
        return velocity(predictor, x, t, text)
    return guide(velocity(predictor, torch.cat([x, x]), t, with_null(text)), guidance_scale)


TIME_SAMPLING = ("uniform", "logit_normal")


def training_times(n: int, generator, device, dtype, sampling: str = "uniform") -> torch.Tensor:
    """The noise levels t ∈ (0, 1) of a flow-matching batch [n]: 'uniform', or 'logit_normal' — t = sigmoid(z),
    z ~ N(0, 1), SD3's choice (Esser et al. 2024), which spends the batch on the middle levels where the layout is
    decided rather than on the ends (near 0 the target is the noise, near 1 the data mean)."""
    if sampling == "uniform":
        return rand_tensor(n, generator, device, dtype)
    if sampling == "logit_normal":
        return torch.sigmoid(randn_tensor((n,), generator=generator, device=device, dtype=dtype))
    raise ValueError(f"time sampling must be one of {TIME_SAMPLING}, got {sampling!r}")


def fm_loss(predictor: Predictor, x0: torch.Tensor, text: TextEmbedding | None, generator=None,
            time_sampling: str = "uniform") -> torch.Tensor:
    """Mean squared velocity error per dimension, t drawn by `training_times`."""
    t = training_times(x0.shape[0], generator, x0.device, x0.dtype, time_sampling)
    eps = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    tt = t[:, None, None, None]
    v = velocity(predictor, (1 - tt) * x0 + tt * eps, t, text)
    return (v - (eps - x0)).pow(2).mean()


@torch.no_grad()
def euler_sample(predictor: Predictor, shape, num_steps: int, text: TextEmbedding | None = None,
                 guidance_scale: float = 1.0, generator=None, scheduler: FlowMatchEulerDiscreteScheduler | None = None,
                 progress=None) -> torch.Tensor:
    """Deterministic Euler integration from t = 1 to 0 with the diffusers scheduler (its own sigma grid)."""
    scheduler = scheduler or FlowMatchEulerDiscreteScheduler(shift=1.0)
    p = next(predictor.parameters())
    scheduler.set_timesteps(num_steps, device=p.device)
    x = randn_tensor(shape, generator=generator, device=p.device, dtype=p.dtype)
    for i, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[i]
        v = guided_velocity(predictor, x, sigma, text, guidance_scale)
        x = scheduler.step(v, t, x).prev_sample
        if progress is not None:
            progress(i + 1, num_steps)
    return x


@torch.no_grad()
def gaussian_sample(predictor: Predictor, shape, grid: torch.Tensor, text=None, generator=None,
                    guidance_scale: float = 1.0, denoise: bool = False, temperature: float = 1.0) -> torch.Tensor:
    """The FM model as a K-step Gaussian sampler: x_s = μ̃(x_t, x_t − t·v) + temperature·σ̃ z, v guided. Returns
    x_{t_0}, or with `denoise` its Tweedie estimate x_{t_0} − t_0·v (one more evaluation: E[x_0 | x_t] for a
    velocity model).

    Draws its noise in the same order as NTM.sample (the prior, then one z per step), and like it scales each step's
    z by the temperature, not the prior's: the same sampler as the NTM this model initialises, at any temperature."""
    p = next(predictor.parameters())
    randn = lambda: randn_tensor(shape, generator=generator, device=p.device, dtype=p.dtype)  # noqa: E731
    x = randn()
    for k in range(grid.numel() - 1, 0, -1):
        t, s = grid[k].to(p), grid[k - 1].to(p)
        c_t, c_0, var = posterior_coefficients(t, s)
        x0_hat = x - t * guided_velocity(predictor, x, t, text, guidance_scale)
        x = c_t * x + c_0 * x0_hat + var.sqrt() * randn() * temperature
    if denoise:
        t0 = grid[0].to(p)
        x = x - t0 * guided_velocity(predictor, x, t0, text, guidance_scale)
    return x


def ntm_from_flow_matching(fm: Predictor, transporter, schedule, markov: bool = True):
    """NTM_METHOD §5: f_T = identity (a fresh, zero-initialised transporter), the predictor = the FM network's
    weights with μ_P = μ_post (the same velocity head), σ_P = σ_post·exp(δ) with δ = 0, and a zero-initialised
    s-embedding. At step 0 the result is exactly the FM model run as a K-step Gaussian sampler."""
    from .model import NTM

    cfg = {k: v for k, v in fm.config.items() if not k.startswith("_")}
    cfg.update(s_conditioning=True, markov=markov)
    predictor = Predictor(**cfg)
    dtype = next(fm.parameters()).dtype
    if dtype != next(predictor.parameters()).dtype:  # diffusers' to(dtype) warns on every call, even a no-op one
        predictor = predictor.to(dtype=dtype)
    missing, unexpected = predictor.load_state_dict(fm.state_dict(), strict=False)
    if unexpected or any(not k.startswith("s_embed.") for k in missing):
        raise ValueError(f"not a compatible flow-matching predictor (missing {missing}, unexpected {unexpected})")
    with torch.no_grad():
        half = predictor.final.proj.out_features // 2
        predictor.final.proj.weight[half:] = 0
        predictor.final.proj.bias[half:] = 0
    return NTM(transporter, predictor, schedule)


# ---- the probability-flow ODE likelihood (the baseline NTM's exact likelihood is compared with) ----
class _PackageTime(ModelWrapper):
    """A velocity v(x, t) ≈ ε − x_0 (t = 1 noise) in the `flow_matching` package's convention: its time r runs
    from noise (r = 0) to data (r = 1) and states are flat [B, D]. r maps onto t ∈ [t_start, 1] as
    t = t_start + (1 − t_start)(1 − r), so the package's integral from r = 1 to 0 starts at the given state
    x_{t_start}: dx/dr = −(1 − t_start) · v(x, t(r))."""

    def __init__(self, velocity_fn: Callable, shape: tuple[int, ...], t_start: float):
        super().__init__(None)
        self.velocity_fn, self.shape, self.t_start = velocity_fn, shape, t_start

    def forward(self, x: torch.Tensor, t: torch.Tensor, **extras) -> torch.Tensor:
        tt = self.t_start + (1.0 - self.t_start) * (1.0 - t)
        v = self.velocity_fn(x.reshape(-1, *self.shape), tt, extras.get("text"))
        return -(1.0 - self.t_start) * v.flatten(1)


def ode_log_likelihood(velocity_fn: Callable, x: torch.Tensor, t_start: float = 0.0, text=None, nfe: int = 50,
                       method: str = "euler", exact_divergence: bool = False, seed: int = 0) -> torch.Tensor:
    """log p(x) in nats [B] of states x [B, ...] at time t_start under the probability-flow ODE of a velocity
    model — the flow-matching likelihood, by the `flow_matching` package's ODESolver.compute_likelihood.

    velocity_fn(x, t, text) → v ≈ ε − x_0 (this project's convention). nfe: velocity evaluations, i.e. Euler steps,
    or 2 per midpoint step. exact_divergence: D backward passes per evaluation; otherwise Hutchinson's estimator
    with one Rademacher probe, drawn from `seed` so that runs at different nfe share it."""
    per_step = {"euler": 1, "midpoint": 2}
    if method not in per_step:
        raise ValueError(f"method must be one of {list(per_step)}, got {method!r}")
    if nfe < per_step[method] or nfe % per_step[method]:
        raise ValueError(f"{method} needs nfe to be a positive multiple of {per_step[method]}, got {nfe}")
    steps = nfe // per_step[method]
    shape = tuple(x.shape[1:])
    dim = math.prod(shape)
    solver = ODESolver(_PackageTime(velocity_fn, shape, t_start))
    log_p0 = lambda z: -0.5 * z.pow(2).sum(1) - 0.5 * dim * LOG_2PI  # noqa: E731  N(0, I) at t = 1
    torch.manual_seed(seed)  # the package draws its Hutchinson probe from the global generator
    time_grid = torch.tensor([1.0, 0.0], dtype=x.dtype, device=x.device)
    default = torch.get_default_dtype()
    torch.set_default_dtype(x.dtype)  # the package builds its probe in the default dtype (float64 inputs)
    try:
        _, log_p = solver.compute_likelihood(x.flatten(1), log_p0, step_size=1.0 / steps, method=method,
                                             time_grid=time_grid, exact_divergence=exact_divergence, text=text)
    finally:
        torch.set_default_dtype(default)
    return log_p

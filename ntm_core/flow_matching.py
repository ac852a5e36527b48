"""The flow-matching baseline (NTM_METHOD §5's starting point): the predictor backbone as a velocity model
v(x_t, t, c) ≈ ε − x_0 on x_t = (1 − t) x_0 + t ε. Sampled with diffusers' FlowMatchEulerDiscreteScheduler,
or as a K-step Gaussian sampler (the posterior q(x_s | x_t, x̂_0) with x̂_0 = x_t − t·v), which is exactly what an
NTM initialised from this model computes at step 0.
"""
from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from .conditioning import TextEmbedding
from .predictor import Predictor
from .trajectory import LOG_2PI, posterior_coefficients


def velocity(predictor: Predictor, x: torch.Tensor, t, text: TextEmbedding | None = None) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
    return predictor(x[:, None], t[:, None], t[:, None], text)[2][:, 0]


def guided_velocity(predictor, x, t, text, guidance_scale: float) -> torch.Tensor:
    if text is None or guidance_scale == 1.0:
        return velocity(predictor, x, t, text)
    v_c, v_u = velocity(predictor, torch.cat([x, x]), t, TextEmbedding.cat([text, text.null()])).chunk(2)
    return v_u + guidance_scale * (v_c - v_u)


def fm_loss(predictor: Predictor, x0: torch.Tensor, text: TextEmbedding | None, generator=None) -> torch.Tensor:
    """Mean squared velocity error per dimension, t ~ U(0, 1)."""
    t = torch.rand(x0.shape[0], generator=generator, dtype=x0.dtype, device="cpu").to(x0.device)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device="cpu").to(x0.device)
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
    x = torch.randn(shape, generator=generator, dtype=p.dtype, device="cpu").to(p.device)
    for i, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[i]
        v = guided_velocity(predictor, x, sigma, text, guidance_scale)
        x = scheduler.step(v, t, x).prev_sample
        if progress is not None:
            progress(i + 1, num_steps)
    return x


@torch.no_grad()
def gaussian_sample(predictor: Predictor, shape, grid: torch.Tensor, text=None, generator=None) -> torch.Tensor:
    """The FM model as a K-step Gaussian sampler: x_s = μ̃(x_t, x_t − t·v) + σ̃ z. Returns x_{t_0}.

    Draws its noise in the same order as NTM.sample (the prior, then one z per step)."""
    p = next(predictor.parameters())
    randn = lambda: torch.randn(shape, generator=generator, dtype=p.dtype, device="cpu").to(p.device)  # noqa: E731
    x = randn()
    for k in range(grid.numel() - 1, 0, -1):
        t, s = grid[k].to(p), grid[k - 1].to(p)
        c_t, c_0, var = posterior_coefficients(t, s)
        x0_hat = x - t * velocity(predictor, x, t, text)
        x = c_t * x + c_0 * x0_hat + var.sqrt() * randn()
    return x


def gaussian_trajectory_nll(predictor: Predictor, states: torch.Tensor, grid: torch.Tensor, text=None) -> torch.Tensor:
    """−log p(τ) of x-space trajectories [B, K+1, ...] under the FM model as a Gaussian sampler: [B]."""
    grid = grid.to(states)
    nll = 0.5 * states[:, -1].flatten(1).pow(2).sum(1) + 0.5 * states[0, 0].numel() * LOG_2PI
    for k in range(grid.numel() - 1, 0, -1):
        c_t, c_0, var = posterior_coefficients(grid[k], grid[k - 1])
        x_t = states[:, k]
        mean = c_t * x_t + c_0 * (x_t - grid[k] * velocity(predictor, x_t, grid[k], text))
        nll = nll - torch.distributions.Normal(mean, var.sqrt()).log_prob(states[:, k - 1]).flatten(1).sum(1)
    return nll


def ntm_from_flow_matching(fm: Predictor, transporter, schedule, markov: bool = True):
    """NTM_METHOD §5: f_T = identity (a fresh, zero-initialised transporter), the predictor = the FM network's
    weights with μ_P = μ_post (the same velocity head), σ_P = σ_post·exp(δ) with δ = 0, and a zero-initialised
    s-embedding. At step 0 the result is exactly the FM model run as a K-step Gaussian sampler."""
    from .model import NTM

    cfg = {k: v for k, v in fm.config.items() if not k.startswith("_")}
    cfg.update(s_conditioning=True, markov=markov)
    predictor = Predictor(**cfg).to(dtype=next(fm.parameters()).dtype)
    missing, unexpected = predictor.load_state_dict(fm.state_dict(), strict=False)
    if unexpected or any(not k.startswith("s_embed.") for k in missing):
        raise ValueError(f"not a compatible flow-matching predictor (missing {missing}, unexpected {unexpected})")
    with torch.no_grad():
        half = predictor.final.proj.out_features // 2
        predictor.final.proj.weight[half:] = 0
        predictor.final.proj.bias[half:] = 0
    return NTM(transporter, predictor, schedule)

"""NTM: transporter + predictor + trajectory schedule. Exact trajectory NLL, few-step sampling, score denoising.

One reverse step (NTM_METHOD §3):
    log p(x_s | x_t, c) = log N(f_T(x_s; s, c); μ, σ² I) + log|det ∂f_T(x_s; s, c)/∂x_s|,
    (μ, σ) = f_P(f_T(x_t; t, c) [and the noisier history]; t, s, c)
Trajectory: log p(τ) = log N(x_1; 0, I) + Σ_k log p(x_{t_{k−1}} | x_{≥ t_k}).
Tensors over steps come in *sampling order*: column i is the i-th reverse step, from t_{K−i} to t_{K−i−1}.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from .conditioning import TextEmbedding, guide, is_guided, with_null
from .predictor import Predictor
from .score_denoising import score_denoise
from .trajectory import LN2, LOG_2PI, TrajectorySchedule, dequantize, forward_log_prob, sample_trajectory
from .transporter import Transporter


def _rows(item, index: torch.Tensor):
    """The same dataclass with only the batch rows `index` of every batched tensor; the grid is shared by the rows."""
    return replace(item, **{f.name: getattr(item, f.name)[index] for f in fields(item)
                            if f.name != "grid" and isinstance(getattr(item, f.name), torch.Tensor)})


# TrajectoryNLL.parts_bits_per_dim's table: one row per reverse step, then the prior's
PARTS_COLUMNS = ["step", "t", "s", "base ½‖z‖²", "Σ log σ", "−log|det J_T|", "const", "step total"]


@dataclass
class TrajectoryNLL:
    """−log p(τ) of trajectories and its parts, in nats, per sample ([B]) or per sample and step ([B, K]).

    Densities are of the states in the model's data scaling (images in [−1, 1]). Three numbers, three densities:
    bits_per_dim: the trajectory's NLL per dimension of the whole trajectory, (K+1)·D dims.
    bound_bits_per_dim: the variational upper bound on −log p(x_{t_0}) per image dimension,
        −log p(x_{t_0}) ≤ −log p(τ) + log q(x_{t_1..t_K} | x_{t_0}), at the sampled forward trajectory.
        A continuous density: with t_min > 0 it is that of the noised image, and can be negative.
    data_bits_per_dim: only for trajectories that start at dequantized 8-bit data (t_0 = 0): the upper bound on
        −log₂ P(x) of the discrete image per dimension, bound_bits_per_dim + log₂(1/bin width) — the bits/dim of
        RealNVP, Glow and FFJORD papers.
    """

    base: torch.Tensor  # ½‖z‖²
    log_sigma: torch.Tensor  # Σ log σ
    logdet: torch.Tensor  # log|det ∂f_T/∂x| at the step's target state
    prior: torch.Tensor  # −log N(x_1; 0, I)
    forward_log_q: torch.Tensor  # log q(x_{t_1..t_K} | x_{t_0})
    dim: int
    grid: torch.Tensor = field(repr=False)
    mu: torch.Tensor | None = field(default=None, repr=False)  # [B, K, ...] the predictor's means (sampling order)
    u_src: torch.Tensor | None = field(default=None, repr=False)  # [B, K, ...] the u-states it conditioned on
    x_src: torch.Tensor | None = field(default=None, repr=False)  # [B, K, ...] the same states in x-space
    dequantization_width: float = 0.0  # bin width (model scaling) of the dequantized start; 0 = not dequantized

    @property
    def const(self) -> float:
        return 0.5 * self.dim * LOG_2PI

    @property
    def step(self) -> torch.Tensor:
        """−log p(x_s | history) per reverse step: [B, K]."""
        return self.base + self.log_sigma - self.logdet + self.const

    @property
    def total(self) -> torch.Tensor:
        return self.prior + self.step.sum(1)

    @property
    def bits_per_dim(self) -> torch.Tensor:
        return self.total / (self.grid.numel() * self.dim * LN2)

    @property
    def bound_bits_per_dim(self) -> torch.Tensor:
        return (self.total + self.forward_log_q) / (self.dim * LN2)

    @property
    def has_data_bound(self) -> bool:
        return self.dequantization_width > 0  # given only with a grid from t = 0 (trajectory_nll checks it)

    @property
    def data_bits_per_dim(self) -> torch.Tensor:
        """Upper bound on −log₂ P(x) per dimension of the 8-bit image x (see `trajectory.dequantize`)."""
        if not self.has_data_bound:
            raise ValueError("no 8-bit bound: this model's trajectory does not start at dequantized data "
                             "(it needs a schedule with t_min = 0 and dequantize_levels); use bound_bits_per_dim, "
                             "the bound on the noised image x_{t_0}")
        return self.bound_bits_per_dim - math.log2(self.dequantization_width)

    @property
    def log_prob(self) -> torch.Tensor:
        """log p(τ) in nats: [B]."""
        return -self.total

    def rows(self, index: torch.Tensor) -> "TrajectoryNLL":
        return _rows(self, index)

    def parts_bits_per_dim(self, index: int | None = 0):
        """A pandas table of −log p(x_s | history) per reverse step of trajectory `index` (None: the batch mean), in
        bits per image dimension, split into its parts (base ½‖z‖², Σ log σ, −log|det J_T|, the Gaussian constant),
        and a last row for the prior. The rows sum to −log₂ p(τ) / D."""
        import pandas as pd

        K = self.step.shape[1]
        grid = self.grid.tolist()
        to_bits = 1.0 / (self.dim * LN2)
        pick = (lambda v: v.mean(0)) if index is None else (lambda v: v[index])  # noqa: E731
        base, log_sigma, logdet, step, prior = (pick(v) for v in (self.base, self.log_sigma, self.logdet, self.step,
                                                                   self.prior))
        rows = [{"step": i + 1, "t": round(grid[K - i], 4), "s": round(grid[K - i - 1], 4),
                 "base ½‖z‖²": base[i].item() * to_bits, "Σ log σ": log_sigma[i].item() * to_bits,
                 "−log|det J_T|": -logdet[i].item() * to_bits, "const": self.const * to_bits,
                 "step total": step[i].item() * to_bits} for i in range(K)]
        rows.append({"step": "prior", "t": 1.0, "s": None, "step total": prior.item() * to_bits})
        return pd.DataFrame(rows, columns=PARTS_COLUMNS)


@dataclass
class LatentTrajectory:
    """The sampler's reverse steps in u-space (NTM.sample_latents), nothing inverted yet.

    x1: the prior draw (the state at t = 1); u: [B, K+1, C, H, W] in grid order (u[:, 0] at t_0, u[:, K] = f_T(x1));
    mu, log_sigma, z: [B, K, ...] in sampling order (the Gaussian each step drew from, and its standard-normal
    draw)."""

    grid: torch.Tensor
    x1: torch.Tensor
    u: torch.Tensor
    mu: torch.Tensor
    log_sigma: torch.Tensor
    z: torch.Tensor
    # guided sampling only: each step's Gaussian under the prompt without guidance (the conditional model's own)
    unguided_mu: torch.Tensor | None = None
    unguided_log_sigma: torch.Tensor | None = None

    @property
    def u_final(self) -> torch.Tensor:
        """The u-space state at t_0: what the transporter's inverse, or the learned denoiser, turns into an image."""
        return self.u[:, 0]

    def rows(self, index: torch.Tensor) -> "LatentTrajectory":
        return _rows(self, index)


@dataclass
class NTMSample:
    """A decoded sample (NTM.decode). `images` is x_{t_0}; the rest is filled when the whole trajectory is decoded.

    u, x: [B, K+1, C, H, W] in grid order (index K = the start, t = 1); mu, sigma, z: [B, K, ...] in sampling
    order (the Gaussian each step drew from, and its standard-normal draw)."""

    images: torch.Tensor
    grid: torch.Tensor
    u: torch.Tensor | None = None
    x: torch.Tensor | None = None
    mu: torch.Tensor | None = None
    sigma: torch.Tensor | None = None
    z: torch.Tensor | None = None
    nll: TrajectoryNLL | None = None  # −log p(τ) of each sampled trajectory, from the sampler's own draws
    unguided_nll: TrajectoryNLL | None = None  # −log p(τ | prompt) of the conditional model without guidance

    @property
    def log_prob(self) -> torch.Tensor | None:
        return None if self.nll is None else self.nll.log_prob

    def rows(self, index: torch.Tensor) -> "NTMSample":
        return replace(_rows(self, index), nll=None if self.nll is None else self.nll.rows(index),
                       unguided_nll=None if self.unguided_nll is None else self.unguided_nll.rows(index))


def _repeat(text: TextEmbedding | None, n: int) -> TextEmbedding | None:
    return None if text is None else text.repeat_interleave(n)


class NTM(nn.Module):
    def __init__(self, transporter: Transporter, predictor: Predictor, schedule: TrajectorySchedule):
        super().__init__()
        if transporter.patches.shape != predictor.patches.shape:
            raise ValueError(f"transporter and predictor disagree on the state shape (C, H, W): "
                             f"{transporter.patches.shape} vs {predictor.patches.shape}")
        if schedule.config.t_min == 0.0 and not predictor.config.min_sigma:
            raise ValueError("a trajectory that ends at the data (t_min = 0) needs a predictor with min_sigma > 0: "
                             "the Gaussian posterior of its last step has σ = 0")
        self.transporter = transporter
        self.predictor = predictor
        self.schedule = schedule

    # ---- persistence: one folder with a subfolder per component (the layout NTMPipeline uses) ----
    def save_pretrained(self, path: str, **kwargs) -> None:
        self.transporter.save_pretrained(os.path.join(path, "transporter"), **kwargs)
        self.predictor.save_pretrained(os.path.join(path, "predictor"), **kwargs)
        self.schedule.save_config(os.path.join(path, "scheduler"))

    @classmethod
    def from_pretrained(cls, path: str, **kwargs) -> "NTM":
        return cls(
            Transporter.from_pretrained(os.path.join(path, "transporter"), **kwargs),
            Predictor.from_pretrained(os.path.join(path, "predictor"), **kwargs),
            TrajectorySchedule.from_pretrained(os.path.join(path, "scheduler")),
        )

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return self.predictor.patches.shape

    def _param(self) -> torch.Tensor:
        return next(self.predictor.parameters())

    # ---- likelihood ----
    def trajectory_nll(self, states: torch.Tensor, grid: torch.Tensor, text: TextEmbedding | None = None,
                       guidance_scale: float = 1.0, dequantization_width: float = 0.0) -> TrajectoryNLL:
        """Exact −log p(τ) of x-space trajectories states [B, K+1, C, H, W] (grid order, states[:, K] at t = 1).

        One parallel transporter pass over all K+1 states, one predictor pass over all K steps. With
        guidance_scale ≠ 1, the density of the guided model (each step's Gaussian mixed as the sampler mixes it),
        which is what a guided sampler draws from. dequantization_width > 0: the states start at dequantized 8-bit
        data, so the grid must start at t = 0."""
        if dequantization_width and float(grid[0]) != 0.0:
            raise ValueError("a dequantized trajectory starts at the data: its grid starts at t = 0, not "
                             f"{float(grid[0]):g} (no 8-bit bound for a trajectory from noised images)")
        return self._trajectory_nll(states, grid, text, guidance_scale, dequantization_width)

    def _trajectory_nll(self, states, grid, text, guidance_scale, dequantization_width) -> TrajectoryNLL:
        """trajectory_nll without its check of the grid, which reads the grid on the host: for `nll`, whose grid
        is the schedule's own (from t = 0 whenever it dequantizes: TrajectorySchedule checks), so that a training
        step never waits on the GPU."""
        b, n = states.shape[:2]
        grid = grid.to(states)
        u, logdet = self.transporter(states.flatten(0, 1), grid.repeat(b), _repeat(text, n))
        u, logdet = u.unflatten(0, (b, n)), logdet.unflatten(0, (b, n))
        src, tgt = u[:, 1:].flip(1), u[:, :-1].flip(1)  # sources t_K..t_1, targets t_{K−1}..t_0
        guided = is_guided(text, guidance_scale)
        mu, log_sigma, _ = self.predictor(torch.cat([src, src]) if guided else src, grid[1:].flip(0),
                                          grid[:-1].flip(0), with_null(text) if guided else text)
        if guided:
            mu, log_sigma = guide(mu, guidance_scale), guide(log_sigma, guidance_scale)
        mu, log_sigma = mu.to(tgt.dtype), log_sigma.to(tgt.dtype)  # the density in full precision under autocast
        z = (tgt - mu) * torch.exp(-log_sigma)
        return self._assemble(z, log_sigma, logdet[:, :-1].flip(1), states[:, -1], states, grid,
                              dequantization_width, mu=mu, u_src=src, x_src=states[:, 1:].flip(1))

    @staticmethod
    def _assemble(z, log_sigma, logdet, x1, states, grid, dequantization_width, **extra) -> TrajectoryNLL:
        """−log p(τ)'s parts from each step's standard-normal z and log σ ([B, K, ...], sampling order), the
        log-dets at the targets ([B, K]), the state at t = 1 and the x-space trajectory (grid order): shared by the
        evaluation and the sampler, so both assemble the density the same way."""
        x1 = x1.flatten(1)
        dim = x1.shape[1]
        return TrajectoryNLL(
            base=0.5 * z.flatten(2).pow(2).sum(-1),
            log_sigma=log_sigma.flatten(2).sum(-1),
            logdet=logdet,
            prior=0.5 * x1.pow(2).sum(1) + 0.5 * dim * LOG_2PI,
            forward_log_q=forward_log_prob(states, grid),
            dim=dim,
            grid=grid,
            dequantization_width=dequantization_width,
            **extra,
        )

    def forward_trajectory(self, x0: torch.Tensor, num_steps: int = 4, generator: torch.Generator | None = None,
                           shift: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(states [B, K+1, ...], grid): a forward trajectory from data x0 under this model's schedule (on the grid
        of `shift`, None: the trajectory's). Under dequantize_levels, x0 (8-bit images in [−1, 1]) is dequantized
        first, with the same generator."""
        grid = self.schedule.grid(num_steps, dtype=x0.dtype, device=x0.device, shift=shift)
        levels = self.schedule.config.dequantize_levels
        if levels:
            x0 = dequantize(x0, levels, generator)
        return sample_trajectory(x0, grid, generator), grid

    def nll(self, x0: torch.Tensor, text: TextEmbedding | None = None, num_steps: int = 4,
            generator: torch.Generator | None = None, shift: float | None = None) -> TrajectoryNLL:
        """NLL of forward trajectories sampled from data x0 [B, C, H, W] (the training loss is its mean); under
        the 8-bit configuration the result carries the 8-bit bound (`data_bits_per_dim`)."""
        states, grid = self.forward_trajectory(x0, num_steps, generator, shift)
        return self._trajectory_nll(states, grid, text, 1.0, self.schedule.dequantization_width)

    # ---- sampling: the reverse steps in u-space, then one inverse ----
    @torch.no_grad()
    def sample_latents(self, batch_size: int | None = None, text: TextEmbedding | None = None, num_steps: int = 4,
                       guidance_scale: float = 1.0, temperature: float = 1.0,
                       generator: torch.Generator | list[torch.Generator] | None = None,
                       start_from: tuple[torch.Tensor, int] | None = None) -> LatentTrajectory:
        """K reverse steps in u-space (NTM_METHOD §4): x_1 ~ N(0, I), u = f_T(x_1), then u_s = μ + σ·z per step.

        Classifier-free guidance mixes (μ, log σ) of the prompt and of the null prompt; temperature scales each
        step's noise z (not the prior). `generator` may be a list, one per image (diffusers' randn_tensor rule), so
        image i of a batch is the image a batch of one draws with generator i.

        start_from=(states, k): sample only the last k steps, from the state x_{t_k} of a given x-space trajectory
        `states` [B, K+1, C, H, W] (grid order, e.g. `forward_trajectory` of real images); its noisier states are the
        trajectory's first steps, their z = (u − μ)/σ (so `decode(..., trajectory=True)` still returns the exact
        log p(τ) of the whole trajectory). Which step of a model loses the data: `analysis.steps_from_data`."""
        if text is not None:
            batch_size = text.batch_size if batch_size is None else batch_size
            if batch_size != text.batch_size:
                raise ValueError(f"batch_size {batch_size} != number of prompts {text.batch_size}")
        if not batch_size or batch_size < 1:
            raise ValueError("give batch_size (unconditional) or text")
        if not 1 <= num_steps <= 64:
            raise ValueError(f"num_steps must be in 1..64, got {num_steps}")
        p = self._param()
        # a continued trajectory keeps the grid its given states were drawn on
        grid = (self.schedule.sampling_grid if start_from is None else self.schedule.grid)(num_steps, dtype=p.dtype,
                                                                                            device=p.device)
        shape = (batch_size,) + self.sample_shape
        randn = lambda: randn_tensor(shape, generator=generator, device=p.device, dtype=p.dtype)  # noqa: E731

        given, first = self._given_states(start_from, shape, num_steps, text)
        x1 = randn() if given is None else start_from[0][:, -1].to(p)
        u, _ = self.transporter(x1, grid[-1], text)
        guided = is_guided(text, guidance_scale)
        ptext = with_null(text) if guided else text
        cache = self.predictor.new_cache()
        us, mus, log_sigmas, zs, unguided = [u], [], [], [], []
        for k in range(num_steps, 0, -1):
            src = torch.cat([u, u]) if guided else u
            mu, log_sigma, _ = self.predictor(src[:, None], grid[k], grid[k - 1], ptext, cache=cache)
            mu, log_sigma = mu[:, 0].to(u.dtype), log_sigma[:, 0].to(u.dtype)
            if guided:  # the prompt half is the conditional model's own step: kept for its density
                unguided.append((mu.chunk(2)[0], log_sigma.chunk(2)[0]))
                mu, log_sigma = guide(mu, guidance_scale), guide(log_sigma, guidance_scale)
            if k > first:  # a given step: the trajectory's own next state, and the z that reaches it
                u = given[:, k - 1]
                z = (u - mu) * torch.exp(-log_sigma)
            else:
                z = randn() * temperature
                u = mu + torch.exp(log_sigma) * z
            us.append(u), mus.append(mu), log_sigmas.append(log_sigma), zs.append(z)
        return LatentTrajectory(grid=grid, x1=x1, u=torch.stack(us[::-1], dim=1), mu=torch.stack(mus, 1),
                                log_sigma=torch.stack(log_sigmas, 1), z=torch.stack(zs, 1),
                                unguided_mu=torch.stack([m for m, _ in unguided], 1) if guided else None,
                                unguided_log_sigma=torch.stack([s for _, s in unguided], 1) if guided else None)

    def _given_states(self, start_from, shape, num_steps: int, text):
        """(u of every given state [B, K+1, ...] or None, the step the sampler starts at: K when nothing is given)."""
        if start_from is None:
            return None, num_steps
        states, k = start_from
        if tuple(states.shape) != (shape[0], num_steps + 1) + tuple(shape[1:]):
            raise ValueError(f"start_from: states of shape {list(states.shape)}, expected "
                             f"{[shape[0], num_steps + 1, *shape[1:]]} (batch, num_steps + 1 states, C, H, W)")
        if not 0 <= int(k) <= num_steps:
            raise ValueError(f"start_from: the start step must be in 0..{num_steps}, got {k}")
        b, n = states.shape[:2]
        p = self._param()
        grid = self.schedule.grid(num_steps, dtype=p.dtype, device=p.device)
        u, _ = self.transporter(states.flatten(0, 1).to(p), grid.repeat(b), _repeat(text, n))
        return u.unflatten(0, (b, n)), int(k)

    @torch.no_grad()
    def decode(self, latents: LatentTrajectory, text: TextEmbedding | None = None,
               trajectory: bool = False) -> NTMSample:
        """The transporter's inverse. trajectory=False: the image x_{t_0} = f_T⁻¹(u_{t_0}) alone. trajectory=True:
        every state in one batched inverse, and `nll`, the exact −log p(τ) of the sampled trajectory assembled from
        the sampler's own prior draw, z and log σ and the log-dets the inverse returns (no extra network pass): the
        density of the model that drew it (the guided one when guidance_scale ≠ 1); temperature changes τ, not the
        density. A guided sample also gets `unguided_nll`, the density of the conditional model without guidance,
        from the prompt half of the sampler's own predictor passes (again no extra pass); unguided, that is `nll`."""
        grid, u = latents.grid, latents.u
        if not trajectory:
            return NTMSample(images=self.transporter.inverse(latents.u_final, grid[0], text), grid=grid)
        b, n = u.shape[:2]
        x_all, logdet = self.transporter.inverse(u.flatten(0, 1), grid.repeat(b), _repeat(text, n),
                                                 return_logdet=True)
        x_all, logdet = x_all.unflatten(0, (b, n)), logdet.unflatten(0, (b, n))
        # the prior at the sampler's own draw x_1; log-dets at the targets t_{K−1}..t_0
        targets = logdet[:, :-1].flip(1)
        nll = self._assemble(latents.z, latents.log_sigma, targets, latents.x1, x_all, grid,
                             self.schedule.dequantization_width)
        unguided_nll = nll
        if latents.unguided_mu is not None:  # the same targets u_{t_{K−1}..t_0} under the unguided Gaussians
            z = (u[:, :-1].flip(1) - latents.unguided_mu) * torch.exp(-latents.unguided_log_sigma)
            unguided_nll = self._assemble(z, latents.unguided_log_sigma, targets, latents.x1, x_all, grid,
                                        self.schedule.dequantization_width)
        return NTMSample(images=x_all[:, 0], grid=grid, u=u, x=x_all, mu=latents.mu,
                         sigma=torch.exp(latents.log_sigma), z=latents.z, nll=nll, unguided_nll=unguided_nll)

    def sample(self, batch_size: int | None = None, text: TextEmbedding | None = None, num_steps: int = 4,
               guidance_scale: float = 1.0, temperature: float = 1.0,
               generator: torch.Generator | list[torch.Generator] | None = None,
               return_trajectory: bool = False) -> NTMSample:
        """sample_latents, then decode: images x_{t_0}, or with return_trajectory every state and log p(τ)."""
        latents = self.sample_latents(batch_size, text, num_steps, guidance_scale, temperature, generator)
        return self.decode(latents, text, trajectory=return_trajectory)

    # ---- §6 ----
    def denoise_with_score(self, states: torch.Tensor, grid: torch.Tensor, text: TextEmbedding | None = None) -> torch.Tensor:
        """Trajectory-score (Tweedie) denoising of x_{t_0}, from the x-space trajectory and autograd."""
        return score_denoise(lambda s: self.trajectory_nll(s, grid, text).total, states, grid)

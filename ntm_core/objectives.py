"""Training objectives, one nn.Module each (so a data-parallel wrapper sees one module), selected by config:

  ntm        exact trajectory NLL, K drawn per batch from the schedule's train_num_steps
  gauss      the same with the transporter disabled (f_T = identity): the Gaussian-only ablation
  fm         flow matching (velocity MSE) with the predictor backbone
  fm_to_ntm  NTM initialised from an FM model (NTM_METHOD §5) + λ‖μ_P − μ_FM‖² against the frozen FM model
  denoiser   the self-distilled denoiser: u at t_min → the NTM's own trajectory-score-denoised image

forward(x0, text, num_steps, generator, aux_weight) → (loss, metrics); the loss is per dimension so its scale
does not depend on image size or K.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .denoiser import Denoiser
from .flow_matching import fm_loss
from .model import NTM
from .predictor import Predictor
from .trajectory import sample_trajectory

LN2 = math.log(2.0)


class NTMObjective(nn.Module):
    def __init__(self, ntm: NTM, frozen_fm: Predictor | None = None):
        super().__init__()
        self.ntm = ntm
        self.frozen_fm = frozen_fm
        if frozen_fm is not None:
            frozen_fm.requires_grad_(False).eval()

    def forward(self, x0, text, num_steps: int, generator=None, aux_weight: float = 0.0):
        nll = self.ntm.nll(x0, text, num_steps, generator)
        dims = nll.dim * (num_steps + 1)
        loss = nll.total.mean() / dims
        m = {"nll_nats_per_dim": loss.detach(), "bits_per_dim": nll.bits_per_dim.mean().detach(),
             "bound_bits_per_dim": nll.bound_bits_per_dim.mean().detach(),
             "base": nll.base.sum(1).mean().detach() / dims, "log_sigma": nll.log_sigma.sum(1).mean().detach() / dims,
             "logdet": nll.logdet.sum(1).mean().detach() / dims, "prior": nll.prior.mean().detach() / dims}
        if nll.has_data_bound:  # the 8-bit bound (dequantized likelihood configuration)
            m["data_bits_per_dim"] = nll.data_bits_per_dim.mean().detach()
        if self.frozen_fm is not None and aux_weight > 0:
            grid = nll.grid
            with torch.no_grad():  # μ_FM: the frozen model's posterior mean from the same inputs
                mu_fm, _, _ = self.frozen_fm(nll.u_src, grid[1:].flip(0), grid[:-1].flip(0), text)
            aux = (nll.mu - mu_fm).pow(2).mean()
            loss = loss + aux_weight * aux
            m["aux"] = aux.detach()
        m["loss"] = loss.detach()
        return loss, m


class FlowMatchingObjective(nn.Module):
    def __init__(self, predictor: Predictor):
        super().__init__()
        self.predictor = predictor

    def forward(self, x0, text, num_steps: int = 1, generator=None, aux_weight: float = 0.0):
        loss = fm_loss(self.predictor, x0, text, generator)
        return loss, {"loss": loss.detach(), "velocity_mse": loss.detach()}


class DenoiserObjective(nn.Module):
    """Targets come from the frozen NTM alone: forward trajectories from the data, denoised with the NTM's own
    exact trajectory score (Tweedie); the input is what the sampler hands over, u = f_T(x_{t_0})."""

    def __init__(self, ntm: NTM, denoiser: Denoiser):
        super().__init__()
        self.ntm = ntm.requires_grad_(False).eval()
        self.denoiser = denoiser

    def forward(self, x0, text, num_steps: int, generator=None, aux_weight: float = 0.0):
        grid = self.ntm.schedule.grid(num_steps, dtype=x0.dtype, device=x0.device)
        states = sample_trajectory(x0, grid, generator)
        target = self.ntm.denoise_with_score(states, grid, text).detach()
        with torch.no_grad():
            u0, _ = self.ntm.transporter(states[:, 0], grid[0], text)
        loss = (self.denoiser(u0, text) - target).pow(2).mean()
        with torch.no_grad():
            to_data = (target - x0).pow(2).mean()
        return loss, {"loss": loss.detach(), "mse_to_target": loss.detach(), "target_mse_to_data": to_data}

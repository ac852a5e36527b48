"""Training objectives, one nn.Module each (so a data-parallel wrapper sees one module), selected by config:

  ntm        exact trajectory NLL, K (and the grid's shift) drawn per batch from the schedule's train_num_steps
             (train_shifts)
  gauss      the same with the transporter disabled (f_T = identity): the Gaussian-only ablation
  fm         flow matching (velocity MSE) with the predictor backbone
  fm_to_ntm  NTM initialised from an FM model (NTM_METHOD §5) + λ‖μ_P − μ_FM‖² against the frozen FM model
  denoiser   the self-distilled denoiser: u at t_min → the NTM's own trajectory-score-denoised image

With `init_from`, fm, ntm and gauss start from a trained pipeline of their own kind (a warm start: its networks and
weights, a new optimizer and schedule), so that training a bundled model goes on in a later session on another
machine — a full checkpoint (optimizer moments included) is too large to move between the project's machines.
The networks' architecture is then the init model's; model.* settings that ask for another one are an error.

forward(x0, text, num_steps, generator, aux_weight, shift) → (loss, metrics); the loss is per dimension so its
scale does not depend on image size or K. `shift` is the batch's grid (train_shifts); only the trajectory NLL
objectives use it — flow matching draws continuous times, the denoiser the sampler's grid. `pipeline()` is the
objective's model as the pipeline the app loads; an objective exports itself, so the trainer needs to know none of
them. `build_objective(cfg)` picks one.
"""
from __future__ import annotations

import copy
import json
import os

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from torch import nn

from .denoiser import Denoiser
from .flow_matching import fm_loss, ntm_from_flow_matching
from .model import NTM
from .pipeline import FlowMatchingPipeline, NTMPipeline, load_pipeline
from .predictor import Predictor
from .trajectory import TrajectorySchedule, sample_trajectory
from .transporter import Transporter


class _Objective(nn.Module):
    pipeline_kwargs: dict  # the text encoder the exported pipeline names

    def pipeline(self):
        raise NotImplementedError

    def save_pipeline(self, path: str) -> None:
        self.pipeline().save_pretrained(path)


AUX_TARGETS = ("u", "transported")


class NTMObjective(_Objective):
    """aux_target (fm_to_ntm): what μ_P is held to. "u": μ_FM of the u-states, NTM_METHOD §5 read literally — exact
    while f_T = identity, but once f_T moves it asks μ_P, a mean in u-space, to be an x-space mean of inputs the FM
    model never saw. "transported": f_T(μ_FM(x-states)) — the FM model's mean from the states it was trained on,
    carried into the transporter's coordinates (the same target at f_T = identity, one more transporter pass)."""

    def __init__(self, ntm: NTM, frozen_fm: Predictor | None = None, aux_target: str = "u"):
        super().__init__()
        if aux_target not in AUX_TARGETS:
            raise ValueError(f"train.aux_target must be one of {AUX_TARGETS}, got {aux_target!r}")
        self.ntm = ntm
        self.frozen_fm = frozen_fm
        self.aux_target = aux_target
        if frozen_fm is not None:
            frozen_fm.requires_grad_(False).eval()

    def forward(self, x0, text, num_steps: int, generator=None, aux_weight: float = 0.0, shift: float | None = None):
        nll = self.ntm.nll(x0, text, num_steps, generator, shift)
        dims = nll.dim * (num_steps + 1)
        loss = nll.total.mean() / dims
        m = {"nll_nats_per_dim": loss.detach(), "bits_per_dim": nll.bits_per_dim.mean().detach(),
             "bound_bits_per_dim": nll.bound_bits_per_dim.mean().detach(),
             "base": nll.base.sum(1).mean().detach() / dims, "log_sigma": nll.log_sigma.sum(1).mean().detach() / dims,
             "logdet": nll.logdet.sum(1).mean().detach() / dims, "prior": nll.prior.mean().detach() / dims}
        if nll.has_data_bound:  # the 8-bit bound (dequantized likelihood configuration)
            m["data_bits_per_dim"] = nll.data_bits_per_dim.mean().detach()
        if self.frozen_fm is not None and aux_weight > 0:
            t, s = nll.grid[1:].flip(0), nll.grid[:-1].flip(0)
            with torch.no_grad():  # the target: a regression target, no gradient into the FM model or f_T
                if self.aux_target == "u":
                    target, _, _ = self.frozen_fm(nll.u_src, t, s, text)
                else:
                    mu_fm, _, _ = self.frozen_fm(nll.x_src, t, s, text)
                    b, k = mu_fm.shape[:2]
                    target, _ = self.ntm.transporter(mu_fm.flatten(0, 1), s.repeat(b),
                                                     None if text is None else text.repeat_interleave(k))
                    target = target.unflatten(0, (b, k))
            aux = (nll.mu - target.to(nll.mu)).pow(2).mean()
            loss = loss + aux_weight * aux
            m["aux"] = aux.detach()
        m["loss"] = loss.detach()
        return loss, m

    def pipeline(self) -> NTMPipeline:
        return NTMPipeline(self.ntm.transporter, self.ntm.predictor, self.ntm.schedule, None, **self.pipeline_kwargs)


class FlowMatchingObjective(_Objective):
    def __init__(self, predictor: Predictor, time_sampling: str = "uniform", shift: float = 1.0):
        super().__init__()
        self.predictor, self.time_sampling, self.shift = predictor, time_sampling, shift

    def forward(self, x0, text, num_steps: int = 1, generator=None, aux_weight: float = 0.0, shift=None):
        loss = fm_loss(self.predictor, x0, text, generator, self.time_sampling)
        return loss, {"loss": loss.detach(), "velocity_mse": loss.detach()}

    def pipeline(self) -> FlowMatchingPipeline:
        return FlowMatchingPipeline(self.predictor, FlowMatchEulerDiscreteScheduler(shift=self.shift),
                                    **self.pipeline_kwargs)


class DenoiserObjective(_Objective):
    """Targets come from the frozen NTM alone: forward trajectories from the data, denoised with the NTM's own
    exact trajectory score (Tweedie); the input is what the sampler hands over, u = f_T(x_{t_0}). The trajectories
    lie on the sampler's grid (sample_shift), so the target is the score step the sampler would take."""

    def __init__(self, ntm: NTM, denoiser: Denoiser):
        super().__init__()
        self.ntm = ntm.requires_grad_(False).eval()
        self.denoiser = denoiser

    def forward(self, x0, text, num_steps: int, generator=None, aux_weight: float = 0.0, shift=None):
        grid = self.ntm.schedule.sampling_grid(num_steps, dtype=x0.dtype, device=x0.device)
        states = sample_trajectory(x0, grid, generator)
        target = self.ntm.denoise_with_score(states, grid, text).detach()
        with torch.no_grad():
            u0, _ = self.ntm.transporter(states[:, 0], grid[0], text)
        loss = (self.denoiser(u0, text) - target).pow(2).mean()
        with torch.no_grad():
            to_data = (target - x0).pow(2).mean()
        return loss, {"loss": loss.detach(), "mse_to_target": loss.detach(), "target_mse_to_data": to_data}

    def pipeline(self) -> NTMPipeline:
        n = self.ntm
        return NTMPipeline(n.transporter, n.predictor, n.schedule, self.denoiser, **self.pipeline_kwargs)


def text_dim_for(cfg: dict, device: str = "cpu") -> int:
    """Text width of the model to build: from the init model where there is one, else the encoder's (built on
    `device`, where the trainer then finds it in get_text_encoder's cache)."""
    if cfg.get("init_from"):
        with open(os.path.join(cfg["init_from"], "predictor", "config.json")) as f:
            return int(json.load(f).get("text_dim", 0))
    if not cfg.get("text"):
        return 0
    from .text import training_encoder

    return training_encoder(cfg["text"], device).dim


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def check_architecture(part: str, configured: dict, model, ignore=()) -> None:
    """A model loaded from init_from must be the one the config describes: a model.<part> setting (or the data's
    image size) that differs is an error, not silently overridden."""
    have = model.config
    clash = [f"{k}: {v!r} in the config, {have[k]!r} in init_from" for k, v in (configured or {}).items()
             if k in have and k not in ignore and _plain(v) != _plain(have[k])]
    if clash:
        raise ValueError(f"init_from's {part} is not the one the config describes ({'; '.join(clash)}); remove "
                         f"those model.{part} settings to train the init model's architecture, or start from scratch")


def init_pipeline(cfg: dict, kind: type, what: str):
    """The pipeline in cfg.init_from, checked to be of `kind` and to read the text as the config says."""
    init = load_pipeline(cfg["init_from"])
    if not isinstance(init, kind):
        raise ValueError(f"{cfg['objective']} needs {what} in init_from, got {type(init).__name__} "
                         f"({cfg['init_from']})")
    text = cfg.get("text") or {}
    want, have = text.get("max_length", 32), init.config.text_max_length
    if text and want != have:
        raise ValueError(f"init_from reads prompts as {have} tokens, the config as {want} (text.max_length)")
    return init


def _warm_ntm(cfg: dict, shape: dict) -> NTM:
    """ntm / gauss going on from a trained NTM pipeline (its denoiser, if any, is left behind: it would no longer
    match the NTM it was distilled from)."""
    m, gauss = cfg["model"], cfg["objective"] == "gauss"
    init = init_pipeline(cfg, NTMPipeline, "an NTM pipeline")
    if gauss != init.transporter.is_identity:
        raise ValueError(f"objective {cfg['objective']} cannot go on from "
                         f"{'an NTM with a transporter' if gauss else 'a Gaussian-only model (no transporter)'}")
    check_architecture("transporter", dict(m["transporter"], **shape), init.transporter,
                       ignore=("num_blocks",) if gauss else ())
    check_architecture("predictor", dict(m["predictor"], **shape), init.predictor)
    check_architecture("schedule", m["schedule"], init.scheduler, ignore=("train_num_steps", "train_shifts"))
    schedule = {k: v for k, v in init.scheduler.config.items() if not k.startswith("_")}
    for key in ("train_num_steps", "train_shifts"):  # how it trains next, not what it is
        if key in m["schedule"]:
            schedule[key] = m["schedule"][key]
    return NTM(init.transporter, init.predictor, TrajectorySchedule(**schedule))


def build_objective(cfg: dict, text_dim: int) -> _Objective:
    """The objective `cfg` names, with its networks built from cfg.model (or loaded from cfg.init_from)."""
    obj, m, d = cfg["objective"], cfg["model"], cfg["data"]
    shape = {"sample_size": d["image_size"], "in_channels": d["channels"]}
    shift = float(m["schedule"].get("shift", 1.0))  # an FM model samples on the time grid its NTM would use
    if obj in ("ntm", "gauss") and cfg["init_from"]:
        out = NTMObjective(_warm_ntm(cfg, shape))
    elif obj in ("ntm", "gauss"):
        tcfg = dict(m["transporter"], **shape, text_dim=text_dim)
        if obj == "gauss":
            tcfg["num_blocks"] = 0
        out = NTMObjective(NTM(Transporter(**tcfg), Predictor(**dict(m["predictor"], **shape, text_dim=text_dim)),
                               TrajectorySchedule(**m["schedule"])))
    elif obj == "fm" and cfg["init_from"]:
        predictor = init_pipeline(cfg, FlowMatchingPipeline, "a flow-matching pipeline").predictor
        check_architecture("predictor", dict(m["predictor"], **shape), predictor, ignore=("markov",))
        out = FlowMatchingObjective(predictor, cfg["train"]["time_sampling"], shift)
    elif obj == "fm":
        out = FlowMatchingObjective(Predictor(**dict(m["predictor"], **shape, text_dim=text_dim, markov=True,
                                                     s_conditioning=False)), cfg["train"]["time_sampling"], shift)
    elif obj == "fm_to_ntm":
        fm = init_pipeline(cfg, FlowMatchingPipeline, "a flow-matching pipeline").predictor
        tcfg = dict(m["transporter"], sample_size=fm.config.sample_size, in_channels=fm.config.in_channels,
                    text_dim=fm.config.text_dim)
        # Markov, whatever model.predictor says: only then is step 0 exactly the FM model (NTM_METHOD §3, §5)
        ntm = ntm_from_flow_matching(fm, Transporter(**tcfg), TrajectorySchedule(**m["schedule"]), markov=True)
        out = NTMObjective(ntm, frozen_fm=copy.deepcopy(fm), aux_target=cfg["train"]["aux_target"])
    elif obj == "denoiser":
        init = init_pipeline(cfg, NTMPipeline, "an NTM pipeline")
        pc = init.predictor.config
        # the skip u/α_{t_0} is the right start only while f_T = identity; a trained transporter's u is far from x
        skip = 1.0 / (1.0 - init.scheduler.config.t_min) if init.transporter.is_identity else 0.0
        out = DenoiserObjective(init.ntm, Denoiser(**dict(m["denoiser"], sample_size=pc.sample_size,
                                                          in_channels=pc.in_channels, patch_size=pc.patch_size,
                                                          text_dim=pc.text_dim, skip_scale=skip)))
    else:
        raise ValueError(f"unknown objective {obj!r}")
    text = cfg.get("text") or {}
    out.pipeline_kwargs = {"text_encoder_path": text.get("encoder") or "minilm",
                           "text_max_length": text.get("max_length", 32)}
    return out

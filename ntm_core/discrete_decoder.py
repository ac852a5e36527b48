"""The 8-bit bound of a model whose trajectory starts at a noised image (t_min > 0): a discrete decoder.

With t_min > 0 the trajectory bound is on x_{t_0} = α_0·x + σ_0·ε, a continuous density that no flow paper
reports. A decoder P(x | τ) over the 256 values of each pixel closes the gap to the 8-bit image x (DDPM's L_0,
Ho et al. 2020, eq. 13). With the joint p(x, τ) = p(τ)·P(x | τ) and the forward trajectory q(τ | x) =
q(x_{t_0} | x)·q(x_{t_1..t_K} | x_{t_0}) as the variational posterior,

    −log P(x) ≤ E_q[−log p(τ) + log q(x_{t_1..t_K} | x_{t_0})]  +  E_q[log q(x_{t_0} | x)]  +  E_q[−log P(x | τ)]
              =  bound on x_{t_0}                                −  D/2·log(2πe σ_0²)        +  decoder term.

The decoder: per pixel a table P(x_d = k | x̂_d), x̂ = E[x_0 | τ] the trajectory-score Tweedie estimate (the app's
"score" final step), with x̂_d in one of `bins` equal bins over [−1.1, 1.1] (the end bins also catch what lies
beyond). The table is the add-½ smoothed histogram of pixel values per bin on *training* images
(`DiscreteDecoder.fit`), stored with the model (`discrete_decoder.json`). Every row is a distribution over the 256
values, so the bound holds for any table; a better one gives a tighter bound. (A Gaussian around x̂ fitted the same
way costs twice the bits: most pixels sit exactly at 0 or 255, a spike a histogram keeps.)

The 8-bit configuration (t_0 = 0, x_{t_0} = x + uniform noise in its bin of width w) is the same formula with
E_q[log q(x_{t_0} | x)] = −D·log w and P(x | τ) = 1: `eight_bit_bound` is the one place either is computed.

Several forward trajectories tighten it: each one's −log w, w = p(τ)·P(x | τ) / q(τ | x), is −log of an unbiased
estimate of P(x), and −log of the mean of the w's (trajectory.importance_weighted) is a tighter bound in expectation
(Burda et al. 2016). That needs each trajectory's own log q(x_{t_0} | x) (`EightBitBound.sample_bits_per_dim`).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import torch

from .trajectory import LN2, forward_log_prob, sigma
from .score_denoising import score_denoise

LEVELS = 256
DECODER_FILE = "discrete_decoder.json"
RANGE = 1.1  # the bins of x̂ cover [−RANGE, RANGE]


def pixel_levels(x: torch.Tensor, levels: int = LEVELS) -> torch.Tensor:
    """Pixel values in model scaling (value k ↦ 2k/(levels−1) − 1) → their index k."""
    return torch.round((x.double() + 1) * (levels - 1) / 2).long().clamp(0, levels - 1)


@dataclass
class DiscreteDecoder:
    """P(x_d = k | x̂_d): counts[bin of x̂_d][k] + smoothing, normalised per bin."""

    counts: list[list[float]]  # [bins][levels]
    smoothing: float = 0.5
    fitted_on: dict = field(default_factory=dict)  # what the table was fitted on (images, model, trajectories)

    @property
    def levels(self) -> int:
        return len(self.counts[0])

    def bin_of(self, mean: torch.Tensor) -> torch.Tensor:
        n = len(self.counts)
        return ((mean.double().clamp(-RANGE, RANGE) + RANGE) / (2 * RANGE) * n).long().clamp(0, n - 1)

    def log_table(self, device=None) -> torch.Tensor:
        c = torch.tensor(self.counts, dtype=torch.float64, device=device) + self.smoothing
        return c.log() - c.sum(1, keepdim=True).log()

    def pixel_log_prob(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """log P(x_d | x̂_d) per pixel (nats, float64); x holds pixel values in model scaling."""
        return self.log_table(x.device)[self.bin_of(mean), pixel_levels(x, self.levels)]

    def log_prob(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """log P(x | x̂) of each image, summed over its pixels: [B] nats."""
        return self.pixel_log_prob(x, mean).flatten(1).sum(1)

    @classmethod
    def fit(cls, x: torch.Tensor, mean: torch.Tensor, bins: int = 64, levels: int = LEVELS, smoothing: float = 0.5,
            **fitted_on) -> "DiscreteDecoder":
        """The histogram of pixel values x per bin of their estimates x̂ (training images: fitting on the images one
        reports would make the number optimistic)."""
        empty = cls(counts=[[0.0] * levels] * bins, smoothing=smoothing)
        counts = torch.zeros(bins * levels, dtype=torch.float64)
        counts.index_add_(0, (empty.bin_of(mean) * levels + pixel_levels(x, levels)).flatten().cpu(),
                          torch.ones(x.numel(), dtype=torch.float64))
        return cls(counts=counts.reshape(bins, levels).tolist(), smoothing=smoothing,
                   fitted_on=dict(fitted_on, pixels=int(x.numel())))

    def save(self, folder: str) -> str:
        path = os.path.join(folder, DECODER_FILE)
        with open(path, "w") as f:
            json.dump({"smoothing": self.smoothing, "range": RANGE, "fitted_on": self.fitted_on,
                       "counts": [[int(v) if float(v).is_integer() else v for v in row] for row in self.counts]}, f)
        return path

    @classmethod
    def load(cls, folder: str | None) -> "DiscreteDecoder | None":
        """The model's decoder, or None when its folder has none (or it cannot be read)."""
        try:
            with open(os.path.join(folder or "", DECODER_FILE)) as f:
                d = json.load(f)
            counts = [[float(v) for v in row] for row in d["counts"]]
            smoothing = float(d.get("smoothing", 0.5))
            well_formed = (counts and len({len(r) for r in counts}) == 1 and len(counts[0]) >= 2 and smoothing > 0
                           and all(v >= 0 for r in counts for v in r) and d.get("range", RANGE) == RANGE)
            return cls(counts=counts, smoothing=smoothing, fitted_on=d.get("fitted_on", {})) if well_formed else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None


class NoEightBitBound(ValueError):
    """The model has no 8-bit bound: t_min > 0 without a discrete decoder, or t_min = 0 without dequantization."""


@dataclass
class EightBitBound:
    """The terms of −log₂ P(x) ≤ bound on x_{t_0} + E_q[log₂ q(x_{t_0} | x)] + E_q[−log₂ P(x | τ)], per image
    dimension: [B] each. One formula for both configurations: a noised start (t_min > 0) pays −½·log₂(2πe σ_0²)
    and a decoder; a dequantized start (t_0 = 0, bins of width w) pays −log₂ w and no decoder (the bin x_{t_0}
    falls in names x, so P(x | τ) = 1)."""

    x_t0: torch.Tensor  # the bound on −log₂ p(x_{t_0}) (TrajectoryNLL.bound_bits_per_dim)
    start: float  # E_q[log₂ q(x_{t_0} | x)] / D: the same for every image
    decoder: torch.Tensor  # −log₂ P(x | τ) / D (zeros for a dequantized start)
    mean: torch.Tensor | None = field(default=None, repr=False)  # x̂ = E[x_0 | τ], the decoder's centre
    drawn_start: torch.Tensor | None = field(default=None, repr=False)  # log₂ q(x_{t_0} | x) / D at the drawn x_{t_0}

    @property
    def dequantized(self) -> bool:
        return self.mean is None  # a dequantized start has no decoder, so no x̂ to centre one

    @property
    def bits_per_dim(self) -> torch.Tensor:
        """Upper bound on −log₂ P(x) per dimension of the 8-bit image (its expectation over q; the noise term enters
        at its mean, which removes that term's spread from the estimate)."""
        return self.x_t0 + self.start + self.decoder

    @property
    def sample_bits_per_dim(self) -> torch.Tensor:
        """−log₂ w / D of each drawn trajectory, w = p(τ)·P(x | τ) / q(τ | x) an unbiased estimate of P(x): the
        same bound with log q(x_{t_0} | x) at the drawn x_{t_0}. Its mean is bits_per_dim's; only these combine
        over several trajectories by importance weighting (trajectory.importance_weighted), a tighter bound."""
        return self.bits_per_dim if self.drawn_start is None else self.x_t0 + self.drawn_start + self.decoder

    def describe(self) -> str:
        """The sum in words, with the batch means of sample_bits_per_dim's parts (so they add up to its mean): the
        app's one wording."""
        if self.dequantized:
            return (f"dequantized trajectory: bound on x_t0 {self.x_t0.mean().item():.3f} + bin width term "
                    f"{self.start:.3f}")
        noise = self.start if self.drawn_start is None else self.drawn_start.mean().item()
        return (f"bound on x_t0 {self.x_t0.mean().item():.3f} + noise term {noise:.3f} + decoder "
                f"{self.decoder.mean().item():.3f}")


def noise_bits_per_dim(t0: float) -> float:
    """E_q[log q(x_{t_0} | x)] per dimension in bits: minus the entropy of N(α_0 x, σ_0² I) per dimension."""
    s = float(sigma(torch.tensor(t0, dtype=torch.float64)))
    return -0.5 * math.log2(2 * math.pi * math.e * s * s)


def tweedie_estimate(model, states: torch.Tensor, grid: torch.Tensor, text=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(bound on −log₂ p(x_{t_0}) per dimension [B], x̂ = E[x_0 | τ]) of x-space trajectories, from the one forward
    and backward pass of trajectory-score denoising (NTM_METHOD §6) that centres the decoder."""
    kept = {}

    def total(s: torch.Tensor) -> torch.Tensor:
        nll = model.trajectory_nll(s, grid, text)
        kept["bound"] = nll.bound_bits_per_dim.detach()
        return nll.total

    mean = score_denoise(total, states, grid)
    return kept["bound"], mean


def eight_bit_bound(model, x: torch.Tensor, decoder: DiscreteDecoder | None = None, text=None, num_steps: int = 4,
                    generator: torch.Generator | None = None) -> EightBitBound:
    """The 8-bit bound of images x (pixel values in model scaling), one forward trajectory per image (average
    several calls for a tighter estimate of the expectation), in either configuration: a dequantized start needs
    no decoder, a noised one needs `decoder`. Raises NoEightBitBound when the model has none."""
    cfg = model.schedule.config
    if cfg.dequantize_levels:
        levels = cfg.dequantize_levels
    elif cfg.t_min <= 0:
        raise NoEightBitBound("this model's trajectory starts at the continuous data (t_min = 0, no dequantization): "
                              "it has no bound on 8-bit images")
    elif decoder is None:
        raise NoEightBitBound("this model has no discrete decoder (`python -m analysis.eight_bit --model … --save` "
                              "fits one)")
    else:
        levels = decoder.levels
    off_grid = (x.double() - (pixel_levels(x, levels).double() * 2 / (levels - 1) - 1)).abs().max()
    if off_grid > 1e-3:
        raise ValueError(f"the 8-bit bound is of 8-bit images: pixel values k/{(levels - 1) / 2:g} − 1 in model "
                         f"scaling (this batch is {off_grid.item():.3g} off them); quantize first "
                         "(ntm_core.images.to_uint8, from_uint8)")
    if cfg.dequantize_levels:
        with torch.no_grad():
            nll = model.nll(x, text, num_steps, generator)
        width = model.schedule.dequantization_width
        return EightBitBound(x_t0=nll.bound_bits_per_dim.double(), start=-math.log2(width),
                             decoder=torch.zeros_like(nll.bound_bits_per_dim, dtype=torch.float64))
    states, grid = model.forward_trajectory(x, num_steps, generator)
    bound, mean = tweedie_estimate(model, states, grid, text)
    dims = x[0].numel()
    decoder_bits = -decoder.log_prob(x, mean) / (dims * LN2)
    # log q(x_{t_0} | x): the forward kernel from t = 0 (the image) to t_0, at the drawn x_{t_0}
    start = forward_log_prob(torch.stack([x.double(), states[:, 0].double()], 1),
                             torch.tensor([0.0, float(grid[0])], dtype=torch.float64))
    return EightBitBound(x_t0=bound.double(), start=noise_bits_per_dim(cfg.t_min), decoder=decoder_bits, mean=mean,
                         drawn_start=start / (dims * LN2))

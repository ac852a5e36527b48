"""Small float64 models with random (non-identity) weights for the exactness tests."""
from __future__ import annotations

import pytest
import torch

from ntm_core.conditioning import TextEmbedding
from ntm_core.model import NTM
from ntm_core.predictor import Predictor
from ntm_core.trajectory import TrajectorySchedule
from ntm_core.transporter import Transporter

TEXT_DIM = 16


def perturb_(module: torch.nn.Module, std: float, seed: int = 0) -> torch.nn.Module:
    """Add Gaussian noise to every parameter, so zero-initialised output layers stop being the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def random_text(batch: int, seed: int = 0, length: int = 5) -> TextEmbedding:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, length // 2 :] = False  # one padded prompt
    return TextEmbedding(torch.randn(batch, length, TEXT_DIM, generator=g, dtype=torch.float64), mask,
                         torch.randn(batch, TEXT_DIM, generator=g, dtype=torch.float64))


def small_ntm(*, sample_size=8, in_channels=3, patch_size=2, num_blocks=2, markov=False, text=True,
              cross=True, t_min=0.05, seed=0, std=0.05, min_sigma=0.0, dequantize_levels=0) -> NTM:
    torch.manual_seed(seed)
    transporter = Transporter(sample_size=sample_size, in_channels=in_channels, patch_size=patch_size,
                              num_blocks=num_blocks, layers_per_block=2, width=32, heads=4,
                              text_dim=TEXT_DIM if text else 0, text_cross_attention=cross)
    predictor = Predictor(sample_size=sample_size, in_channels=in_channels, patch_size=patch_size, width=32,
                          depth=2, heads=4, text_dim=TEXT_DIM if text else 0, markov=markov, min_sigma=min_sigma)
    schedule = TrajectorySchedule(t_min=t_min, dequantize_levels=dequantize_levels)
    model = NTM(transporter, predictor, schedule).double()
    return perturb_(model, std, seed) if std else model


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(2)
    yield


def zero_log_sigma_head(model: NTM) -> None:
    """Zero the δ half of the predictor's output so σ = σ̃ exactly (the velocity half stays random)."""
    proj = model.predictor.final.proj
    with torch.no_grad():
        half = proj.out_features // 2
        proj.weight[half:] = 0
        proj.bias[half:] = 0

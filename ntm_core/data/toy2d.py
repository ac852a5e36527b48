"""2-D multi-modal toy data, shaped as 1×1×2 "images" so the image models run on it unchanged
(patch size 1 → two 1-dimensional tokens, so the transporter is an autoregressive flow over the coordinates)."""
from __future__ import annotations

import math

import torch


def eight_gaussians(n: int, generator: torch.Generator | None = None, radius: float = 2.0, std: float = 0.1,
                    dtype=torch.float32) -> torch.Tensor:
    """n points from 8 equal Gaussians on a circle: [n, 1, 1, 2]."""
    k = torch.randint(8, (n,), generator=generator)
    angle = k.to(torch.float64) * (2 * math.pi / 8)
    centers = radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    pts = centers + std * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return pts.to(dtype).reshape(n, 1, 1, 2)

"""The lightweight learned denoiser g_φ (NTM_METHOD §6): the sampler's final u-space state (and the prompt) →
the trajectory-score-denoised image. It replaces both the transporter's autoregressive inverse and the
score's backward pass at sampling time; it is trained only on targets the NTM itself produces.

g(u, c) = skip_scale · u + net(u, c), the network zero-initialised. With skip_scale = 1/α_{t_0} it starts as the
naive rescaling x_{t_0} / α_{t_0} (right when f_T = identity); for a trained transporter, whose u is far from x,
the trainer sets skip_scale = 0 and the network learns the whole map.
"""
from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .conditioning import TextEmbedding
from .layers import FinalLayer, Patches, TransformerLayer, position_table


class Denoiser(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, sample_size=32, in_channels: int = 3, patch_size: int = 4, width: int = 128, depth: int = 3,
                 heads: int = 4, text_dim: int = 0, skip_scale: float = 1.0, pos_init: str = "sincos"):
        super().__init__()
        self.patches = Patches(sample_size, in_channels, patch_size)
        self.proj_in = nn.Linear(self.patches.token_dim, width)
        self.pos = position_table(self.patches, width, pos_init)
        self.cond = nn.Parameter(torch.zeros(1, width))  # learned conditioning when there is no text
        self.text = nn.Linear(text_dim, width, bias=False) if text_dim else None
        self.layers = nn.ModuleList(TransformerLayer(width, heads, width) for _ in range(depth))
        self.final = FinalLayer(width, width, self.patches.token_dim)

    def forward(self, u: torch.Tensor, text: TextEmbedding | None = None) -> torch.Tensor:
        """u [B, C, H, W] (the final u-space state at t_min) → denoised image [B, C, H, W]."""
        h = self.proj_in(self.patches.tokens(u)) + self.pos
        cond = self.cond.to(u.dtype).expand(u.shape[0], -1)
        if self.text is not None and text is not None:
            cond = cond + self.text(text.pooled.to(u.dtype))
        for layer in self.layers:
            h = layer(h, cond)
        return self.config.skip_scale * u + self.patches.image(self.final(h, cond))

"""The predictor f_P(u_t; t, s, c) → (μ, log σ) (NTM_METHOD §3): deep, non-causal inside a step, not invertible.

It runs over the tokens of all steps of a trajectory at once. Step j's tokens see their own step and every
noisier step (block-causal mask over steps), so one teacher-forced pass trains all transitions and sampling
goes step by step with a KV cache. `markov=True` restricts each step to its own state (block-diagonal),
computed as independent sequences.

Parameterised around the Gaussian posterior so that transporter = identity is exactly a Gaussian diffusion
model: the network outputs a velocity v and a log-scale correction δ (both zero at init);
x̂_0 = u_t − t·v,  μ = μ̃(u_t, x̂_0) = c_t u_t + c_0 x̂_0,  log σ = ½·log(σ̃²(t, s) + σ_min²) + δ.
σ_min (`min_sigma`) is 0 except for trajectories that end at the data (t_min = 0), whose last step has σ̃ = 0.
The v head alone is a flow-matching model (v ≈ ε − x_0), which is what §5's initialisation relies on; with
s_conditioning=False and markov=True the network is exactly such a velocity model v(x_t, t, c).
"""
from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .conditioning import TextEmbedding
from .layers import FinalLayer, KVCache, Patches, TextContext, TimeEmbedding, TransformerLayer, position_table
from .trajectory import posterior_coefficients


class Predictor(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(
        self,
        sample_size=32,
        in_channels: int = 3,
        patch_size: int = 4,
        width: int = 192,
        depth: int = 6,
        heads: int = 6,
        text_dim: int = 0,
        markov: bool = False,
        max_log_sigma_delta: float = 4.0,
        s_conditioning: bool = True,
        min_sigma: float = 0.0,
        pos_init: str = "sincos",
    ):
        super().__init__()
        self.patches = Patches(sample_size, in_channels, patch_size)
        self.proj_in = nn.Linear(self.patches.token_dim, width)
        self.pos = position_table(self.patches, width, pos_init)
        self.t_embed = TimeEmbedding(width)
        # the target time s; zero-initialised output so a flow-matching model (s_conditioning=False, which only
        # knows t) loads into an NTM predictor with its function unchanged (NTM_METHOD §5)
        self.s_embed = TimeEmbedding(width) if s_conditioning else None
        if self.s_embed is not None:
            nn.init.zeros_(self.s_embed.mlp[-1].weight)
            nn.init.zeros_(self.s_embed.mlp[-1].bias)
        self.text = TextContext(text_dim, width, width) if text_dim else None
        self.layers = nn.ModuleList(
            TransformerLayer(width, heads, width, context_dim=width if text_dim else None) for _ in range(depth)
        )
        self.final = FinalLayer(width, width, 2 * self.patches.token_dim)

    def new_cache(self) -> list[KVCache] | None:
        """A KV cache over steps for step-by-step sampling (None for the Markov predictor: nothing to cache)."""
        return None if self.config.markov else [KVCache() for _ in self.layers]

    def forward(self, u: torch.Tensor, t, s, text: TextEmbedding | None = None, cache: list[KVCache] | None = None):
        """u: [B, K, C, H, W], the source states of K transitions, noisiest first; t, s: [K] or [B, K] times of
        each source and its target. Returns (μ, log σ, v), each [B, K, C, H, W]: the Gaussian over each target.

        With `cache` (block-causal only), u holds new steps that follow the cached ones."""
        b, k = u.shape[:2]
        n = self.patches.num_tokens
        t = torch.as_tensor(t, dtype=u.dtype, device=u.device).expand(b, k)
        s = torch.as_tensor(s, dtype=u.dtype, device=u.device).expand(b, k)
        tokens = self.patches.tokens(u.flatten(0, 1))  # [B·K, N, d]
        h = self.proj_in(tokens) + self.pos
        cond = self.t_embed(t) if self.s_embed is None else self.t_embed(t) + self.s_embed(s)  # [B, K, W]
        ctx = ctx_mask = None
        if self.text is not None:
            pooled, ctx, ctx_mask = self.text(text, b, u.dtype, u.device)
            cond = cond + pooled[:, None]

        if self.config.markov:  # K independent sequences of N tokens
            cond = cond.flatten(0, 1)
            if ctx is not None:
                ctx = ctx.repeat_interleave(k, 0)
                ctx_mask = None if ctx_mask is None else ctx_mask.repeat_interleave(k, 0)
            mask = None
            cache = None
        else:  # one sequence of K·N tokens, block-causal over steps
            h = h.reshape(b, k * n, -1)
            cond = cond.repeat_interleave(n, dim=1)
            step = torch.arange(k, device=u.device).repeat_interleave(n)
            mask = None if cache is not None else step[:, None] >= step[None, :]

        for i, layer in enumerate(self.layers):
            h = layer(h, cond, mask=mask, cache=None if cache is None else cache[i], context=ctx, context_mask=ctx_mask)
        out = self.final(h, cond).reshape(b * k, n, -1)
        v, delta = (self.patches.image(o).unflatten(0, (b, k)) for o in out.chunk(2, -1))
        return self.gaussian(u, t, s, v, delta)

    def gaussian(self, u: torch.Tensor, t: torch.Tensor, s: torch.Tensor, v: torch.Tensor, delta: torch.Tensor):
        """The Gaussian over each target from the network's velocity v and log-scale correction δ, all
        [B, K, C, H, W] (t, s: [B, K]): μ = μ̃(u, u − t·v), log σ = ½·log σ̃² + soft-clipped δ. Returns (μ, log σ, v)."""
        c_t, c_0, var = (c[..., None, None, None] for c in posterior_coefficients(t, s))
        x0_hat = u - t[..., None, None, None] * v
        mu = c_t * u + c_0 * x0_hat
        m = self.config.max_log_sigma_delta
        if self.config.min_sigma:
            var = var + self.config.min_sigma**2
        log_sigma = 0.5 * torch.log(var) + m * torch.tanh(delta / m)
        return mu, log_sigma, v

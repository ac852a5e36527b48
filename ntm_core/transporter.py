"""The transporter f_T(x; τ, c) (NTM_METHOD §3): shallow, invertible, shared by every trajectory step.

TarFlow-style: the image is cut into N patch tokens; each flow block is a causal transformer over the tokens
in its own order (raster, reversed raster, alternating). Token i gets a shift m_i and log-scale a_i computed
from tokens < i (and τ, c):  u_i = (x_i − m_i) · exp(−a_i),  log|det ∂u/∂x| = −Σ_i Σ_d a_{i,d}.
Forward (x → u) is one parallel pass; the inverse is sequential over tokens, with a KV cache.
Zero-initialised output layers make every block, hence f_T, the identity at initialisation; with
num_blocks = 0 f_T is the identity for good (the Gaussian-only ablation).
"""
from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .conditioning import TextEmbedding
from .layers import FinalLayer, KVCache, Patches, TextContext, TimeEmbedding, TransformerLayer


class FlowBlock(nn.Module):
    """One autoregressive affine block: a causal transformer that predicts token i's (m_i, a_i) from tokens < i."""

    def __init__(self, num_tokens, token_dim, width, depth, heads, cond_dim, context_dim, reverse, max_log_scale):
        super().__init__()
        self.reverse = reverse
        self.max_log_scale = max_log_scale
        self.proj_in = nn.Linear(token_dim, width)
        self.start = nn.Parameter(0.02 * torch.randn(1, 1, width))  # stands in for "token −1"
        self.pos = nn.Parameter(0.02 * torch.randn(1, num_tokens, width))
        self.layers = nn.ModuleList(TransformerLayer(width, heads, cond_dim, context_dim) for _ in range(depth))
        self.final = FinalLayer(width, cond_dim, 2 * token_dim)

    def _order(self, t: torch.Tensor) -> torch.Tensor:
        return t.flip(1) if self.reverse else t

    def _shift_log_scale(self, h, cond, mods=None):
        m, a = self.final(h, cond, mods).chunk(2, dim=-1)
        # soft clamp keeps exp(±a) finite early in training; any smooth function keeps the flow exact
        return m, self.max_log_scale * torch.tanh(a / self.max_log_scale)

    def _params_parallel(self, x, cond, ctx, ctx_mask):
        """(m, a) for every token at once; position i sees tokens < i only (shifted input + causal mask)."""
        h = torch.cat([self.start.expand(x.shape[0], -1, -1).to(x.dtype), self.proj_in(x[:, :-1])], dim=1) + self.pos
        for layer in self.layers:
            h = layer(h, cond, causal=True, context=ctx, context_mask=ctx_mask)
        return self._shift_log_scale(h, cond)

    def forward(self, x, cond, ctx=None, ctx_mask=None):
        x = self._order(x)
        m, a = self._params_parallel(x, cond, ctx, ctx_mask)
        u = (x - m) * torch.exp(-a)
        return self._order(u), -a.flatten(1).sum(1)

    def inverse(self, u, cond, ctx=None, ctx_mask=None, use_cache: bool = True):
        """u → (x, log|det ∂u/∂x| at x): the log-det falls out of the log-scales the inverse computes anyway."""
        u = self._order(u)
        n = u.shape[1]
        xs: list[torch.Tensor] = []
        logdet = torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
        if use_cache:  # the conditioning is the same for every token: modulate once, cache keys/values
            caches = [KVCache(max_len=n) for _ in self.layers]
            mods = [layer.modulations(cond) for layer in self.layers]
            final_mods = self.final.modulations(cond)
        for i in range(n):
            if use_cache:
                prev = self.start.expand(u.shape[0], -1, -1).to(u.dtype) if i == 0 else self.proj_in(xs[-1])
                h = prev + self.pos[:, i : i + 1]
                for layer, cache, mod in zip(self.layers, caches, mods):
                    h = layer(h, cond, cache=cache, context=ctx, context_mask=ctx_mask, mods=mod)
                m, a = self._shift_log_scale(h, cond, final_mods)
            else:  # naive: a full parallel pass per token (kept to check the cache)
                known = torch.cat(xs + [torch.zeros_like(u[:, i:])], dim=1)
                m, a = (t[:, i : i + 1] for t in self._params_parallel(known, cond, ctx, ctx_mask))
            xs.append(u[:, i : i + 1] * torch.exp(a) + m)
            logdet = logdet - a.flatten(1).sum(1)
        return self._order(torch.cat(xs, dim=1)), logdet


class Transporter(ModelMixin, ConfigMixin):
    """f_T: x-space state → u-space latent, conditioned on the state's own time τ and on text."""

    @register_to_config
    def __init__(
        self,
        sample_size=32,
        in_channels: int = 3,
        patch_size: int = 4,
        num_blocks: int = 2,
        layers_per_block: int = 2,
        width: int = 128,
        heads: int = 4,
        text_dim: int = 0,
        text_cross_attention: bool = False,
        max_log_scale: float = 4.0,
    ):
        super().__init__()
        self.patches = Patches(sample_size, in_channels, patch_size)
        self.time_embed = TimeEmbedding(width)
        self.text = TextContext(text_dim, width, width) if text_dim else None
        context_dim = width if (text_dim and text_cross_attention) else None
        self.blocks = nn.ModuleList(
            FlowBlock(self.patches.num_tokens, self.patches.token_dim, width, layers_per_block, heads, width,
                      context_dim, reverse=bool(b % 2), max_log_scale=max_log_scale)
            for b in range(num_blocks)
        )

    @property
    def is_identity(self) -> bool:
        return len(self.blocks) == 0

    def _condition(self, tau, text: TextEmbedding | None, batch: int, dtype, device):
        tau = torch.as_tensor(tau, dtype=dtype, device=device).expand(batch)
        cond = self.time_embed(tau)
        if self.text is None:
            return cond, None, None
        pooled, ctx, ctx_mask = self.text(text, batch, dtype, device)
        if not self.config.text_cross_attention:
            ctx = ctx_mask = None
        return cond + pooled, ctx, ctx_mask

    def forward(self, x: torch.Tensor, tau, text: TextEmbedding | None = None):
        """x [B, C, H, W], tau scalar or [B] → (u [B, C, H, W], log|det ∂u/∂x| [B])."""
        if self.is_identity:
            return x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        # the exact part of the model: never under a bf16/fp16 autocast (bf16 log-dets diverged in training)
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(self.dtype)
            logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            cond, ctx, ctx_mask = self._condition(tau, text, x.shape[0], x.dtype, x.device)
            h = self.patches.tokens(x)
            for block in self.blocks:
                h, ld = block(h, cond, ctx, ctx_mask)
                logdet = logdet + ld
            return self.patches.image(h), logdet

    @torch.no_grad()
    def inverse(self, u: torch.Tensor, tau, text: TextEmbedding | None = None, use_cache: bool = True,
                return_logdet: bool = False):
        """u → x, block by block in reverse, token by token inside a block. With return_logdet, also
        log|det ∂u/∂x| at the x found ([B], the forward's convention) at no extra network cost."""
        if self.is_identity:
            zero = torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
            return (u, zero) if return_logdet else u
        with torch.autocast(u.device.type, enabled=False):
            u = u.to(self.dtype)
            logdet = torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
            cond, ctx, ctx_mask = self._condition(tau, text, u.shape[0], u.dtype, u.device)
            h = self.patches.tokens(u)
            for block in reversed(self.blocks):
                h, ld = block.inverse(h, cond, ctx, ctx_mask, use_cache=use_cache)
                logdet = logdet + ld
            x = self.patches.image(h)
            return (x, logdet) if return_logdet else x

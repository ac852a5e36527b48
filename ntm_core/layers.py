"""Transformer parts shared by the transporter, the predictor and the denoiser (DiT-style adaLN-Zero layers), and
the patch bookkeeping that turns images into their token sequences and back.

A layer takes a conditioning vector per sample [B, C] or per token [B, T, C] (the predictor conditions each
trajectory step on its own (t, s)). Self-attention takes a boolean mask, a causal flag, or a KV cache for
incremental decoding (the transporter's inverse, the predictor's step-by-step sampling).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_2d_sincos_pos_embed
from torch import nn


def as_hw(sample_size) -> tuple[int, int]:
    """A config's sample_size (an int for square images, or (height, width)) as (height, width)."""
    return (int(sample_size), int(sample_size)) if isinstance(sample_size, (int, float)) else tuple(sample_size)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] → [B, (H/p)(W/p), C·p·p], tokens in raster order."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(tokens: torch.Tensor, p: int, channels: int, height: int, width: int) -> torch.Tensor:
    """The inverse of patchify: [B, N, C·p·p] → [B, C, H, W]."""
    b = tokens.shape[0]
    x = tokens.reshape(b, height // p, width // p, channels, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, channels, height, width)


class Patches:
    """An image shape cut into p×p patch tokens: checks the config once, and converts images ↔ tokens."""

    def __init__(self, sample_size, channels: int, patch_size: int):
        self.height, self.width = as_hw(sample_size)
        if self.height % patch_size or self.width % patch_size:
            raise ValueError(f"sample_size {self.height}x{self.width} is not divisible by patch_size {patch_size}")
        self.channels, self.size = channels, patch_size
        self.num_tokens = (self.height // patch_size) * (self.width // patch_size)
        self.token_dim = channels * patch_size**2

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return self.channels, self.height, self.width

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return patchify(x, self.size)

    def image(self, tokens: torch.Tensor) -> torch.Tensor:
        return unpatchify(tokens, self.size, self.channels, self.height, self.width)


def position_table(patches: Patches, width: int, init: str = "sincos") -> nn.Parameter:
    """The learned position embedding [1, N, width] of a patch grid, initialised as DiT's 2-D sin-cos table.

    "random" (0.02·N(0, 1)) is what the first bundles used: fm-shapes32's trained table is 6 % of a token's content
    norm at t = 0.9 (0.42 vs 7.0), and for only 55 % of its tokens is the nearest table entry a grid neighbour's, so at high noise
    its tokens barely know where they are — the likely cause of the patch-aligned fragments it draws. The sin-cos
    table gives every token a distinct position at the content's scale from step 0 (nearest entry: a grid
    neighbour for 100 %); it stays trainable.
    """
    n = patches.num_tokens
    if init == "random":
        return nn.Parameter(0.02 * torch.randn(1, n, width))
    if init != "sincos":
        raise ValueError(f"position init must be 'sincos' or 'random', not {init!r}")
    rows, cols = patches.height // patches.size, patches.width // patches.size
    d = width - width % 4  # the table needs a multiple of 4 (sin and cos of rows and of columns); pad the rest
    table = get_2d_sincos_pos_embed(d, (rows, cols), base_size=max(rows, cols), output_type="pt")
    return nn.Parameter(F.pad(table.float(), (0, width - d))[None])


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of t ∈ [0, 1] (scaled by 1000, as diffusion models index time)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=t.dtype, device=t.device) / half)
    args = 1000.0 * t[..., None] * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class TimeEmbedding(nn.Module):
    def __init__(self, dim: int, freq_dim: int = 128):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype))


class KVCache:
    """Keys and values of the tokens seen so far, for one attention layer.

    With `max_len` the buffer is allocated once and filled in place (the transporter's inverse knows its length);
    without it, it grows by concatenation (the predictor's cache over a variable number of steps)."""

    def __init__(self, max_len: int | None = None):
        self.max_len = max_len
        self.len = 0
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = k.shape[2]
        if self.max_len is None:
            self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
            self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
            self.len += n
            return self.k, self.v
        if self.k is None:
            self.k = k.new_empty(k.shape[:2] + (self.max_len,) + k.shape[3:])
            self.v = torch.empty_like(self.k)
        self.k[:, :, self.len : self.len + n] = k
        self.v[:, :, self.len : self.len + n] = v
        self.len += n
        return self.k[:, :, : self.len], self.v[:, :, : self.len]


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, context_dim: int | None = None):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(context_dim or width, 2 * width)
        self.out = nn.Linear(width, width)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [B, H, T, hd]

    def forward(self, x, context=None, mask=None, causal=False, cache: KVCache | None = None):
        """mask: bool, True = may attend, broadcastable to [B, H, Tq, Tk]. With a cache, the new tokens attend
        to every cached token and to each other without a mask (callers feed whole causal units)."""
        src = x if context is None else context
        q = self._split(self.q(x))
        k, v = (self._split(t) for t in self.kv(src).chunk(2, dim=-1))
        if cache is not None:
            k, v = cache.extend(k, v)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        return self.out(y.transpose(1, 2).flatten(2))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def _per_token(mod: torch.Tensor) -> torch.Tensor:
    return mod.unsqueeze(1) if mod.dim() == 2 else mod


class TransformerLayer(nn.Module):
    """Pre-norm layer with adaLN-Zero modulation: self-attention, optional cross-attention, MLP."""

    def __init__(self, width: int, heads: int, cond_dim: int, context_dim: int | None = None, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_attn = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads)
        self.cross = Attention(width, heads, context_dim) if context_dim else None
        self.norm_cross = nn.LayerNorm(width, eps=1e-6) if context_dim else None
        self.norm_mlp = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.modulation = nn.Linear(cond_dim, 6 * width)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def modulations(self, cond: torch.Tensor) -> torch.Tensor:
        """adaLN shift/scale/gate from the conditioning; callers decoding token by token compute it once."""
        return _per_token(self.modulation(F.silu(cond)))

    def forward(self, x, cond, mask=None, causal=False, cache=None, context=None, context_mask=None, mods=None):
        sh1, sc1, g1, sh2, sc2, g2 = (self.modulations(cond) if mods is None else mods).chunk(6, dim=-1)
        x = x + g1 * self.attn(modulate(self.norm_attn(x), sh1, sc1), mask=mask, causal=causal, cache=cache)
        if self.cross is not None:
            x = x + self.cross(self.norm_cross(x), context=context, mask=context_mask)
        return x + g2 * self.mlp(modulate(self.norm_mlp(x), sh2, sc2))


class FinalLayer(nn.Module):
    """adaLN norm + a zero-initialised projection: the network's output is exactly 0 at initialisation."""

    def __init__(self, width: int, cond_dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Linear(cond_dim, 2 * width)
        self.proj = nn.Linear(width, out_dim)
        for lin in (self.modulation, self.proj):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def modulations(self, cond: torch.Tensor) -> torch.Tensor:
        return _per_token(self.modulation(F.silu(cond)))

    def forward(self, x, cond, mods=None):
        # in the weights' precision even under a bf16 autocast: these outputs are a velocity and log-scales, which
        # the density divides by σ and exponentiates (bf16 rounding of the velocity over the last step's small σ is
        # the suspected cause of the Gaussian-only model's bf16 divergence; not yet checked on a GPU)
        with torch.autocast(x.device.type, enabled=False):
            dtype = self.proj.weight.dtype
            mods = self.modulations(cond.to(dtype)) if mods is None else mods.to(dtype)
            shift, scale = mods.chunk(2, dim=-1)
            return self.proj(modulate(self.norm(x.to(dtype)), shift, scale))


class TextContext(nn.Module):
    """Projects text for a network: pooled vector → conditioning, token states → cross-attention context.

    A learned register token is always attendable, so the null prompt (everything masked) is well defined.
    """

    def __init__(self, text_dim: int, width: int, cond_dim: int):
        super().__init__()
        self.pooled = nn.Linear(text_dim, cond_dim, bias=False)  # no bias: the null prompt maps to 0 == no text
        self.tokens = nn.Linear(text_dim, width)
        self.register = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.register, std=0.02)

    def forward(self, text, batch: int, dtype, device):
        reg = self.register.to(dtype).expand(batch, -1, -1)
        if text is None:
            return torch.zeros(batch, self.pooled.out_features, dtype=dtype, device=device), reg, None
        ctx = torch.cat([reg, self.tokens(text.tokens.to(dtype))], dim=1)
        mask = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=device), text.mask.bool()], dim=1)
        return self.pooled(text.pooled.to(dtype)), ctx, mask[:, None, None, :]

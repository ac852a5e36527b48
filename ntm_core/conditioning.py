"""What the networks receive from a text encoder, the null prompt, and classifier-free guidance (shared by the
NTM sampler, which guides each step's (μ, log σ), and the flow-matching sampler, which guides its velocity).

The null prompt is "no text": zero pooled vector and an all-masked token sequence. The networks always add a
learned register token to the cross-attention context, so an empty prompt never yields an all-masked softmax.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TextEmbedding:
    tokens: torch.Tensor  # [B, L, D] token states
    mask: torch.Tensor  # [B, L] bool, True = real token
    pooled: torch.Tensor  # [B, D]

    @property
    def batch_size(self) -> int:
        return self.pooled.shape[0]

    def to(self, device=None, dtype=None) -> "TextEmbedding":
        return TextEmbedding(self.tokens.to(device=device, dtype=dtype), self.mask.to(device=device),
                             self.pooled.to(device=device, dtype=dtype))

    def rows(self, index) -> "TextEmbedding":
        """The batch rows `index` (indices, a mask or a slice)."""
        return TextEmbedding(self.tokens[index], self.mask[index], self.pooled[index])

    def drop(self, which: torch.Tensor) -> "TextEmbedding":
        """Replace the rows where `which` is True by the null prompt (text dropout for guidance)."""
        keep = (~which.bool()).to(self.pooled.device)
        return TextEmbedding(
            self.tokens * keep[:, None, None].to(self.tokens.dtype),
            self.mask & keep[:, None],
            self.pooled * keep[:, None].to(self.pooled.dtype),
        )

    def null(self) -> "TextEmbedding":
        return self.drop(torch.ones(self.batch_size, dtype=torch.bool))

    def repeat_interleave(self, n: int) -> "TextEmbedding":
        return TextEmbedding(self.tokens.repeat_interleave(n, 0), self.mask.repeat_interleave(n, 0),
                             self.pooled.repeat_interleave(n, 0))

    @staticmethod
    def cat(items: list["TextEmbedding"]) -> "TextEmbedding":
        return TextEmbedding(torch.cat([t.tokens for t in items]), torch.cat([t.mask for t in items]),
                             torch.cat([t.pooled for t in items]))


def is_guided(text: TextEmbedding | None, guidance_scale: float) -> bool:
    return text is not None and guidance_scale != 1.0


def with_null(text: TextEmbedding) -> TextEmbedding:
    """[prompts; null prompts]: one network pass evaluates both halves of a guided batch."""
    return TextEmbedding.cat([text, text.null()])


def guide(output: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance of a network output over a [prompts; null prompts] batch:
    out_null + w · (out_prompt − out_null)."""
    cond, uncond = output.chunk(2)
    return uncond + guidance_scale * (cond - uncond)

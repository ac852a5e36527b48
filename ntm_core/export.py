"""Export a trained pipeline folder for bundling: weights cast to bf16/fp16 (half the bytes), config unchanged.
`load_pipeline` computes in float32 again, so a bundle behaves like its source up to the rounding of the weights.
The bundle takes the training records along (training/: config, status, metrics, and its init model's under
training/init/), which the app reads (the dataset's prompts) and a model card sums up (analysis.model_card).

    python -m ntm_core.export runs/ntm-shapes32/pipeline assets/ntm-shapes32 --dtype bf16
"""
from __future__ import annotations

import argparse
import os

import torch

from .checkpoint import atomic_dir
from .pipeline import load_pipeline
from .runs import copy_records

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def export_pipeline(src: str, dst: str, dtype: str = "bf16") -> str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    pipe = load_pipeline(src, dtype=DTYPES[dtype])
    with atomic_dir(dst) as tmp:
        pipe.save_pretrained(tmp)
        copy_records(src, os.path.join(tmp, "training"))
    return dst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="a pipeline folder (model_index.json inside)")
    ap.add_argument("dst", help="the folder to write (replaced atomically)")
    ap.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    a = ap.parse_args(argv)
    print(export_pipeline(a.src, a.dst, a.dtype))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

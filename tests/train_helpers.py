"""Run the trainer on the tiny config (in-process or as a subprocess) and read its metrics."""
from __future__ import annotations

import json
import os
import sys

from ntm_core.config import load_config
from ntm_core.train import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "ntm_core", "configs", "tiny.yaml")
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=ROOT)


def tiny_config(out_dir, *overrides: str) -> dict:
    return load_config(TINY, [f"output_dir={out_dir}", "model.schedule.train_num_steps=[4]", *overrides])


def run_tiny(out_dir, *overrides: str) -> str:
    return train(tiny_config(out_dir, *overrides))


def metrics(out_dir) -> list[dict]:
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def train_cmd(out_dir, *overrides: str, resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "ntm_core.train", "--config", TINY, "--set", f"output_dir={out_dir}",
           "model.schedule.train_num_steps=[4]", *overrides]
    return cmd + (["--resume"] if resume else [])

"""Training configuration: defaults, YAML files and `--set key=value` overrides, checked once before a run."""
from __future__ import annotations

import copy
import re

import yaml

from .flow_matching import TIME_SAMPLING

OBJECTIVES = ("ntm", "gauss", "fm", "fm_to_ntm", "denoiser")
DEFAULTS: dict = {
    "name": "run",
    "objective": "ntm",  # ntm | gauss | fm | fm_to_ntm | denoiser
    "output_dir": "runs/run",
    "seed": 0,
    # a pipeline folder: the FM model (fm_to_ntm), the NTM (denoiser), or a model of the objective's own kind to go
    # on training (fm, ntm, gauss: a warm start, new optimizer and schedule)
    "init_from": None,
    # render: where shapes are drawn — "device" (batched torch on the training device, captions embedded once),
    # "cpu" (ShapesDataset in DataLoader workers), "auto" (device on a GPU, cpu otherwise); categories: a subset,
    # drawn uniformly over the list (one listed twice: twice as often); render_pool: images per device render call,
    # cut into micro-batches (auto: 8192 on a GPU, one micro-batch elsewhere)
    "data": {"kind": "shapes", "root": None, "image_size": 32, "channels": 3, "render": "auto", "categories": None,
             "render_pool": "auto"},
    # text: null → unconditional; embeddings: a StoredPrompts file to train with instead of running the encoder
    "text": {"encoder": "minilm", "max_length": 32, "drop_prob": 0.1, "embeddings": None},
    "model": {"transporter": {}, "predictor": {}, "schedule": {}, "denoiser": {}},
    "train": {
        "steps": 1000, "batch_size": 64, "lr": 3e-4, "warmup_steps": 50, "weight_decay": 0.0, "grad_clip": 1.0,
        "ema_decay": 0.999, "grad_accum": 1, "mixed_precision": "auto", "checkpoint_every": 200,
        "keep_checkpoints": 2, "log_every": 1, "aux_lambda": 2.5, "max_seconds": None,
        # fm_to_ntm's λ‖μ_P − target‖²: "u" (μ_FM of the u-states) | "transported" (f_T of μ_FM of the x-states)
        "aux_target": "u",
        "transporter_lr_scale": 1.0,  # the transporter's learning rate relative to train.lr (ntm, gauss, fm_to_ntm)
        # the first N optimizer steps train the predictor alone: f_T stays at its identity initialisation, so the model
        # starts as a Gaussian diffusion model (issue 12's warm-up remedy for NTM from scratch)
        "transporter_frozen_steps": 0,
        "num_workers": "auto",
        # data echoing (Choi et al. 2019): each rendered micro-batch serves this many consecutive micro-steps, each with
        # fresh trajectory noise, K and text dropout — when rendering, not the accelerator, limits throughput
        "data_echo": 1,
        # flow matching's noise levels: uniform | logit_normal (SD3's t = sigmoid(N(0, 1)), weighting the middle)
        "time_sampling": "uniform",
        "shard_mb": 15,  # checkpoint tensor files are cut into shards of at most this size (moved between machines)
    },
}
DEVICE_DATA = ("shapes", "mnist", "fashion-mnist")  # the datasets batches.py can draw on the training device
RENDER = ("auto", "device", "cpu")


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads 3e-4 (no dot) as a string; configs and --set values mean the number."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                              list("-+0123456789."))


def parse_value(raw: str):
    """A `key=value` command-line value as YAML reads it: 0.5 and 3e-4 numbers, score a word, true a bool."""
    return yaml.load(raw, Loader=_Loader)


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | None, overrides: list[str] = ()) -> dict:
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        with open(path) as f:
            cfg = _merge(cfg, yaml.load(f, Loader=_Loader) or {})
    for item in overrides:
        key, _, raw = item.partition("=")
        if not _:
            raise ValueError(f"--set expects key=value, got {item!r}")
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = parse_value(raw)
    if cfg["objective"] not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {cfg['objective']!r}")
    if cfg["objective"] in ("fm_to_ntm", "denoiser") and not cfg["init_from"]:
        raise ValueError(f"objective {cfg['objective']} needs init_from: a pipeline folder to start from")
    if not isinstance(cfg["train"]["data_echo"], int) or cfg["train"]["data_echo"] < 1:
        raise ValueError(f"train.data_echo must be an integer ≥ 1, got {cfg['train']['data_echo']!r}")
    if cfg["train"]["time_sampling"] not in TIME_SAMPLING:
        raise ValueError(f"train.time_sampling must be one of {TIME_SAMPLING}, got {cfg['train']['time_sampling']!r}")
    if cfg["data"].get("render", "auto") not in RENDER:
        raise ValueError(f"data.render must be one of {RENDER}, got {cfg['data']['render']!r}")
    pool = cfg["data"].get("render_pool", "auto")
    if pool != "auto" and (isinstance(pool, bool) or not isinstance(pool, int) or pool < 1):
        raise ValueError(f"data.render_pool must be 'auto' or an integer ≥ 1 (images per render call), got {pool!r}")
    if cfg["data"].get("render") == "device" and cfg["data"]["kind"] not in DEVICE_DATA:
        raise ValueError(f"data.render=device holds {', '.join(DEVICE_DATA)}; {cfg['data']['kind']!r} is read on "
                         "the host (render: cpu)")
    return cfg

"""Training checkpoints: tensors in safetensors, everything else in JSON — nothing is ever unpickled.

A checkpoint is a folder written under a temporary name and renamed into place, so a kill mid-write never leaves
a half checkpoint that looks complete:
    step-00000100/
        model.safetensors          the trainable weights (raw, not EMA)
        ema.safetensors, ema.json  the EMA shadow weights and the EMA's counters
        optimizer.safetensors, optimizer.json, lr_scheduler.json
                                   each tensor file cut into shards of ≤ max_shard_mb (model-00001-of-00003.safetensors
                                   + model.safetensors.index.json, huggingface_hub's layout) when it is larger, so
                                   that a checkpoint moves between machines in files of bounded size
        pipeline/                  the EMA model as a pipeline folder (loadable by the app)
        checksums.json             SHA-256 of every file above, verified before a resume reads any of them
        trainer_state.json         step, samples seen, … — written last: its presence marks a complete checkpoint
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

import torch
from huggingface_hub import save_torch_state_dict
from safetensors.torch import load_file

STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(RuntimeError):
    pass


def atomic_dir(path: str):
    """Context manager: yields a temporary folder that becomes `path` (replacing it) only on success."""

    class _Atomic:
        def __enter__(self):
            self.tmp = path.rstrip("/") + ".tmp"
            shutil.rmtree(self.tmp, ignore_errors=True)
            os.makedirs(self.tmp)
            return self.tmp

        def __exit__(self, exc_type, exc, tb):
            if exc_type is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                return False
            old = path.rstrip("/") + ".old"
            if os.path.exists(path):
                os.replace(path, old)
            os.replace(self.tmp, path)
            shutil.rmtree(old, ignore_errors=True)
            return False

    return _Atomic()


def _write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e


MAX_SHARD_MB = 15


def _save_tensors(tensors: dict[str, torch.Tensor], path: str, max_shard_mb: float = MAX_SHARD_MB) -> None:
    """path = <folder>/<name>.safetensors; written as shards of ≤ max_shard_mb with an index when larger."""
    folder, name = os.path.split(path)
    save_torch_state_dict({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, folder,
                          filename_pattern=name.replace(".safetensors", "{suffix}.safetensors"),
                          max_shard_size=int(max_shard_mb * 1e6))


def _load_tensors(path: str) -> dict[str, torch.Tensor]:
    """One file, or the shards its index (path + '.index.json') names."""
    index = path + ".index.json"
    files = [path]
    if not os.path.exists(path) and os.path.exists(index):
        folder = os.path.dirname(path)
        files = [os.path.join(folder, f) for f in sorted(set(_read_json(index)["weight_map"].values()))]
    out = {}
    for f in files:
        try:
            out.update(load_file(f))
        except Exception as e:  # safetensors raises several types for truncated / corrupt files
            raise CheckpointError(f"corrupt or unreadable tensor file {f}: {e}") from e
    return out


CHECKSUMS = "checksums.json"


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names)


def write_checksums(folder: str) -> None:
    _write_json(os.path.join(folder, CHECKSUMS), {f: _sha256(os.path.join(folder, f)) for f in _files(folder)})


def verify_checksums(folder: str) -> None:
    """Raise CheckpointError naming the first file that is missing or differs from what was written (damaged
    bytes would otherwise load silently and surface later as a NaN loss). Checkpoints from before checksums pass."""
    path = os.path.join(folder, CHECKSUMS)
    if not os.path.exists(path):
        return
    for name, digest in _read_json(path).items():
        full = os.path.join(folder, name)
        if not os.path.exists(full):
            raise CheckpointError(f"{full} is missing from the checkpoint")
        if _sha256(full) != digest:
            raise CheckpointError(f"checksum mismatch in {full}: the file was changed or damaged after it was written")


def optimizer_to_files(optimizer: torch.optim.Optimizer, prefix: str, max_shard_mb: float = MAX_SHARD_MB) -> None:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, val in state.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{pid}.{key}"] = val
            else:
                scalars[f"{pid}.{key}"] = val
    _save_tensors(tensors, prefix + ".safetensors", max_shard_mb)
    _write_json(prefix + ".json", {"param_groups": sd["param_groups"], "scalars": scalars})


def optimizer_from_files(optimizer: torch.optim.Optimizer, prefix: str) -> None:
    meta = _read_json(prefix + ".json")
    state: dict[int, dict] = {}
    for name, val in list(_load_tensors(prefix + ".safetensors").items()) + list(meta["scalars"].items()):
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"optimizer state in {prefix}.* does not fit this model: {e}") from e


def ema_to_files(ema, prefix: str, max_shard_mb: float = MAX_SHARD_MB) -> None:
    sd = ema.state_dict()
    shadow = sd.pop("shadow_params")
    _save_tensors({f"{i}": p for i, p in enumerate(shadow)}, prefix + ".safetensors", max_shard_mb)
    _write_json(prefix + ".json", sd)


def ema_from_files(ema, prefix: str) -> None:
    tensors = _load_tensors(prefix + ".safetensors")
    sd = _read_json(prefix + ".json")
    sd["shadow_params"] = [tensors[str(i)] for i in range(len(tensors))]
    if len(sd["shadow_params"]) != len(ema.shadow_params):
        raise CheckpointError(f"EMA in {prefix}.* has {len(tensors)} tensors, the model {len(ema.shadow_params)}")
    ema.load_state_dict(sd)


def save_checkpoint(ckpt_dir: str, step: int, module: torch.nn.Module, optimizer, lr_scheduler, ema,
                    trainer_state: dict, save_pipeline=None, max_shard_mb: float = MAX_SHARD_MB) -> str:
    """Write checkpoints/step-N atomically. save_pipeline(folder) writes the EMA pipeline folder, if given."""
    path = os.path.join(ckpt_dir, f"step-{step:08d}")
    with atomic_dir(path) as tmp:
        _save_tensors(module.state_dict(), os.path.join(tmp, "model.safetensors"), max_shard_mb)
        optimizer_to_files(optimizer, os.path.join(tmp, "optimizer"), max_shard_mb)
        _write_json(os.path.join(tmp, "lr_scheduler.json"), lr_scheduler.state_dict())
        if ema is not None:
            ema_to_files(ema, os.path.join(tmp, "ema"), max_shard_mb)
        if save_pipeline is not None:
            save_pipeline(os.path.join(tmp, "pipeline"))
        write_checksums(tmp)
        _write_json(os.path.join(tmp, "trainer_state.json"), dict(trainer_state, step=step))
    return path


def list_checkpoints(ckpt_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints, oldest first."""
    if not os.path.isdir(ckpt_dir):
        return []
    out = []
    for name in os.listdir(ckpt_dir):
        m = STEP_DIR.match(name)
        if m and os.path.exists(os.path.join(ckpt_dir, name, "trainer_state.json")):
            out.append((int(m.group(1)), os.path.join(ckpt_dir, name)))
    return sorted(out)


def prune_checkpoints(ckpt_dir: str, keep: int) -> None:
    for _, path in list_checkpoints(ckpt_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(path: str, module: torch.nn.Module, optimizer, lr_scheduler, ema) -> dict:
    """Restore everything save_checkpoint wrote; returns the trainer state. Raises CheckpointError clearly."""
    if not os.path.isdir(path):
        raise CheckpointError(f"no checkpoint at {path}")
    verify_checksums(path)  # before anything is loaded: a damaged checkpoint changes nothing
    state = _read_json(os.path.join(path, "trainer_state.json"))
    weights = _load_tensors(os.path.join(path, "model.safetensors"))
    missing, unexpected = module.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    optimizer_from_files(optimizer, os.path.join(path, "optimizer"))
    lr_scheduler.load_state_dict(_read_json(os.path.join(path, "lr_scheduler.json")))
    if ema is not None:
        ema_from_files(ema, os.path.join(path, "ema"))
    return state

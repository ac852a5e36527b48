"""A training run's folder — the one place that knows its layout. The trainer writes it; the app's job manager and
model registry read it.

    <run>/config.yaml        the resolved configuration
    <run>/status.json        {"state": running|stopped|finished|failed, "step", "total_steps", "device", …}
    <run>/metrics.jsonl      one JSON line per logged step (pandas.read_json(..., lines=True))
    <run>/checkpoints/       step-N folders (ntm_core.checkpoint)
    <run>/pipeline/          the finished model (EMA weights), loadable by the app
    <run>/.lock              the live trainer's pid

A bundled model keeps its run's records (config, status, metrics) in <bundle>/training/, and those of the model it
was initialised from in training/init/, and so on: its lineage, which a model card sums up (hardware, minutes,
samples seen, precision of every stage).
"""
from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import yaml

from .checkpoint import list_checkpoints
from .pipeline import MODEL_INDEX


def _write_json_atomic(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


class RunFolder:
    def __init__(self, path: str):
        self.path = path
        self.config_path = os.path.join(path, "config.yaml")
        self.status_path = os.path.join(path, "status.json")
        self.metrics_path = os.path.join(path, "metrics.jsonl")
        self.checkpoints_dir = os.path.join(path, "checkpoints")
        self.pipeline_path = os.path.join(path, "pipeline")
        self.lock_path = os.path.join(path, ".lock")

    # ---- reading (the app) ----
    def status(self) -> dict:
        """The last status the trainer wrote ({} before it wrote one, or while a write is torn)."""
        try:
            with open(self.status_path) as f:
                return json.load(f)
        except (OSError, json.JSONDecodeError):
            return {}

    def metrics(self) -> pd.DataFrame:
        """Every complete metrics line (a line torn by a kill mid-write is skipped)."""
        rows = []
        if os.path.exists(self.metrics_path):
            with open(self.metrics_path) as f:
                for line in f:
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
        return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["step", "loss"])

    def last_metrics(self) -> dict:
        """The last complete metrics line, read from the file's end (cheap for a long run; {} if none yet)."""
        try:
            with open(self.metrics_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 8192))
                tail = f.read().decode(errors="replace").splitlines()
        except OSError:
            return {}
        for line in reversed(tail):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # torn by a kill mid-write, or cut by the seek
                continue
            if isinstance(row, dict):
                return row
        return {}

    def step(self, status: dict | None = None) -> int:
        """The step the run has reached: its metrics are written every log interval, its status only at checkpoints,
        so the later of the two (`status`: one already read, e.g. with the app's process state)."""
        status = self.status() if status is None else status
        return max(int(status.get("step") or 0), int(self.last_metrics().get("step") or 0))

    def config(self) -> dict:
        try:
            with open(self.config_path) as f:
                return yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError):
            return {}

    def checkpoints(self) -> list[tuple[int, str]]:
        return list_checkpoints(self.checkpoints_dir)

    @property
    def has_pipeline(self) -> bool:
        return os.path.exists(os.path.join(self.pipeline_path, MODEL_INDEX))

    # ---- writing (the trainer) ----
    def write_status(self, state: str, **fields) -> None:
        _write_json_atomic(self.status_path, {"state": state, **fields})

    def write_config(self, cfg: dict) -> None:
        os.makedirs(self.path, exist_ok=True)
        with open(self.config_path, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)

    def append_metrics(self, rows: list[dict]) -> None:
        with open(self.metrics_path, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    def truncate_metrics(self, step: int) -> None:
        """Keep only the lines up to `step` (a resumed checkpoint), so the curve continues with no gap or overlap;
        step 0 starts a fresh file."""
        if not os.path.exists(self.metrics_path):
            return
        keep = []
        if step > 0:
            with open(self.metrics_path) as f:
                for line in f:
                    try:
                        if json.loads(line)["step"] <= step:
                            keep.append(line if line.endswith("\n") else line + "\n")
                    except (json.JSONDecodeError, KeyError, TypeError):  # a torn last line (killed mid-write), blanks
                        continue
        with open(self.metrics_path + ".tmp", "w") as f:
            f.writelines(keep)
        os.replace(self.metrics_path + ".tmp", self.metrics_path)

    def lock(self) -> None:
        """One live trainer per run folder: a second one would interleave metrics and checkpoints."""
        os.makedirs(self.path, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    with open(self.lock_path) as f:
                        pid = int(f.read().strip() or 0)
                    os.kill(pid, 0)  # PermissionError: alive, under another user — the lock holds
                except (ValueError, ProcessLookupError):
                    os.remove(self.lock_path)  # stale: its process is gone
                    continue
                except PermissionError:
                    pass
                raise ValueError(f"{self.path} is in use by training process {pid}; wait for it, or stop it first")
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return
        raise ValueError(f"could not lock {self.path}")

    def unlock(self) -> None:
        if os.path.exists(self.lock_path):
            os.remove(self.lock_path)


RECORDS = ("config.yaml", "status.json", "metrics.jsonl")


def bundled_records(pipeline: str) -> bool:
    """Whether a pipeline folder carries its training records (an exported bundle's training/)."""
    return os.path.exists(os.path.join(pipeline, "training", "config.yaml"))


def training_records(pipeline: str) -> RunFolder | None:
    """The records of the run behind a pipeline folder: a bundle's training/, or the run folder a trainer's
    <run>/pipeline sits in; None when it has neither."""
    if bundled_records(pipeline):
        return RunFolder(os.path.join(pipeline, "training"))
    path = os.path.dirname(os.path.abspath(pipeline))
    return RunFolder(path) if os.path.exists(os.path.join(path, "config.yaml")) else None


def copy_records(pipeline: str, dest: str) -> bool:
    """Copy the training records behind a pipeline folder into `dest` (a bundle's training/), with its init model's
    under init/: a bundle's lineage as it is, a run's records and then its init_from's. False if there are none."""
    run = training_records(pipeline)
    if run is None:
        return False
    if bundled_records(pipeline):  # a bundle: its lineage is already assembled
        shutil.copytree(run.path, dest, dirs_exist_ok=True)
        return True
    os.makedirs(dest, exist_ok=True)
    for name in RECORDS:
        if os.path.exists(os.path.join(run.path, name)):
            shutil.copy2(os.path.join(run.path, name), os.path.join(dest, name))
    init = run.config().get("init_from")
    if init and os.path.isdir(init):  # a path as the trainer read it (relative to the run's working directory)
        copy_records(init, os.path.join(dest, "init"))
    return True


def lineage(pipeline: str, limit: int = 16) -> list[RunFolder]:
    """The runs behind a pipeline folder, its own first, then the model it was initialised from, and so on: in a
    bundle the nested training/init/ folders (as exported); for a trainer's run, the run its config's init_from
    points to (which may be a bundle, whose nested records go on from there). A bundle's own init_from is a path on
    the machine that trained it, so it is not followed."""
    out, run, bundled = [], training_records(pipeline), bundled_records(pipeline)
    while run is not None and len(out) < limit:
        out.append(run)
        nested = os.path.join(run.path, "init")
        init = None if bundled else run.config().get("init_from")
        if os.path.exists(os.path.join(nested, "config.yaml")):
            run = RunFolder(nested)
        elif isinstance(init, str):
            run, bundled = training_records(init), bundled_records(init)
        else:
            run = None
    return out

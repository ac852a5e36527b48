"""Which models the app offers, and loading each once (thread-safe) for every user of the process.

Bundled models: assets/<name>/ (pipeline folders). Trained ones: runs/<job>/pipeline/. NTM_STUDIO_MODELS adds
folders (os.pathsep-separated), NTM_STUDIO_RUNS moves the runs folder.
"""
from __future__ import annotations

import os
import threading

import torch

from ntm_core.pipeline import NTMPipeline, load_pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, "assets")
DEFAULT_MODEL = "ntm-shapes32"


def runs_dir() -> str:
    return os.environ.get("NTM_STUDIO_RUNS", os.path.join(ROOT, "runs"))


def discover() -> dict[str, str]:
    """label → pipeline folder, bundled first."""
    found: dict[str, str] = {}
    if os.path.isdir(ASSETS):
        for name in sorted(os.listdir(ASSETS)):
            if os.path.exists(os.path.join(ASSETS, name, "model_index.json")):
                found[name] = os.path.join(ASSETS, name)
    for path in filter(None, os.environ.get("NTM_STUDIO_MODELS", "").split(os.pathsep)):
        if os.path.exists(os.path.join(path, "model_index.json")):
            parts = os.path.normpath(path).split(os.sep)
            found[parts[-2] if parts[-1] == "pipeline" and len(parts) > 1 else parts[-1]] = path
    runs = runs_dir()
    if os.path.isdir(runs):
        for job in sorted(os.listdir(runs)):
            folder = os.path.join(runs, job, "pipeline")
            if os.path.exists(os.path.join(folder, "model_index.json")):
                found[f"trained: {job}"] = folder
    return found


class Registry:
    def __init__(self):
        self._lock = threading.Lock()
        self._loaded: dict[str, object] = {}
        self.device = "cuda" if torch.cuda.is_available() else "cpu"

    def choices(self, kind: str | None = None) -> list[str]:
        labels = list(discover())
        if kind == "ntm":
            labels = [lb for lb in labels if self.is_ntm(lb)]
        return labels

    def is_ntm(self, label: str) -> bool:
        import json

        folder = discover().get(label)
        if not folder:
            return False
        with open(os.path.join(folder, "model_index.json")) as f:
            return json.load(f).get("_class_name") == "NTMPipeline"

    def default(self, kind: str | None = None) -> str | None:
        labels = self.choices(kind)
        return DEFAULT_MODEL if DEFAULT_MODEL in labels else (labels[0] if labels else None)

    def folder(self, label: str) -> str | None:
        return discover().get(label) if label else None

    def get(self, label: str):
        folder = self.folder(label)
        if folder is None:
            raise ValueError(f"no model named {label!r}; pick one from the list")
        with self._lock:
            key = os.path.realpath(folder) + f"@{os.path.getmtime(os.path.join(folder, 'model_index.json'))}"
            if key not in self._loaded:
                self._loaded[key] = load_pipeline(folder).to(self.device)
            return self._loaded[key]

    def get_ntm(self, label: str) -> NTMPipeline:
        pipe = self.get(label)
        if not isinstance(pipe, NTMPipeline):
            raise ValueError(f"{label} is a flow-matching model: this needs an NTM (exact likelihood)")
        return pipe

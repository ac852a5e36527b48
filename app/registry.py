"""Which models the app offers, and loading each once (thread-safe) for every user of the process.

Bundled models: assets/<name>/ (pipeline folders). Trained ones: runs/<job>/pipeline/. NTM_STUDIO_MODELS adds
folders (os.pathsep-separated), NTM_STUDIO_RUNS moves the runs folder.
"""
from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from ntm_core.data import caption_vocabulary, example_prompts
from ntm_core.pipeline import MODEL_INDEX, FlowMatchingPipeline, NTMPipeline, load_pipeline, model_index
from ntm_core.runs import RunFolder, lineage, training_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, "assets")
DEFAULT_MODEL = "ntm-shapes32"
DEFAULT_GUIDANCE = 3.0  # the shapes models' best (0.769 at 3, 0.762 at 2, 0.675 at 5: README "Where the steps go")
GUIDANCE_RANGE = (1.0, 8.0)  # the sliders' range
CANDIDATES_RANGE = (1, 8)  # Generate's candidates per image (best of C by the exact log p(τ | prompt))
SAMPLING_DEFAULTS = "sampling_defaults.json"  # a model folder's measured best settings for the app's controls


def runs_dir() -> str:
    return os.environ.get("NTM_STUDIO_RUNS", os.path.join(ROOT, "runs"))


def discover() -> dict[str, str]:
    """label → pipeline folder, bundled first."""
    found: dict[str, str] = {}
    if os.path.isdir(ASSETS):
        for name in sorted(os.listdir(ASSETS)):
            if os.path.exists(os.path.join(ASSETS, name, MODEL_INDEX)):
                found[name] = os.path.join(ASSETS, name)
    for path in filter(None, os.environ.get("NTM_STUDIO_MODELS", "").split(os.pathsep)):
        if os.path.exists(os.path.join(path, MODEL_INDEX)):
            parts = os.path.normpath(path).split(os.sep)
            found[parts[-2] if parts[-1] == "pipeline" and len(parts) > 1 else parts[-1]] = path
    runs = runs_dir()
    if os.path.isdir(runs):
        for job in sorted(os.listdir(runs)):
            run = RunFolder(os.path.join(runs, job))
            if run.has_pipeline:
                found[f"trained: {job}"] = run.pipeline_path
    return found


def read_json(path: str) -> dict:
    """A JSON object from a model folder; {} when the file is missing, unreadable or not an object."""
    try:
        with open(path) as f:
            out = json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}
    return out if isinstance(out, dict) else {}


@dataclass(frozen=True)
class ModelInfo:
    """What a model can do, read from its folder without loading its weights: the tabs set their controls from it."""

    label: str
    is_ntm: bool
    has_denoiser: bool = False
    gaussian_only: bool = False  # an NTM whose transporter is the identity (the paper's ablation)
    dataset: str | None = None
    vocabulary: frozenset[str] | None = field(default=None, repr=False)
    guidance_scale: float = DEFAULT_GUIDANCE  # where the app's guidance slider starts for this model
    num_candidates: int = 1  # where Generate's candidates slider starts (an NTM's measured best; 1 = plain samples)

    def can(self, kind: str | None) -> bool:
        """Whether the model can do a tab's job: None = any, "ntm" = exact likelihood, "denoiser" = an NTM with a
        learned denoiser, "fm" = a flow-matching model (what an NTM is finetuned from)."""
        return {None: True, "ntm": self.is_ntm, "denoiser": self.has_denoiser, "fm": not self.is_ntm}[kind]

    @property
    def examples(self) -> list[str]:
        return example_prompts(self.dataset)

    def unknown_words(self, prompt: str) -> list[str]:
        """Words of `prompt` its training captions never used ([] when the vocabulary is unknown)."""
        if self.vocabulary is None:
            return []
        words = re.findall(r"[a-z]+(?:-[a-z]+)*", prompt.lower())
        return list(dict.fromkeys(w for w in words if w not in self.vocabulary))

    def vocabulary_note(self, prompt: str, scoring: bool = False) -> str:
        """A warning on the words of `prompt` its training captions never used ("" if none): for drawing, or for
        scoring images under the prompt (`scoring`, the Likelihood tab)."""
        unknown = self.unknown_words(prompt)
        if not unknown:
            return ""
        words = ", ".join(repr(w) for w in unknown[:8])
        what = "that word says" if len(unknown) == 1 else "those words say"
        use = (f"a likelihood under such a prompt does not measure what {what}" if scoring
               else f"it will draw something, but not what {what}")
        note = f"⚠️ `{self.label}` never saw {words} in its training captions ({self.dataset}): {use}."
        return note + (f" Try *{self.examples[0]}*." if self.examples else "")


def model_info(label: str, folder: str) -> ModelInfo:
    index = model_index(folder) or {}
    is_ntm = index.get("_class_name") == NTMPipeline.__name__
    transporter = read_json(os.path.join(folder, "transporter", "config.json"))
    run = training_records(folder)  # the training config: bundled (training/), or the run folder around it
    data = run.config().get("data") if run is not None else None
    dataset = data.get("kind") if isinstance(data, dict) else None
    return ModelInfo(label, is_ntm, has_denoiser=bool(is_ntm and (index.get("denoiser") or [None])[0]),
                     gaussian_only=bool(is_ntm and transporter.get("num_blocks", 1) == 0), dataset=dataset,
                     vocabulary=caption_vocabulary(dataset), guidance_scale=default_guidance(folder),
                     num_candidates=int(sampling_default(folder, "num_candidates", CANDIDATES_RANGE, 1, integer=True))
                     if is_ntm else 1)


def trajectory_lengths(folder: str) -> str:
    """What an NTM's training says about the trajectory lengths K it can be scored at, in words for the K sliders:
    the K it trained at, or that it is still its flow-matching model (step 0 of its finetune), which trained at every
    noise level; "" when its records do not say. A denoiser's record points to the NTM it was distilled from."""
    def objective(r: RunFolder) -> str | None:  # older bundles have a config and no status
        return r.status().get("objective") or r.config().get("objective")

    run = next((r for r in lineage(folder) if objective(r) != "denoiser"), None)
    if run is None or objective(run) not in ("ntm", "gauss", "fm_to_ntm"):
        return ""
    if objective(run) == "fm_to_ntm" and not run.step():
        return "any K: still its flow-matching model (finetune step 0), trained at every noise level"
    ks = read_json(os.path.join(folder, "scheduler", "scheduler_config.json")).get("train_num_steps")
    if not isinstance(ks, list) or not ks:
        return ""
    return f"trained at K = {', '.join(str(k) for k in ks)} (other K: exact, but steps it never trained at)"


def sampling_default(folder: str, key: str, bounds: tuple, fallback: float, integer: bool = False) -> float:
    """A folder's measured best setting `key` (sampling_defaults.json), else `fallback`; a value the sliders cannot
    show (outside `bounds`, not a number, not whole where `integer`), or an unreadable file, falls back too."""
    value = read_json(os.path.join(folder, SAMPLING_DEFAULTS)).get(key)
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and bounds[0] <= value <= bounds[1]
          and (not integer or value == int(value)))
    return float(value) if ok else fallback


def default_guidance(folder: str) -> float:
    """The folder's measured best guidance scale, else DEFAULT_GUIDANCE (`sampling_default`)."""
    return sampling_default(folder, "guidance_scale", GUIDANCE_RANGE, DEFAULT_GUIDANCE)


class Registry:
    MAX_LOADED = 8  # pipelines kept in memory (15–35 MB each): a server whose users train job after job stays bounded

    def __init__(self):
        self._lock = threading.Lock()
        # real path of a model folder → (its model_index.json's mtime, the pipeline), least recently used first
        self._loaded: OrderedDict[str, tuple[float, object]] = OrderedDict()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"

    def choices(self, kind: str | None = None) -> list[str]:
        """Labels of the models that can do a tab's job (ModelInfo.can)."""
        found = discover()
        if kind is None:
            return list(found)
        return [label for label, folder in found.items() if model_info(label, folder).can(kind)]

    def info(self, label: str) -> ModelInfo:
        folder = self.folder(label)
        if folder is None:
            raise ValueError(f"no model named {label!r}; pick one from the list")
        return model_info(label, folder)

    def default(self, kind: str | None = None) -> str | None:
        labels = self.choices(kind)
        return DEFAULT_MODEL if DEFAULT_MODEL in labels else (labels[0] if labels else None)

    def folder(self, label: str) -> str | None:
        return discover().get(label) if label else None

    def get(self, label: str) -> NTMPipeline | FlowMatchingPipeline:
        folder = self.folder(label)
        if folder is None:
            raise ValueError(f"no model named {label!r}; pick one from the list")
        with self._lock:
            path, mtime = os.path.realpath(folder), os.path.getmtime(os.path.join(folder, MODEL_INDEX))
            if self._loaded.get(path, (None,))[0] != mtime:  # not loaded, or exported again since: (re)load
                self._loaded[path] = (mtime, load_pipeline(folder).to(self.device))
            self._loaded.move_to_end(path)
            while len(self._loaded) > self.MAX_LOADED:
                self._loaded.popitem(last=False)  # a caller still using it keeps its own reference
            return self._loaded[path][1]

    def get_ntm(self, label: str) -> NTMPipeline:
        pipe = self.get(label)
        if not isinstance(pipe, NTMPipeline):
            raise ValueError(f"{label} is a flow-matching model: this needs an NTM (exact likelihood)")
        return pipe

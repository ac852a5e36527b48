"""Pieces every tab uses: model pickers, seeds, input checks, display upscaling, output files, ZeroGPU, and errors
shown as gr.Error."""
from __future__ import annotations

import functools
import inspect
import math
import os
import random
import re
import shutil
import tempfile
import threading
import time

import gradio as gr
import numpy as np
from PIL import Image

from ntm_core.data import example_prompts

from .registry import DEFAULT_GUIDANCE, GUIDANCE_RANGE

try:  # on a Hugging Face ZeroGPU Space, GPU work must be decorated
    import spaces

    gpu = spaces.GPU
except ImportError:  # locally: a no-op
    def gpu(fn=None, **_):
        return fn if fn is not None else (lambda f: f)

EXAMPLE_PROMPTS = example_prompts("shapes")
DISPLAY = 256  # px: small model outputs are shown enlarged with nearest-neighbour (no blur)
MAX_PROMPT_CHARS = 500  # the encoder reads ≤ 32 tokens; longer text only costs memory
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer
# spaces.GPU(duration=…) per handler: its largest allowed request timed on the 2-core CPU, with headroom (a GPU runs
# them faster, so these are upper bounds; `python -m app.load_test --worst-case --out docs/worst-case-requests`,
# 2026-12-05: 10.1 s generate, 1.3 s latents, 58.3 s likelihood, 87.5 s likelihood of generated images; compare
# 2.2 s when last timed; tests/test_layout.py holds them to that table)
GPU_SECONDS = {"generate": 15, "compare": 10, "latents": 10, "likelihood": 70, "likelihood_generated": 100}
MODEL_WORK = dict(concurrency_id="model", concurrency_limit=2)  # one limit shared by every tab's model work
# a tab's first-open event has its own queue: on revisits it only skips, which must not wait (its outputs under the
# loading overlay: 90 s measured) behind others' model work; the work it does run is once per server and defaults
FIRST_OPEN = dict(concurrency_id="first-open", concurrency_limit=1)


def show(img, size: int = DISPLAY) -> Image.Image:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img)  # grey models
    scale = max(1, size // max(img.size))
    return img.resize((img.size[0] * scale, img.size[1] * scale), Image.Resampling.NEAREST)


def seed_inputs(randomize: bool = False) -> tuple[gr.Number, gr.Checkbox]:
    return (gr.Number(value=0, precision=0, minimum=0, label="Seed"),
            gr.Checkbox(value=randomize, label="Randomize seed"))


def pick_seed(seed, randomize: bool) -> int:
    return random.randint(0, 2**31 - 1) if randomize or seed is None else int(seed)


# ---- input checks: one function per kind of input, returning the problem in words or None ----
def number_problem(value, lo: float, hi: float, name: str, integer: bool = False) -> str | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return f"{name} must be a number"
    if not math.isfinite(v) or not lo <= v <= hi:
        return f"{name} must be between {lo:g} and {hi:g}"
    if integer and v != int(v):
        return f"{name} must be a whole number"
    return None


def seed_problem(seed, randomize: bool = False) -> str | None:
    if randomize:
        return None
    if seed is None:
        return "give a seed (or tick Randomize seed)"
    return number_problem(seed, 0, MAX_SEED, "Seed", integer=True)


def prompt_problem(prompt) -> str | None:
    if not isinstance(prompt, str) or not prompt.strip():
        return "write a prompt (the text to draw)"
    if len(prompt) > MAX_PROMPT_CHARS:
        return f"the prompt has {len(prompt):,} characters; at most {MAX_PROMPT_CHARS} (the encoder reads 32 tokens)"
    return None


def guidance_problem(guidance) -> str | None:
    return number_problem(guidance, *GUIDANCE_RANGE, "Guidance scale")


def guidance_update(registry, label) -> dict:
    """The guidance slider for a model: its measured best (sampling_defaults.json) or the default."""
    if model_problem(registry, label) is not None:
        return gr.update()
    value = registry.info(label).guidance_scale
    return gr.update(value=value, info=None if value == DEFAULT_GUIDANCE else "this model's measured best")


def guidance_slider(registry, model: gr.Dropdown, follow: bool = True) -> gr.Slider:
    """A tab's guidance slider: it starts at, and (follow) follows, the picked model's guidance_update."""
    known = model_problem(registry, model.value) is None
    slider = gr.Slider(*GUIDANCE_RANGE, value=registry.info(model.value).guidance_scale if known else DEFAULT_GUIDANCE,
                       step=0.5, label="Guidance scale")
    if follow:
        model.change(lambda m: guidance_update(registry, m), model, slider, api_name=False, queue=False)
    return slider


def model_problem(registry, label, kind: str | None = None) -> str | None:
    if not isinstance(label, str) or registry.folder(label) is None:
        return "pick a model from the list"
    if not registry.info(label).can(kind):
        return {"ntm": f"{label} has no exact likelihood (flow matching): pick an NTM",
                "denoiser": f"{label} has no learned denoiser to compare with: pick a model that has one"}[kind]
    return None


def validations(problems: list[str | None]):
    """gr.validate objects for an event's `validator`: a bad input is marked where it is, before the event runs,
    so no output is touched (or badged)."""
    return [gr.validate(p is None, p or "") for p in problems]


def first_open_handler(fn, n_outputs: int, files: OutputFiles | None = None, max_kept: int = 16):
    """The event handler of `run_on_first_open`: (shown value, *inputs) → outputs. Every visitor's first open runs
    with the tab's defaults (seed 0), so the outputs are the same for all of them: they are worked out once per
    distinct set of inputs (the `max_kept` most recent kept) and handed out again, their files moved out of the
    pruned output folders (`OutputFiles.keep`). fn must be a function of its inputs alone; a call that raises keeps
    nothing."""
    takes_progress = "progress" in inspect.signature(fn).parameters
    results: dict[str, tuple] = {}
    lock = threading.Lock()

    def first(shown_value, *args, progress=gr.Progress()):
        if shown_value:
            return [gr.skip()] * n_outputs
        key = repr(args)
        with lock:
            if key in results:
                return results[key]
        out = fn(*args, progress=progress) if takes_progress else fn(*args)
        out = (files or OUTPUTS).keep(out)
        with lock:
            results[key] = out
            while len(results) > max_kept:
                results.pop(next(iter(results)))
        return out

    return first


def run_on_first_open(tab: gr.Tab, fn, inputs: list, outputs: list, shown: gr.Gallery | gr.Image,
                      show_progress: str = "minimal") -> None:
    """Run a tab's work with its inputs as they stand the first time a visitor opens the tab, so it opens on a
    result (as Generate opens on its example grid) rather than on empty panels; the result is worked out once and
    handed to later visitors (`first_open_handler`). `shown`, one of the outputs, is empty until something ran:
    once it is not, a visit keeps what is shown. A fn with a `progress` parameter gets the event's tracker, so
    longer work (show_progress="full") shows its progress bar."""
    tab.select(first_open_handler(fn, len(outputs)), [shown, *inputs], outputs, api_name=False,
               show_progress=show_progress, **FIRST_OPEN)


def validator(problems, registry):
    """An event's `validator` from a tab's problems(registry, *inputs) function."""
    return lambda *inputs: validations(problems(registry, *inputs))


def raise_problems(problems: list[str | None]) -> None:
    """The same checks inside the handler, for callers that bypass the queue's validator."""
    found = [p for p in problems if p]
    if found:
        raise ValueError("; ".join(found))


# ---- output files: PNGs and CSVs a user downloads, in one folder that is pruned as it grows ----
class OutputFiles:
    """Each call's files in a fresh subfolder (names stay readable: prompt and seed, never clashing), removed
    after `max_age` seconds; gradio serves its own copies, which Blocks(delete_cache=…) removes.

    A folder made with keep=True is never removed: it holds files the app hands out again later (the example grid
    every visitor's page opens on). Gradio re-copies a served file from its source once its own copy is deleted,
    so a pruned source would show as a broken image for every later visitor."""

    KEPT = "kept"

    def __init__(self, root: str | None = None, max_age: float = 3600.0):
        self.root = root or os.path.join(tempfile.gettempdir(), f"ntm-studio-{os.getpid()}")
        self.max_age = max_age
        self._lock = threading.Lock()

    def new_folder(self, keep: bool = False) -> str:
        with self._lock:
            kept = os.path.join(self.root, self.KEPT)
            os.makedirs(kept, exist_ok=True)
            now = time.time()
            for name in os.listdir(self.root):
                path = os.path.join(self.root, name)
                if name != self.KEPT and now - os.path.getmtime(path) > self.max_age:
                    shutil.rmtree(path, ignore_errors=True)
            return tempfile.mkdtemp(dir=kept if keep else self.root)

    def keep(self, value):
        """value (nested lists and tuples) with each file it names from a pruned folder of this root copied into a
        kept folder (one per source folder, so names stay apart), so it can be handed out again after the prune;
        the rest as it was."""
        folders: dict[str, str] = {}
        root = os.path.abspath(self.root)

        def kept(v):
            if isinstance(v, (list, tuple)):
                return type(v)(kept(x) for x in v)
            if not (isinstance(v, str) and os.path.isfile(v)):
                return v
            path = os.path.abspath(v)
            if os.path.commonpath([path, root]) != root or os.path.relpath(path, root).split(os.sep)[0] == self.KEPT:
                return v  # not an output file, or one already kept
            source = os.path.dirname(path)
            if source not in folders:
                folders[source] = self.new_folder(keep=True)
            return shutil.copy2(path, os.path.join(folders[source], os.path.basename(path)))

        return kept(value)

    def png(self, folder: str, image: Image.Image, stem: str) -> str:
        path = os.path.join(folder, f"{slug(stem)}.png")
        image.save(path)
        return path

    def csv(self, df, stem: str) -> str:
        path = os.path.join(self.new_folder(), f"{slug(stem)}.csv")
        df.to_csv(path, index=False)
        return path


OUTPUTS = OutputFiles()


def slug(text: str, limit: int = 60) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "image"


def user_errors(fn):
    """Bad input and missing models reach the user as a message, never as a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            raise gr.Error(str(e)) from e

    return wrapper


def model_picker(registry, label: str = "Model", kind: str | None = None, **kw) -> gr.Dropdown:
    """Lists the models that can do the tab's job; a model trained after the app started is accepted too (the
    registry checks every label, so a custom value never reaches a path)."""
    choices = registry.choices(kind)
    return gr.Dropdown(choices=choices, value=registry.default(kind), label=label, allow_custom_value=True,
                       info=kw.pop("info", "bundled models, and any finished training run"), **kw)


def vocabulary_note(registry, prompt, model, scoring: bool = False):
    """A note, shown only when needed, on the words of `prompt` (one or several lines) the model's training captions
    never used (`scoring`: worded for likelihoods under the prompt rather than drawing it)."""
    if model_problem(registry, model) is not None or not isinstance(prompt, str):
        return gr.update(visible=False)
    note = registry.info(model).vocabulary_note(prompt, scoring)
    return gr.update(value=note, visible=bool(note))


def refresh_pickers(demo, tabs: gr.Tabs, registry, pickers: list[tuple[gr.Dropdown, str | None]]) -> None:
    """Re-read the model list whenever a page loads and whenever the user changes tabs, so a job that finished
    while the page was open is in the pickers when the user turns to them: no restart, no reload."""
    def update():  # one read of the model list per kind of picker (it reads every model's files)
        choices = {kind: registry.choices(kind) for kind in {kind for _, kind in pickers}}
        return [gr.Dropdown(choices=choices[kind]) for _, kind in pickers]

    gr.on([demo.load, tabs.select], update, outputs=[p for p, _ in pickers], api_name=False, queue=False,
          show_progress="hidden")

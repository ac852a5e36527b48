"""Pieces every tab uses: model pickers, seeds, display upscaling, ZeroGPU, and errors shown as gr.Error."""
from __future__ import annotations

import functools
import random

import gradio as gr
import numpy as np
from PIL import Image

from ntm_core.data.shapes import ShapesDataset

try:  # on a Hugging Face ZeroGPU Space, GPU work must be decorated
    import spaces

    gpu = spaces.GPU
except ImportError:  # locally: a no-op
    def gpu(fn=None, **_):
        return fn if fn is not None else (lambda f: f)

EXAMPLE_PROMPTS = [ShapesDataset("test", seed=s)[0]["caption"] for s in range(6)] + [
    "a red circle", "two green triangles", "a blue square to the left of a yellow circle"]
DISPLAY = 256  # px: small model outputs are shown enlarged with nearest-neighbour (no blur)


def show(img, size: int = DISPLAY) -> Image.Image:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img)  # grey models
    scale = max(1, size // max(img.size))
    return img.resize((img.size[0] * scale, img.size[1] * scale), Image.Resampling.NEAREST)


def pick_seed(seed, randomize: bool) -> int:
    return random.randint(0, 2**31 - 1) if randomize or seed is None else int(seed)


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


def model_picker(registry, label: str = "Model", kind: str | None = None) -> gr.Dropdown:
    choices = registry.choices(kind)
    return gr.Dropdown(choices=choices, value=registry.default(kind), label=label,
                       info="bundled models, and any finished training run")


def refresh_pickers(demo, registry, pickers: list[tuple[gr.Dropdown, str | None]]) -> None:
    """Re-read the model list whenever a page loads, so finished jobs appear without a restart."""
    def update():
        return [gr.Dropdown(choices=registry.choices(kind)) for _, kind in pickers]

    demo.load(update, outputs=[p for p, _ in pickers], api_name=False)

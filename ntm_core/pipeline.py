"""Pipelines (diffusers DiffusionPipeline): what the app, the analysis scripts and a Python user call.

    pipe = NTMPipeline.from_pretrained("assets/ntm-shapes32")          # offline: a local folder
    images = pipe("a red circle to the left of a blue square", num_inference_steps=4, guidance_scale=3.0,
                  generator=torch.Generator().manual_seed(0)).images
    nll = pipe.log_likelihood(images, "a red circle to the left of a blue square")

The text encoder is not stored in the folder: its config names it (MiniLM from its package by default) and it is
loaded once per process.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput

from .conditioning import TextEmbedding
from .data.imagefolder import load_image
from .denoiser import Denoiser
from .flow_matching import euler_sample, gaussian_sample
from .model import NTM, NTMSample, TrajectoryNLL
from .predictor import Predictor
from .text import get_text_encoder
from .trajectory import TrajectorySchedule, time_grid
from .transporter import Transporter, as_hw

DENOISE_MODES = ("learned", "score", "none")
LIKELIHOOD_REFERENCE = "likelihood_reference.json"  # optional: a model's in-distribution bits/dim, for the app


@dataclass
class GenerationOutput(BaseOutput):
    """log_prob (return_log_prob=True): log p(τ) in nats of each image's sampled trajectory [B], and `nll` its
    parts (TrajectoryNLL: bits/dim of the trajectory, the bound on x_{t_0}, the 8-bit bound where it exists)."""

    images: list | np.ndarray | torch.Tensor
    seconds: float
    trajectory: NTMSample | None = None
    log_prob: torch.Tensor | None = None
    nll: TrajectoryNLL | None = None


class _TextToImagePipeline(DiffusionPipeline):
    """Prompt handling and output conversion shared by the NTM and the flow-matching pipelines."""

    def _check_config(self):
        self.image_processor = VaeImageProcessor(do_resize=False, do_normalize=True)

    @property
    def text_dim(self) -> int:
        return int(self.predictor.config.text_dim)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return (self.predictor.config.in_channels, *as_hw(self.predictor.config.sample_size))

    @property
    def text_encoder(self):
        if not self.text_dim:
            return None
        enc = get_text_encoder(self.config.text_encoder_path, self.config.text_max_length)
        if enc.dim != self.text_dim:
            raise ValueError(f"text encoder gives {enc.dim}-d embeddings, the model expects {self.text_dim}")
        return enc

    def encode_prompt(self, prompt, num_images_per_prompt: int = 1, batch_size: int | None = None):
        """→ (TextEmbedding or None, batch size). Unconditional models take no prompt."""
        if not self.text_dim:
            if prompt not in (None, "", []):
                raise ValueError("this model is unconditional: it takes no prompt")
            return None, (batch_size or 1) * num_images_per_prompt
        if prompt is None:
            raise ValueError("this model needs a prompt")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or any(not str(p).strip() for p in prompts):
            raise ValueError("empty prompt: describe the image to generate")
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        text = self.text_encoder.encode(prompts)
        dtype = next(self.predictor.parameters()).dtype
        return text.to(device=self.device, dtype=dtype), len(prompts)

    def null_text(self, batch_size: int) -> TextEmbedding | None:
        """The null prompt ("no text", the unconditional model) for a batch; None for unconditional models."""
        if not self.text_dim:
            return None
        dtype = next(self.predictor.parameters()).dtype
        return self.text_encoder.encode([""] * batch_size).to(device=self.device, dtype=dtype)  # "" = no text

    def postprocess(self, images: torch.Tensor, output_type: str):
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        return self.image_processor.postprocess(images.float().clamp(-1, 1), output_type=output_type)


class NTMPipeline(_TextToImagePipeline):
    _optional_components = ["denoiser"]

    def __init__(self, transporter: Transporter, predictor: Predictor, scheduler: TrajectorySchedule,
                 denoiser: Denoiser | None = None, text_encoder_path: str = "minilm", text_max_length: int = 32):
        super().__init__()
        self.register_modules(transporter=transporter, predictor=predictor, scheduler=scheduler, denoiser=denoiser)
        self.register_to_config(text_encoder_path=text_encoder_path, text_max_length=text_max_length)
        self._check_config()

    @property
    def ntm(self) -> NTM:
        return NTM(self.transporter, self.predictor, self.scheduler)

    @torch.no_grad()
    def __call__(self, prompt=None, num_inference_steps: int = 4, guidance_scale: float = 1.0,
                 temperature: float = 1.0, generator: torch.Generator | None = None, denoise: str | None = None,
                 output_type: str = "pil", return_trajectory: bool = False, num_images_per_prompt: int = 1,
                 batch_size: int | None = None, return_log_prob: bool = False) -> GenerationOutput:
        """denoise: 'learned' (the self-distilled denoiser on u at t_min: no inverse, no gradient), 'score'
        (Tweedie with the exact trajectory score), 'none' (x at t_min as sampled). Default: learned if the
        folder has a denoiser, else score.

        return_log_prob: the exact log p(τ) of each sampled trajectory (of the guided model when
        guidance_scale ≠ 1), from the sampler's own z, log σ and the inverse's log-dets: no extra network pass,
        but every step's state is inverted (the learned denoiser alone would invert none)."""
        denoise = denoise or ("learned" if self.denoiser is not None else "score")
        if denoise not in DENOISE_MODES:
            raise ValueError(f"denoise must be one of {DENOISE_MODES}, got {denoise!r}")
        if denoise == "learned" and self.denoiser is None:
            raise ValueError("this model has no learned denoiser: use denoise='score' or 'none'")
        text, n = self.encode_prompt(prompt, num_images_per_prompt, batch_size)
        start = time.perf_counter()
        model = self.ntm
        traj = return_trajectory or denoise == "score"
        out = model.sample(n, text, num_inference_steps, guidance_scale, temperature, generator,
                           return_trajectory=traj, invert=denoise != "learned" or traj,
                           return_log_prob=return_log_prob)
        if denoise == "learned":
            images = self.denoiser(out.u_final, text)
        elif denoise == "score":
            images = model.denoise_with_score(out.x, out.grid, text)
        else:
            images = out.images
        seconds = time.perf_counter() - start
        return GenerationOutput(images=self.postprocess(images, output_type), seconds=seconds,
                                trajectory=out if return_trajectory else None, log_prob=out.log_prob, nll=out.nll)

    def preprocess(self, images) -> torch.Tensor:
        """Tensors in [−1, 1] pass through; PIL images, arrays or paths are converted, resized, centre-cropped."""
        c, h, w = self.sample_shape
        if isinstance(images, torch.Tensor):
            x = images if images.dim() == 4 else images[None]
            if tuple(x.shape[1:]) != (c, h, w):
                raise ValueError(f"expected images of shape [B, {c}, {h}, {w}], got {list(x.shape)}")
        else:
            items = images if isinstance(images, (list, tuple)) else [images]
            if h != w:
                raise ValueError("non-square models take tensors")
            x = torch.stack([load_image(im if not isinstance(im, np.ndarray) else _pil(im), h, c) for im in items])
        return x.to(device=self.device, dtype=next(self.predictor.parameters()).dtype)

    @torch.no_grad()
    def log_likelihood(self, images, prompt=None, num_inference_steps: int = 4, num_trajectories: int = 1,
                       generator: torch.Generator | None = None) -> list[TrajectoryNLL]:
        """Exact −log p(τ) of forward trajectories from each image, one TrajectoryNLL per trajectory draw.
        A single prompt applies to every image; a list gives one prompt per image."""
        x = self.preprocess(images)
        if self.text_dim and isinstance(prompt, str):
            prompt = [prompt] * x.shape[0]
        text, n = self.encode_prompt(prompt, 1, x.shape[0])
        if n != x.shape[0]:
            raise ValueError(f"{x.shape[0]} images but {n} prompts")
        return [self.ntm.nll(x, text, num_inference_steps, generator) for _ in range(num_trajectories)]


    @torch.no_grad()
    def prompt_nll(self, images, prompts: list[str], num_inference_steps: int = 4, num_trajectories: int = 1,
                   generator: torch.Generator | None = None, batch_size: int = 256) -> torch.Tensor:
        """Zero-shot scores: the bound on −log₂ p(x_{t_0} | prompt) per dimension of every image under every
        candidate prompt, [N images, P prompts, T trajectories]. Each forward trajectory is drawn once per image
        and scored under every prompt (common random numbers), so differences between prompts come from the
        prompts alone; by Bayes' rule with a uniform prior, the most likely prompt has the lowest value."""
        x = self.preprocess(images)
        if not self.text_dim:
            raise ValueError("this model is unconditional: there are no prompts to rank")
        if not prompts:
            raise ValueError("give at least one candidate prompt")
        text = self.encode_prompt(list(prompts))[0]  # [P]
        model = self.ntm
        width = self.scheduler.dequantization_width
        n, p = x.shape[0], len(prompts)
        out = torch.empty(n, p, num_trajectories)
        per = max(1, batch_size // p)  # images per forward call (each repeated for every prompt)
        for j in range(num_trajectories):
            # one trajectory per image, shared by all prompts
            states, grid = model.forward_trajectory(x, num_inference_steps, generator)
            for i in range(0, n, per):
                s = states[i : i + per]
                b = s.shape[0]
                nll = model.trajectory_nll(s.repeat_interleave(p, 0), grid, _tile(text, b),
                                           dequantization_width=width)
                out[i : i + b, :, j] = nll.bound_bits_per_dim.reshape(b, p).float().cpu()
        return out


def _tile(text: TextEmbedding, times: int) -> TextEmbedding:
    """[P] prompts → [times·P], prompt-major within each repetition (image i's P rows are contiguous)."""
    return TextEmbedding.cat([text] * times)


def _pil(arr: np.ndarray):
    from PIL import Image

    return Image.fromarray(arr)


class FlowMatchingPipeline(_TextToImagePipeline):
    """The flow-matching baseline: a velocity predictor and diffusers' FlowMatchEulerDiscreteScheduler."""

    def __init__(self, predictor: Predictor, scheduler: FlowMatchEulerDiscreteScheduler,
                 text_encoder_path: str = "minilm", text_max_length: int = 32):
        super().__init__()
        self.register_modules(predictor=predictor, scheduler=scheduler)
        self.register_to_config(text_encoder_path=text_encoder_path, text_max_length=text_max_length)
        self._check_config()

    @torch.no_grad()
    def __call__(self, prompt=None, num_inference_steps: int = 50, guidance_scale: float = 1.0,
                 generator: torch.Generator | None = None, output_type: str = "pil", num_images_per_prompt: int = 1,
                 batch_size: int | None = None, sampler: str = "euler", t_min: float = 0.05) -> GenerationOutput:
        """sampler: 'euler' (the ODE, diffusers' scheduler) or 'gaussian' (K posterior steps down to t_min)."""
        text, n = self.encode_prompt(prompt, num_images_per_prompt, batch_size)
        start = time.perf_counter()
        shape = (n, *self.sample_shape)
        if sampler == "euler":
            images = euler_sample(self.predictor, shape, num_inference_steps, text, guidance_scale, generator,
                                  self.scheduler)
        elif sampler == "gaussian":
            grid = time_grid(num_inference_steps, t_min, dtype=next(self.predictor.parameters()).dtype)
            images = gaussian_sample(self.predictor, shape, grid, text, generator)
        else:
            raise ValueError(f"sampler must be 'euler' or 'gaussian', got {sampler!r}")
        return GenerationOutput(images=self.postprocess(images, output_type), seconds=time.perf_counter() - start)


def load_pipeline(path: str, **kwargs):
    """Either pipeline, from the class named in the folder's model_index.json."""
    import json
    import os

    index = os.path.join(path, "model_index.json")
    if not os.path.exists(index):
        raise FileNotFoundError(f"no model folder at {path} (model_index.json is missing)")
    with open(index) as f:
        name = json.load(f).get("_class_name")
    classes = {"NTMPipeline": NTMPipeline, "FlowMatchingPipeline": FlowMatchingPipeline}
    if name not in classes:
        raise ValueError(f"{path}: unknown pipeline class {name!r}")
    kwargs.setdefault("dtype", torch.float32)  # bundles may store bf16/fp16 weights: compute in float32
    try:
        return classes[name].from_pretrained(path, **kwargs)
    except Exception as e:  # diffusers / safetensors raise many kinds for a damaged folder
        raise ValueError(f"cannot load the model in {path}: {e}") from e


__all__ = ["NTMPipeline", "FlowMatchingPipeline", "GenerationOutput", "load_pipeline", "TextEmbedding"]

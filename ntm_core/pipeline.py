"""Pipelines (diffusers DiffusionPipeline): what the app, the analysis scripts and a Python user call.

    pipe = NTMPipeline.from_pretrained("assets/ntm-shapes32")          # offline: a local folder
    images = pipe("a red circle to the left of a blue square", num_inference_steps=4, guidance_scale=3.0,
                  generator=torch.Generator().manual_seed(0)).images
    nll = pipe.log_likelihood(images, "a red circle to the left of a blue square")

Outputs: output_type 'pil', 'np' or 'pt' (diffusers' conventions, [0, 1]) or 'model' (tensors in the models' own
[−1, 1] scaling, what the likelihood and the evaluator take back). `generator` may be a list with one generator per
image: image i is then the image a single call with generator i draws (each seed reproducible on its own).

The text encoder is not stored in the folder: its config names it (MiniLM from its package by default) and it is
loaded once per process.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput

from .conditioning import TextEmbedding
from .denoiser import Denoiser
from .flow_matching import euler_sample, gaussian_sample
from .images import load as load_image
from .model import NTM, NTMSample, TrajectoryNLL, _repeat
from .predictor import Predictor
from .text import get_text_encoder
from .trajectory import TrajectorySchedule, time_grid
from .transporter import Transporter

DENOISE_MODES = ("learned", "score", "none")
OUTPUT_TYPES = ("pil", "np", "pt", "model")
MODEL_INDEX = DiffusionPipeline.config_name  # model_index.json: a pipeline folder's class and components
LIKELIHOOD_REFERENCE = "likelihood_reference.json"  # optional: a model's in-distribution bits/dim, for the app


def default_final_step(has_denoiser: bool) -> str:
    """The final step a call runs when it names none: the learned denoiser where the model has one, else the score."""
    return "learned" if has_denoiser else "score"


def model_index(path: str) -> dict | None:
    """What a pipeline folder's model_index.json says (pipeline class, components); None when it has none or it
    cannot be read."""
    try:
        with open(os.path.join(path, MODEL_INDEX)) as f:
            index = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return index if isinstance(index, dict) else None


@dataclass
class GenerationOutput(BaseOutput):
    """log_prob (return_log_prob=True): log p(τ) in nats of each image's sampled trajectory [B], and `nll` its
    parts (TrajectoryNLL: bits/dim of the trajectory, the bound on x_{t_0}, the 8-bit bound where it exists)."""

    images: list | np.ndarray | torch.Tensor
    seconds: float
    trajectory: NTMSample | None = None
    log_prob: torch.Tensor | None = None
    nll: TrajectoryNLL | None = None
    candidate_log_prob: torch.Tensor | None = None  # num_candidates > 1: log p(τ | prompt) of every candidate [B, C]


class _TextToImagePipeline(DiffusionPipeline):
    """Prompt handling and output conversion shared by the NTM and the flow-matching pipelines."""

    def _check_config(self):
        self.image_processor = VaeImageProcessor(do_resize=False, do_normalize=True)

    @property
    def text_dim(self) -> int:
        return int(self.predictor.config.text_dim)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return self.predictor.patches.shape

    @property
    def text_encoder(self):
        if not self.text_dim:
            return None
        enc = get_text_encoder(self.config.text_encoder_path, self.config.text_max_length)
        if enc.dim != self.text_dim:
            raise ValueError(f"text encoder gives {enc.dim}-d embeddings, the model expects {self.text_dim}")
        return enc

    def encode_prompt(self, prompt, num_images_per_prompt: int = 1, batch_size: int | None = None,
                      prompt_embeds: TextEmbedding | None = None):
        """→ (TextEmbedding or None, batch size). Unconditional models take no prompt.

        prompt_embeds (instead of prompt, as in diffusers): text already embedded, e.g. `encode_prompt(...)[0]` with
        a part of it changed; each row serves num_images_per_prompt images."""
        if not self.text_dim:
            if prompt not in (None, "", []) or prompt_embeds is not None:
                raise ValueError("this model is unconditional: it takes no prompt")
            return None, (batch_size or 1) * num_images_per_prompt
        if prompt_embeds is not None:
            if prompt is not None:
                raise ValueError("give prompt or prompt_embeds, not both")
            if not isinstance(prompt_embeds, TextEmbedding) or prompt_embeds.pooled.shape[-1] != self.text_dim:
                raise ValueError(f"prompt_embeds must be a TextEmbedding of {self.text_dim}-d text "
                                 "(what encode_prompt returns)")
            dtype = next(self.predictor.parameters()).dtype
            text = prompt_embeds.repeat_interleave(num_images_per_prompt).to(device=self.device, dtype=dtype)
            return text, text.batch_size
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

    @staticmethod
    def check_generators(generator, batch_size: int):
        """One generator, or a list of one per image (diffusers' randn_tensor rule)."""
        if isinstance(generator, (list, tuple)):
            if len(generator) != batch_size:
                raise ValueError(f"got {len(generator)} generators for {batch_size} images: give one per image")
            return list(generator)
        return generator

    @staticmethod
    def check_output_type(output_type: str) -> None:
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")

    def postprocess(self, images: torch.Tensor, output_type: str):
        images = images.float().clamp(-1, 1)
        if output_type == "model":
            return images
        return self.image_processor.postprocess(images, output_type=output_type)


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
                 temperature: float = 1.0, generator: torch.Generator | list[torch.Generator] | None = None,
                 denoise: str | None = None, output_type: str = "pil", return_trajectory: bool = False,
                 num_images_per_prompt: int = 1, batch_size: int | None = None,
                 return_log_prob: bool = False, num_candidates: int = 1,
                 prompt_embeds: TextEmbedding | None = None) -> GenerationOutput:
        """denoise, the final step: 'learned' (the self-distilled denoiser on u at t_min: no inverse, no gradient),
        'score' (Tweedie with the exact trajectory score), 'none' (x at t_min as sampled). Default: learned if the
        folder has a denoiser, else score.

        return_log_prob: the exact log p(τ) of each sampled trajectory (of the guided model when
        guidance_scale ≠ 1), from the sampler's own z, log σ and the inverse's log-dets: no extra network pass,
        but every step's state is inverted (the learned denoiser alone would invert none).

        num_candidates: draw this many trajectories per image and keep the one the model finds most likely, by the
        exact log p(τ | prompt) of the conditional model without guidance (`candidate_log_prob`, [B, num_candidates]);
        the final step runs on the kept ones only. The images are then a selection, no longer samples of the model.
        With a list of generators, image i's candidates all come from generator i (so image i is still what a
        single call with generator i draws).

        prompt_embeds: the text already embedded instead of the prompt (`encode_prompt`), as in diffusers."""
        denoise = self.final_step(denoise)
        self.check_output_type(output_type)
        if not isinstance(num_candidates, int) or num_candidates < 1:
            raise ValueError(f"num_candidates must be a whole number ≥ 1, got {num_candidates!r}")
        text, n = self.encode_prompt(prompt, num_images_per_prompt, batch_size, prompt_embeds)
        generator = self.check_generators(generator, n)
        start = time.perf_counter()
        model = self.ntm
        whole = return_trajectory or return_log_prob or denoise == "score"
        ranked = None
        if num_candidates == 1:
            latents = model.sample_latents(n, text, num_inference_steps, guidance_scale, temperature, generator)
            decoded = model.decode(latents, text, trajectory=whole) if whole or denoise == "none" else None
        else:
            latents, decoded, ranked = self._most_likely(model, text, n, num_candidates, num_inference_steps,
                                                         guidance_scale, temperature, generator)
        # the one place the final step is decided: what turns the sample into an image
        if denoise == "learned":
            images = self.denoiser(latents.u_final, text)
        elif denoise == "score":
            images = model.denoise_with_score(decoded.x, decoded.grid, text)
        else:
            images = decoded.images
        seconds = time.perf_counter() - start
        nll = decoded.nll if return_log_prob else None
        return GenerationOutput(images=self.postprocess(images, output_type), seconds=seconds,
                                trajectory=decoded if return_trajectory else None,
                                log_prob=None if nll is None else nll.log_prob, nll=nll, candidate_log_prob=ranked)

    def _most_likely(self, model: NTM, text, n: int, c: int, steps: int, guidance_scale: float, temperature: float,
                     generator):
        """c candidate trajectories per image in one batch, each decoded whole; keeps per image the one of highest
        exact log p(τ | prompt) without guidance (`unguided_nll`: from the sampler's own passes, none extra).
        → (kept latents, kept decoded sample, every candidate's log p(τ | prompt) [n, c])."""
        text_c = _repeat(text, c)
        if isinstance(generator, list):  # image i's candidates: rows i·c … i·c + c − 1, all from generator i
            generator = [g for g in generator for _ in range(c)]
        latents = model.sample_latents(n * c, text_c, steps, guidance_scale, temperature, generator)
        candidates = model.decode(latents, text_c, trajectory=True)
        ranked = candidates.unguided_nll.log_prob.float().view(n, c)
        keep = torch.arange(n, device=ranked.device) * c + ranked.argmax(1)
        return latents.rows(keep), candidates.rows(keep), ranked.cpu()

    def final_step(self, denoise: str | None) -> str:
        """The final step a call runs: the one asked for, or the folder's default (learned if it has a denoiser)."""
        denoise = denoise or default_final_step(self.denoiser is not None)
        if denoise not in DENOISE_MODES:
            raise ValueError(f"denoise must be one of {DENOISE_MODES}, got {denoise!r}")
        if denoise == "learned" and self.denoiser is None:
            raise ValueError("this model has no learned denoiser: use denoise='score' or 'none'")
        return denoise

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
            x = torch.stack([load_image(im, h, c) for im in items])
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
                 generator: torch.Generator | list[torch.Generator] | None = None, output_type: str = "pil",
                 num_images_per_prompt: int = 1, batch_size: int | None = None, sampler: str = "euler",
                 t_min: float = 0.05, denoise: str = "none", temperature: float = 1.0,
                 prompt_embeds: TextEmbedding | None = None) -> GenerationOutput:
        """sampler: 'euler' (the ODE, diffusers' scheduler, down to t = 0) or 'gaussian' (K posterior steps down to
        t_min on a grid with the scheduler's time shift, then with denoise='score' the Tweedie step x − t_min·v to
        the data, as NTM's score denoising).
        temperature scales the Gaussian sampler's step noise (as NTM's); the Euler ODE has none.
        prompt_embeds: the text already embedded instead of the prompt (`encode_prompt`), as in diffusers."""
        self.check_output_type(output_type)
        if denoise not in ("none", "score") or (denoise == "score" and sampler != "gaussian"):
            raise ValueError(f"denoise must be 'none', or 'score' with sampler='gaussian'; got {denoise!r}")
        if temperature != 1.0 and sampler != "gaussian":
            raise ValueError(f"temperature applies to sampler='gaussian' only (the Euler ODE is deterministic given "
                             f"its noise); got temperature={temperature!r} with sampler={sampler!r}")
        text, n = self.encode_prompt(prompt, num_images_per_prompt, batch_size, prompt_embeds)
        generator = self.check_generators(generator, n)
        start = time.perf_counter()
        shape = (n, *self.sample_shape)
        if sampler == "euler":
            images = euler_sample(self.predictor, shape, num_inference_steps, text, guidance_scale, generator,
                                  self.scheduler)
        elif sampler == "gaussian":
            # the folder's time shift places the Gaussian sampler's steps as it places the Euler steps
            grid = time_grid(num_inference_steps, t_min, self.scheduler.config.shift,
                             dtype=next(self.predictor.parameters()).dtype)
            images = gaussian_sample(self.predictor, shape, grid, text, generator, guidance_scale, denoise == "score",
                                     temperature)
        else:
            raise ValueError(f"sampler must be 'euler' or 'gaussian', got {sampler!r}")
        return GenerationOutput(images=self.postprocess(images, output_type), seconds=time.perf_counter() - start)


def load_pipeline(path: str, **kwargs):
    """Either pipeline, from the class named in the folder's model_index.json."""
    index = model_index(path)
    if index is None:
        raise FileNotFoundError(f"no model folder at {path} ({MODEL_INDEX} is missing or unreadable)")
    name = index.get("_class_name")
    classes = {"NTMPipeline": NTMPipeline, "FlowMatchingPipeline": FlowMatchingPipeline}
    if name not in classes:
        raise ValueError(f"{path}: unknown pipeline class {name!r}")
    kwargs.setdefault("dtype", torch.float32)  # bundles may store bf16/fp16 weights: compute in float32
    try:
        return classes[name].from_pretrained(path, **kwargs)
    except Exception as e:  # diffusers / safetensors raise many kinds for a damaged folder
        raise ValueError(f"cannot load the model in {path}: {e}") from e


__all__ = ["NTMPipeline", "FlowMatchingPipeline", "GenerationOutput", "load_pipeline", "model_index", "TextEmbedding"]

"""Given the exact velocity, every sampler draws the data: a check of the whole path from noise to a scored
image (time grids, the diffusers Euler scheduler, the posterior steps, NTM's decode and final steps, the output
conversion and the evaluator) that does not depend on any training.

The exact velocity of a finite image set {x⁽ⁱ⁾} under x_t = (1 − t)x_0 + tε is E[ε − x_0 | x_t] = (x_t − x̂_0)/t with
x̂_0 = Σ_i w_i x⁽ⁱ⁾, w ∝ exp(−‖x_t − (1 − t)x⁽ⁱ⁾‖² / 2t²). Its samples end on (or, at t_min without a final step,
within t_min·ε of) one of the images, which all show the same prompt, so the evaluator must accept every one.
A sampler that ran its grid the wrong way, mixed t with 1 − t, or lost a step would not land there.
"""
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from ntm_core.data.shapes_eval import check
from ntm_core.data.shapes import Spec, render
from ntm_core.images import from_uint8
from ntm_core.pipeline import FlowMatchingPipeline, NTMPipeline
from ntm_core.predictor import Predictor
from ntm_core.trajectory import TrajectorySchedule
from ntm_core.transporter import Transporter

SPEC = Spec("position", (("red", "circle"), ("blue", "square")), relation="left of")


class ExactVelocity(Predictor):
    """A Markov predictor whose velocity is the exact one of `images` (no network: the base class's Gaussian
    head turns it into each step's (μ, log σ), as for a trained velocity)."""

    def __init__(self, images: torch.Tensor):
        super().__init__(sample_size=images.shape[-1], in_channels=images.shape[1], patch_size=4, width=8, depth=0,
                         heads=1, markov=True, s_conditioning=False)
        self.register_buffer("data", images.double().flatten(1))

    def forward(self, u, t, s, text=None, cache=None):
        b, k = u.shape[:2]
        t = torch.as_tensor(t, dtype=u.dtype, device=u.device).expand(b, k)
        s = torch.as_tensor(s, dtype=u.dtype, device=u.device).expand(b, k)
        x, tt = u.flatten(2).double(), t.double()[..., None]  # [B, K, D], [B, K, 1]
        d2 = (x[:, :, None] - (1 - tt[..., None]) * self.data).pow(2).sum(-1)  # [B, K, N]
        x0 = torch.softmax(-d2 / (2 * tt**2), dim=-1) @ self.data
        v = ((x - x0) / tt).to(u.dtype).reshape(u.shape)
        return self.gaussian(u, t, s, v, torch.zeros_like(v))


@pytest.fixture(scope="module")
def images():
    return torch.stack([from_uint8(render(SPEC, np.random.default_rng([5, i]))[0]) for i in range(16)])


def assert_drawn(samples, images, tol):
    """Each sample is within `tol` (mean squared error) of an image of the set, the seeds do not all reach the
    same one, and the evaluator accepts every sample."""
    assert samples.shape == (6, 3, 32, 32)
    mse = (samples.double().flatten(1)[:, None] - images.double().flatten(1)).pow(2).mean(-1)  # [B, N]
    assert mse.min(1).values.max() < tol
    assert mse.argmin(1).unique().numel() > 1, "different seeds reach different images"
    assert all(check(SPEC, x) for x in samples), "the evaluator accepts every sample"


def test_flow_matching_euler_and_gaussian_samplers_draw_the_data(images):
    pipe = FlowMatchingPipeline(ExactVelocity(images), FlowMatchEulerDiscreteScheduler(shift=1.0))
    gens = [torch.Generator().manual_seed(i) for i in range(6)]
    euler = pipe(num_inference_steps=50, batch_size=6, generator=gens, output_type="model").images
    assert_drawn(euler, images, 1e-4)
    gens = [torch.Generator().manual_seed(i) for i in range(6)]
    gauss = pipe(num_inference_steps=4, batch_size=6, generator=gens, output_type="model", sampler="gaussian",
                 denoise="score").images
    assert_drawn(gauss, images, 1e-4)


@pytest.mark.parametrize("denoise,tol", [("score", 1e-3), ("none", 0.01)])
def test_ntm_with_identity_transporter_draws_the_data(images, denoise, tol):
    transporter = Transporter(sample_size=32, patch_size=4, num_blocks=1, layers_per_block=1, width=16, heads=2)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(transporter(x, 0.5)[0], x), "a fresh transporter is the identity (NTM_METHOD §5)"
    pipe = NTMPipeline(transporter, ExactVelocity(images), TrajectorySchedule(t_min=0.05))
    gens = [torch.Generator().manual_seed(i) for i in range(6)]
    out = pipe(num_inference_steps=4, batch_size=6, generator=gens, output_type="model", denoise=denoise).images
    assert_drawn(out, images, tol)

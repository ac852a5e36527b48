"""log p(τ) returned with every sample: assembled from the sampler's own prior draw, z, log σ and the inverse's
log-dets, it must equal the exact trajectory NLL re-evaluated on the returned trajectory (guided or not)."""
import pytest
import torch

from .conftest import random_text, small_ntm


@pytest.mark.parametrize("markov", [False, True])
@pytest.mark.parametrize("guidance,temperature", [(1.0, 1.0), (2.5, 1.0), (1.0, 0.6)])
def test_sampler_log_prob_equals_trajectory_nll(markov, guidance, temperature):
    model = small_ntm(markov=markov, std=0.1)
    text = random_text(3)
    out = model.sample(text=text, num_steps=4, guidance_scale=guidance, temperature=temperature,
                       generator=torch.Generator().manual_seed(1), return_trajectory=True)
    assert out.nll is not None and out.log_prob.shape == (3,)
    ref = model.trajectory_nll(out.x, out.grid, text, guidance_scale=guidance)
    assert out.nll.logdet.abs().min() > 1e-3, "the transporter must not be the identity here"
    for part in ("base", "log_sigma", "logdet", "prior", "forward_log_q"):
        assert torch.allclose(getattr(out.nll, part), getattr(ref, part), rtol=1e-8, atol=1e-8), part
    assert torch.allclose(out.log_prob, -ref.total, rtol=1e-10)
    # the conditional model's own density (no guidance), from the prompt half of the sampler's passes
    plain = model.trajectory_nll(out.x, out.grid, text)
    for part in ("base", "log_sigma", "logdet", "prior"):
        assert torch.allclose(getattr(out.unguided_nll, part), getattr(plain, part), rtol=1e-8, atol=1e-8), part
    if guidance != 1.0:  # the guided density is not the conditional one: the evaluation must follow the sampler
        assert (plain.total - ref.total).abs().min() > 1e-3


def test_sampler_log_prob_float32_relative_1e4():
    model = small_ntm(std=0.1).float()
    text = random_text(4)
    text = type(text)(text.tokens.float(), text.mask, text.pooled.float())
    out = model.sample(text=text, num_steps=4, guidance_scale=2.0, generator=torch.Generator().manual_seed(3),
                       return_trajectory=True)
    ref = model.trajectory_nll(out.x, out.grid, text, guidance_scale=2.0).total
    assert ((out.nll.total - ref).abs() / ref.abs()).max() < 1e-4


def test_sample_without_log_prob_is_unchanged():
    """Decoding the whole trajectory (for log p) changes nothing in what is drawn (same generator → same images)."""
    model = small_ntm()
    text = random_text(2)
    a = model.sample(text=text, num_steps=3, generator=torch.Generator().manual_seed(7))
    b = model.sample(text=text, num_steps=3, generator=torch.Generator().manual_seed(7), return_trajectory=True)
    assert a.nll is None and torch.allclose(a.images, b.images, atol=1e-12)

"""The predictor's masks over steps, the sampler's KV cache over steps, guidance, seeds and recorded trajectories."""
import pytest
import torch

from ntm_core.conditioning import TextEmbedding
from ntm_core.trajectory import time_grid

from .conftest import random_text, small_ntm


@pytest.mark.parametrize("markov", [False, True])
def test_step_masks(markov):
    model = small_ntm(markov=markov)
    u = torch.randn(2, 4, 3, 8, 8, dtype=torch.float64)
    t, s = time_grid(4, dtype=torch.float64)[1:].flip(0), time_grid(4, dtype=torch.float64)[:-1].flip(0)
    text = random_text(2)
    mu, _, _ = model.predictor(u, t, s, text)
    u2 = u.clone()
    u2[:, 1] += 1.0  # change the second-noisiest source state
    mu2, _, _ = model.predictor(u2, t, s, text)
    changed = [(mu2[:, j] - mu[:, j]).abs().max().item() > 1e-9 for j in range(4)]
    # block-causal: step j sees itself and every noisier step; Markov: itself only
    assert changed == ([False, True, False, False] if markov else [False, True, True, True])


@pytest.mark.parametrize("markov", [False, True])
def test_sampler_cache_matches_parallel_pass_and_nll(markov):
    model = small_ntm(markov=markov)
    text = random_text(2)
    out = model.sample(text=text, num_steps=4, generator=torch.Generator().manual_seed(0), return_trajectory=True)
    mu, log_sigma, _ = model.predictor(out.u[:, 1:].flip(1), out.grid[1:].flip(0), out.grid[:-1].flip(0), text)
    assert torch.allclose(mu, out.mu, atol=1e-10) and torch.allclose(log_sigma.exp(), out.sigma, atol=1e-10)
    nll = model.trajectory_nll(out.x, out.grid, text)  # the recorded x-states give back the sampler's own z
    assert torch.allclose(nll.base, 0.5 * out.z.flatten(2).pow(2).sum(-1), atol=1e-8)
    assert torch.allclose(out.images, out.x[:, 0])


def test_seed_reproducible_and_return_trajectory_consistent():
    model = small_ntm()
    text = random_text(2)
    a = model.sample(text=text, num_steps=3, generator=torch.Generator().manual_seed(5)).images
    b = model.sample(text=text, num_steps=3, generator=torch.Generator().manual_seed(5), return_trajectory=True)
    c = model.sample(text=text, num_steps=3, generator=torch.Generator().manual_seed(6)).images
    assert torch.allclose(a, b.images, atol=1e-10) and not torch.allclose(a, c)
    assert b.u.shape == (2, 4, 3, 8, 8) and b.mu.shape == b.sigma.shape == b.z.shape == (2, 3, 3, 8, 8)
    eps = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.allclose(b.x[:, -1], eps, atol=1e-8), "x at t = 1 is the prior draw"


def test_guidance_zero_is_unconditional_and_one_is_conditional():
    model = small_ntm(cross=False)
    model.transporter.text = None  # text only in the predictor, so the prompt's transporter equals the null's
    model.transporter.register_to_config(text_dim=0)
    text = random_text(2)
    run = lambda tx, w: model.sample(text=tx, num_steps=4, guidance_scale=w,  # noqa: E731
                                     generator=torch.Generator().manual_seed(1)).images
    assert torch.allclose(run(text, 0.0), run(text.null(), 1.0), atol=1e-10)
    assert torch.allclose(run(text, 1.0), run(text, 1.0)) and not torch.allclose(run(text, 1.0), run(text, 3.0))


def test_temperature_zero_is_deterministic_given_the_prior():
    model = small_ntm()
    out = model.sample(2, text=random_text(2), num_steps=4, temperature=0.0,
                       generator=torch.Generator().manual_seed(0), return_trajectory=True)
    assert torch.equal(out.z, torch.zeros_like(out.z))
    assert torch.allclose(out.u[:, :-1].flip(1), out.mu, atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [({"num_steps": 0}, "num_steps"), ({"batch_size": 3}, "batch_size")])
def test_bad_sampler_arguments(kwargs, match):
    model = small_ntm()
    with pytest.raises(ValueError, match=match):
        model.sample(text=random_text(2), **kwargs)


@pytest.mark.parametrize("steps", [1, 2, 16])
def test_any_step_count(steps):
    model = small_ntm()
    out = model.sample(text=random_text(2), num_steps=steps, generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 3, 8, 8) and torch.isfinite(out.images).all()
    assert out.grid.numel() == steps + 1


def test_sample_is_latents_then_decode():
    """The sampler's two verbs: reverse steps in u-space, then one inverse; decoding the whole trajectory gives the
    same image as decoding u at t_0 alone, and inverting u gives back the states f_T maps onto it."""
    model = small_ntm()
    text = random_text(2)
    latents = model.sample_latents(text=text, num_steps=3, guidance_scale=2.0,
                                   generator=torch.Generator().manual_seed(4))
    assert latents.u.shape == (2, 4, 3, 8, 8) and latents.z.shape == (2, 3, 3, 8, 8)
    final = model.decode(latents, text)
    whole = model.decode(latents, text, trajectory=True)
    assert final.x is None and final.nll is None
    assert torch.allclose(final.images, whole.images, atol=1e-10) and torch.allclose(whole.x[:, -1], latents.x1)
    same = model.sample(text=text, num_steps=3, guidance_scale=2.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(same.images, final.images)
    u_back, _ = model.transporter(whole.x[:, 1], whole.grid[1], text)
    assert torch.allclose(u_back, latents.u[:, 1], atol=1e-8)


def test_generator_list_draws_each_image_as_alone():
    model = small_ntm()
    text = random_text(3)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (1, 2, 3)]  # noqa: E731
    batch = model.sample(text=text, num_steps=2, generator=gens()).images
    for i, g in enumerate(gens()):
        one = TextEmbedding(text.tokens[i : i + 1], text.mask[i : i + 1], text.pooled[i : i + 1])
        alone = model.sample(text=one, num_steps=2, generator=g).images
        assert torch.allclose(batch[i], alone[0], atol=1e-10)


@pytest.mark.parametrize("markov", [False, True])
def test_sampling_from_a_given_trajectory_state(markov):
    """start_from=(states, k): the first K − k steps are the given trajectory's (their u and the z that reaches them,
    with the noisier given states as the predictor's history), the last k are sampled. k = 0 samples nothing, and the
    log p(τ) the sampler assembles is then the evaluation's trajectory_nll of the given trajectory — guided too —
    which a wrong history (cache) or a wrong z would break."""
    model = small_ntm(markov=markov)
    text = random_text(2)
    states, grid = model.forward_trajectory(torch.randn(2, 3, 8, 8, dtype=torch.float64), 4,
                                            torch.Generator().manual_seed(1))
    u_given, _ = model.transporter(states.flatten(0, 1), grid.repeat(2), text.repeat_interleave(5))
    u_given = u_given.unflatten(0, (2, 5))
    for g in (1.0, 3.0):
        lat = model.sample_latents(text=text, num_steps=4, guidance_scale=g, start_from=(states, 0))
        nll = model.decode(lat, text, trajectory=True).nll
        ref = model.trajectory_nll(states, grid, text, guidance_scale=g)
        assert torch.allclose(nll.total, ref.total, rtol=1e-8) and torch.allclose(lat.u, u_given, atol=1e-10)
    for k in (1, 3):
        gens = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
        lat = model.sample_latents(text=text, num_steps=4, generator=gens, start_from=(states, k))
        assert torch.allclose(lat.u[:, k:], u_given[:, k:], atol=1e-10)  # u[:, j] is the state at grid[j]
        assert all((lat.u[:, j] - u_given[:, j]).abs().max() > 1e-3 for j in range(k))  # sampled, not copied
        # the given steps' z reach exactly the given states; a sampled step is μ + σ·z
        sigma = lat.log_sigma.exp()
        assert torch.allclose(lat.mu + sigma * lat.z, lat.u[:, :-1].flip(1), atol=1e-10)
    with pytest.raises(ValueError, match="start step must be in 0..4"):
        model.sample_latents(text=text, num_steps=4, start_from=(states, 5))
    with pytest.raises(ValueError, match="num_steps \\+ 1 states"):
        model.sample_latents(text=text, num_steps=3, start_from=(states, 1))

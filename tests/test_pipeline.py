"""NTMPipeline: the call, its denoise modes and output types, log_likelihood, offline loading, clear errors."""
import io
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ntm_core.conditioning import TextEmbedding
from ntm_core.pipeline import load_pipeline

from .conftest import perturb_
from .train_helpers import ENV, run_tiny


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipe")
    ntm = run_tiny(out / "ntm", "train.steps=3")
    folder = run_tiny(out / "den", "objective=denoiser", f"init_from={ntm}", "train.steps=2")
    return load_pipeline(folder)


def test_call_modes_and_output_types(pipe):
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    pil = pipe("a red circle", num_inference_steps=4, guidance_scale=3.0, generator=g()).images
    assert len(pil) == 1 and pil[0].size == (16, 16) and pil[0].mode == "RGB"
    a = pipe("a red circle", num_inference_steps=4, guidance_scale=3.0, generator=g(), output_type="pt").images
    b = pipe("a red circle", num_inference_steps=4, guidance_scale=3.0, generator=g(), output_type="pt").images
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1, "seeded and in [0, 1]"
    outs = {d: pipe("a red circle", num_inference_steps=4, generator=g(), denoise=d, output_type="np").images
            for d in ("learned", "score", "none")}
    assert all(o.shape == (1, 16, 16, 3) for o in outs.values())
    assert not np.allclose(outs["score"], outs["none"]), "score denoising changes the image"
    many = pipe(["a red circle", "a blue square"], num_images_per_prompt=2, num_inference_steps=2,
                denoise="none", output_type="pt").images
    assert many.shape == (4, 3, 16, 16)


@pytest.mark.parametrize("denoise", ["learned", "score", "none"])
def test_one_generator_per_image_reproduces_each_seed_alone(pipe, denoise):
    """A batched call with a list of generators draws, for image i, the image a call with generator i alone draws;
    the guided model and log p(τ) included."""
    seeds, prompts = [3, 11, 5], ["a red circle", "a blue square", "a red circle"]
    kw = dict(num_inference_steps=3, guidance_scale=2.0, denoise=denoise, output_type="model", return_log_prob=True)
    batch = pipe(prompts, generator=[torch.Generator().manual_seed(s) for s in seeds], **kw)
    for i, (s, p) in enumerate(zip(seeds, prompts)):
        alone = pipe(p, generator=torch.Generator().manual_seed(s), **kw)
        assert torch.allclose(batch.images[i], alone.images[0], atol=1e-5), f"image {i} (seed {s})"
        assert torch.allclose(batch.log_prob[i], alone.log_prob[0], rtol=1e-5)
    assert not torch.allclose(batch.images[0], batch.images[2], atol=1e-3), "same prompt, other seed: other image"
    with pytest.raises(ValueError, match="2 generators for 3 images"):
        pipe(prompts, generator=[torch.Generator(), torch.Generator()])


def test_prompt_embeds_draw_what_their_prompts_draw(pipe):
    """prompt_embeds (diffusers' name) stands in for the prompt: the same text embedded beforehand draws the same
    images and log p(τ), candidates and per-prompt repeats included; a changed embedding draws something else."""
    prompts = ["a red circle", "a blue square"]
    kw = dict(num_inference_steps=3, guidance_scale=2.0, num_images_per_prompt=2, num_candidates=2,
              denoise="score", output_type="model", return_log_prob=True)
    by_text = pipe(prompts, generator=torch.Generator().manual_seed(5), **kw)
    text = pipe.encode_prompt(prompts)[0]
    by_embeds = pipe(prompt_embeds=text, generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(by_text.images, by_embeds.images) and torch.equal(by_text.log_prob, by_embeds.log_prob)
    no_tokens = TextEmbedding(text.tokens, torch.zeros_like(text.mask), text.pooled)  # pooled vector alone
    other = pipe(prompt_embeds=no_tokens, generator=torch.Generator().manual_seed(5), **kw)
    assert not torch.allclose(other.images, by_text.images, atol=1e-3)
    with pytest.raises(ValueError, match="not both"):
        pipe(prompts[0], prompt_embeds=text)
    with pytest.raises(ValueError, match="TextEmbedding"):
        pipe(prompt_embeds=text.pooled)


def test_model_output_type_is_the_model_scaling(pipe):
    """output_type='model' gives the images the likelihood takes back: 'pt' mapped from [0, 1] to [−1, 1]."""
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    x = pipe("a red circle", generator=g(), output_type="model").images
    pt = pipe("a red circle", generator=g(), output_type="pt").images
    assert x.shape == (1, 3, 16, 16) and x.min() >= -1 and x.max() <= 1 and x.min() < 0
    assert torch.allclose(x, pt * 2 - 1, atol=1e-6)
    with pytest.raises(ValueError, match="output_type"):
        pipe("a red circle", output_type="latent")


def test_return_trajectory(pipe):
    out = pipe("a green triangle", num_inference_steps=3, return_trajectory=True, denoise="none",
               generator=torch.Generator().manual_seed(0))
    tr = out.trajectory
    assert tr.u.shape == (1, 4, 3, 16, 16) and tr.mu.shape == tr.sigma.shape == tr.z.shape == (1, 3, 3, 16, 16)
    assert out.seconds > 0


def test_log_likelihood(pipe):
    imgs = pipe(["a red circle", "a blue square"], num_inference_steps=2, denoise="none", output_type="pil").images
    res = pipe.log_likelihood(imgs, ["a red circle", "a blue square"], num_inference_steps=4, num_trajectories=3,
                              generator=torch.Generator().manual_seed(0))
    assert len(res) == 3 and res[0].total.shape == (2,) and res[0].step.shape == (2, 4)
    assert not torch.allclose(res[0].total, res[1].total), "each draw is a different forward trajectory"
    same = pipe.log_likelihood(torch.zeros(1, 3, 16, 16), "a red circle", generator=torch.Generator().manual_seed(1))
    again = pipe.log_likelihood(torch.zeros(1, 3, 16, 16), "a red circle", generator=torch.Generator().manual_seed(1))
    assert torch.equal(same[0].total, again[0].total)


def test_clear_errors(pipe):
    with pytest.raises(ValueError, match="empty prompt"):
        pipe("   ")
    with pytest.raises(ValueError, match="denoise"):
        pipe("a red circle", denoise="magic")
    with pytest.raises(ValueError, match="shape"):
        pipe.log_likelihood(torch.zeros(1, 3, 20, 20), "a red circle")
    with pytest.raises(ValueError, match="cannot read image"):
        pipe.log_likelihood([io.BytesIO(b"definitely not an image")], "a red circle")
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        pipe.log_likelihood(torch.zeros(2, 3, 16, 16), ["a red circle"])


def test_any_image_is_converted(pipe):
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 200, 4), dtype=np.uint8), "RGBA")
    grey = Image.fromarray(np.zeros((10, 40), np.uint8), "L")
    res = pipe.log_likelihood([big, grey], "a red circle")
    assert res[0].total.shape == (2,) and torch.isfinite(res[0].total).all()


def test_loads_offline_in_a_fresh_process(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    code = ("import sys, torch; from ntm_core.pipeline import load_pipeline; p = load_pipeline(sys.argv[1]);"
            "print(p('a red circle', num_inference_steps=2, output_type='pt', "
            "generator=torch.Generator().manual_seed(0)).images.sum().item())")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=dict(ENV, HF_HOME=str(tmp_path / "hf")),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    local = pipe("a red circle", num_inference_steps=2, output_type="pt",
                 generator=torch.Generator().manual_seed(0)).images.sum().item()
    assert float(out.stdout.strip().splitlines()[-1]) == pytest.approx(local, rel=1e-6)
    assert not [f for _, _, fs in os.walk(tmp_path) for f in fs if f.endswith((".bin", ".pt", ".pkl"))]


def test_log_prob_with_every_sample(pipe):
    """pipe(..., return_log_prob=True): log p(τ) of each sampled trajectory equals the exact NLL re-evaluated on
    the returned trajectory (the guided density when guidance ≠ 1), and asking for it changes no image."""
    g = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    prompts = ["a red circle", "two green triangles"]
    for guidance in (1.0, 3.0):
        out = pipe(prompts, num_inference_steps=3, guidance_scale=guidance, generator=g(), denoise="learned",
                   output_type="pt", return_log_prob=True, return_trajectory=True)
        plain = pipe(prompts, num_inference_steps=3, guidance_scale=guidance, generator=g(), denoise="learned",
                     output_type="pt")
        assert torch.equal(out.images, plain.images) and plain.log_prob is None
        text = pipe.encode_prompt(prompts)[0]
        ref = pipe.ntm.trajectory_nll(out.trajectory.x, out.trajectory.grid, text, guidance_scale=guidance)
        assert out.log_prob.shape == (2,)
        assert ((out.log_prob + ref.total).abs() / ref.total.abs()).max() < 1e-4


def test_prompt_nll_shares_trajectories_across_prompts(pipe):
    from ntm_core.trajectory import sample_trajectory

    x = torch.rand(3, 3, 16, 16) * 2 - 1
    prompts = ["a red circle", "a blue square", "two green triangles"]
    scores = pipe.prompt_nll(x, prompts, 2, num_trajectories=2, generator=torch.Generator().manual_seed(5))
    assert scores.shape == (3, 3, 2)
    small = pipe.prompt_nll(x, prompts, 2, num_trajectories=2, generator=torch.Generator().manual_seed(5),
                            batch_size=2)  # other batching, same numbers
    assert torch.allclose(scores, small, atol=1e-5)
    g = torch.Generator().manual_seed(5)
    grid = pipe.scheduler.grid(2)
    states = sample_trajectory(x, grid, g)  # the first trajectory draw, scored under prompt 1 alone
    ref = pipe.ntm.trajectory_nll(states, grid, pipe.encode_prompt([prompts[1]] * 3)[0]).bound_bits_per_dim
    assert torch.allclose(scores[:, 1, 0], ref, atol=1e-5)
    with pytest.raises(ValueError, match="candidate"):
        pipe.prompt_nll(x, [], 2)


def test_flow_matching_pipeline_gaussian_sampler_is_guided_and_denoises(tmp_path):
    fm = load_pipeline(run_tiny(tmp_path / "fm", "objective=fm", "train.steps=2"))
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    kw = dict(num_inference_steps=4, sampler="gaussian", generator=g, output_type="model")
    run = lambda **k: fm("a red circle", **dict(kw, generator=g(), **k)).images  # noqa: E731
    assert not torch.allclose(run(guidance_scale=3.0), run()), "guidance reaches the Gaussian sampler"
    assert not torch.allclose(run(guidance_scale=3.0, denoise="score"), run(guidance_scale=3.0))
    with pytest.raises(ValueError, match="denoise"):
        fm("a red circle", num_inference_steps=4, denoise="score")  # Euler already ends at the data
    assert not torch.allclose(run(temperature=0.0), run()), "the temperature reaches the Gaussian sampler"
    text = fm.encode_prompt("a red circle")[0]
    for sampler in ("gaussian", "euler"):
        by_embeds = fm(prompt_embeds=text, **dict(kw, sampler=sampler, generator=g(), guidance_scale=3.0)).images
        assert torch.equal(by_embeds, run(sampler=sampler, guidance_scale=3.0)), sampler
    with pytest.raises(ValueError, match="temperature"):
        fm("a red circle", num_inference_steps=4, temperature=0.5)  # the Euler ODE has no step noise


def test_a_time_shift_swapped_into_the_scheduler_moves_every_few_step_sampler(tmp_path):
    """analysis.time_shift swaps the scheduler the diffusers way; the FM folder's shift reaches its Euler steps and
    its Gaussian sampler's grid (exactly the NTM grid of that shift), and an NTM's reaches its sampler and its NLL."""
    from analysis.time_shift import with_shift
    from ntm_core.flow_matching import gaussian_sample
    from ntm_core.trajectory import time_grid

    fm = load_pipeline(run_tiny(tmp_path / "fm", "objective=fm", "train.steps=2"))
    perturb_(fm.predictor, 0.05)  # a velocity that depends on x and t, as a trained one does
    call = lambda pipe, **k: pipe("a red circle", num_inference_steps=4, output_type="model",  # noqa: E731
                                  generator=torch.Generator().manual_seed(4), **k).images
    euler, gauss = call(fm), call(fm, sampler="gaussian")
    assert with_shift(fm, 3.0).scheduler.config.shift == 3.0
    assert (call(fm) - euler).abs().max() > 1e-4, "the Euler steps moved with the shift"
    shifted = call(fm, sampler="gaussian")
    assert (shifted - gauss).abs().max() > 1e-4
    text = fm.encode_prompt("a red circle", 1, None)[0]
    ref = gaussian_sample(fm.predictor, (1, *fm.sample_shape), time_grid(4, 0.05, 3.0, dtype=torch.float32), text,
                          torch.Generator().manual_seed(4))
    assert torch.allclose(shifted, ref.clamp(-1, 1), atol=1e-6)  # the pipeline returns images clamped

    ntm = load_pipeline(run_tiny(tmp_path / "ntm", "train.steps=2"))
    perturb_(ntm.predictor, 0.05)
    x = call(ntm, denoise="none")
    nll = lambda: ntm.log_likelihood(x, "a red circle", 4, generator=torch.Generator().manual_seed(1))[0]  # noqa
    before = nll().bound_bits_per_dim
    with_shift(ntm, 3.0)  # an NTM's sampler moves; its trajectory grid, and so every likelihood, stays
    assert ntm.scheduler.config.shift == 1.0 and ntm.scheduler.config.sample_shift == 3.0
    out = ntm("a red circle", num_inference_steps=4, output_type="model", generator=torch.Generator().manual_seed(4),
              denoise="none", return_trajectory=True, return_log_prob=True)
    assert (out.images - x).abs().max() > 1e-4
    assert torch.allclose(out.trajectory.grid.double(), time_grid(4, 0.05, 3.0))
    text = ntm.encode_prompt("a red circle", 1, None)[0]  # the sample's log p(τ): the density on its own grid
    ref = ntm.ntm.trajectory_nll(out.trajectory.x, out.trajectory.grid, text).total
    assert torch.allclose(-out.log_prob, ref, rtol=1e-4)
    assert torch.equal(nll().bound_bits_per_dim, before)
    with_shift(ntm, 3.0, trajectory=True)
    assert torch.allclose(ntm.scheduler.grid(4).double(), time_grid(4, 0.05, 3.0))
    assert (nll().bound_bits_per_dim - before).abs().max() > 1e-3, "the trajectory's grid moves the likelihood"


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_num_candidates_keeps_the_most_likely_trajectory(pipe, guidance):
    """num_candidates=C: per image, C trajectories from that image's generator, ranked by the exact log p(τ | prompt)
    of the unguided model (re-evaluated here on the same draws); the image and trajectory kept are the argmax's, and
    image i of a batch is what generator i draws alone."""
    prompts, seeds, c = ["a red circle", "two green triangles"], [3, 11], 3
    kw = dict(num_inference_steps=3, guidance_scale=guidance, denoise="none", output_type="model")
    out = pipe(prompts, generator=[torch.Generator().manual_seed(s) for s in seeds], num_candidates=c,
               return_trajectory=True, return_log_prob=True, **kw)
    assert out.candidate_log_prob.shape == (2, c) and out.images.shape[0] == 2
    for i, (p, s) in enumerate(zip(prompts, seeds)):
        g = torch.Generator().manual_seed(s)  # one generator for all rows: the candidates, one after another
        each = pipe([p] * c, generator=[g] * c, return_trajectory=True, **kw)
        text = pipe.encode_prompt([p] * c)[0]
        ref = -pipe.ntm.trajectory_nll(each.trajectory.x, each.trajectory.grid, text).total
        assert torch.allclose(out.candidate_log_prob[i], ref.float(), rtol=1e-4)
        best = int(ref.argmax())
        assert torch.allclose(out.images[i], each.images[best], atol=1e-5)
        assert torch.allclose(out.trajectory.x[i], each.trajectory.x[best], atol=1e-5)
        alone = pipe(p, generator=torch.Generator().manual_seed(s), num_candidates=c, **kw)
        assert torch.allclose(alone.images[0], out.images[i], atol=1e-5)
    assert out.candidate_log_prob.std(1).min() > 0, "the candidates differ"
    # log_prob stays the density of the model that drew the kept trajectory (the guided one)
    text = pipe.encode_prompt(prompts)[0]
    drew = pipe.ntm.trajectory_nll(out.trajectory.x, out.trajectory.grid, text, guidance_scale=guidance)
    assert ((out.log_prob + drew.total).abs() / drew.total.abs()).max() < 1e-4


def test_num_candidates_one_is_the_plain_call_and_bad_values_are_refused(pipe):
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    kw = dict(num_inference_steps=2, guidance_scale=3.0, output_type="pt")
    one, plain = pipe("a red circle", generator=g(), num_candidates=1, **kw), pipe("a red circle", generator=g(), **kw)
    assert torch.equal(one.images, plain.images) and one.candidate_log_prob is None
    learned = pipe("a red circle", generator=g(), num_candidates=2, denoise="learned", **kw)
    assert learned.images.shape == (1, 3, 16, 16) and learned.candidate_log_prob.shape == (1, 2)
    for bad in (0, -1, 2.5, "4"):
        with pytest.raises(ValueError, match="num_candidates"):
            pipe("a red circle", num_candidates=bad, **kw)

"""analysis.denoising_error: the velocity target's convention, x̂₀'s error identity, and the seam ratio that tells
a patchwork from an image."""
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from analysis.denoising_error import denoising_error, held_out, position_table_stats, seam_ratio
from ntm_core.pipeline import FlowMatchingPipeline
from ntm_core.predictor import Predictor

from .conftest import perturb_


def test_seam_ratio_tells_patchwork_from_images():
    images, _ = held_out(16, seed=0)
    assert 0.6 < seam_ratio(images, 4) < 1.5
    g = torch.Generator().manual_seed(0)
    blocks = torch.rand(16, 3, 8, 8, generator=g).repeat_interleave(4, -1).repeat_interleave(4, -2)
    patchwork = blocks + 0.05 * torch.randn(blocks.shape, generator=g)  # each 4×4 patch decided alone
    assert seam_ratio(patchwork, 4) > 3


@pytest.mark.parametrize("trained", [False, True])
def test_errors_against_the_true_velocity(trained):
    predictor = Predictor(sample_size=32, patch_size=4, width=32, depth=1, heads=4, text_dim=384, markov=True,
                          s_conditioning=False)
    if trained:  # any non-zero velocity
        perturb_(predictor, 0.05)
    pipe = FlowMatchingPipeline(predictor, FlowMatchEulerDiscreteScheduler())
    x0, captions = held_out(8, seed=0)
    df = denoising_error(pipe, x0, captions, times=(0.3, 0.9), draws=4)
    # x̂₀ − x₀ = t·(ε − x₀ − v): the two errors differ by t² exactly
    assert torch.allclose(torch.tensor(df.x0_mse.values), torch.tensor((df.t**2 * df.v_mse).values), rtol=1e-5)
    if not trained:  # zero-initialised head: v = 0, so the error is E(ε − x₀)² = 1 + E x₀²
        assert df.v_mse.values == pytest.approx(1 + x0.pow(2).mean().item(), rel=0.05)
    assert 0.6 < df.seams_data[0] < 1.5  # real images: no patch grid in them
    with pytest.raises(TypeError, match="flow-matching pipeline"):
        denoising_error(object(), x0, captions)


def test_position_table_stats_tell_a_sincos_table_from_a_random_one():
    x0, _ = held_out(4, seed=0)
    kw = dict(sample_size=32, patch_size=4, width=64, depth=1, heads=4)
    sincos, random = (position_table_stats(Predictor(**kw, pos_init=init), x0) for init in ("sincos", "random"))
    assert sincos["nearest_is_neighbour"] == 1.0 and random["nearest_is_neighbour"] < 0.5
    assert sincos["table_norm"] > 0.5 * sincos["content_norm_t0.9"]
    assert random["table_norm"] < 0.1 * random["content_norm_t0.9"]

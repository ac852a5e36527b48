"""NTM_METHOD §5: at step 0, an NTM initialised from a flow-matching model *is* that model run as a K-step
Gaussian sampler — the same samples for the same seed, and the same trajectory NLL."""
import pytest
import torch

from ntm_core.flow_matching import gaussian_sample, ntm_from_flow_matching, velocity
from ntm_core.predictor import Predictor
from ntm_core.trajectory import TrajectorySchedule, posterior_coefficients, sample_trajectory
from ntm_core.transporter import Transporter

from .conftest import TEXT_DIM, perturb_, random_text


def gaussian_trajectory_nll(predictor, states, grid, text=None) -> torch.Tensor:
    """Reference: −log p(τ) of x-space trajectories [B, K+1, ...] under the FM model as a Gaussian sampler, step by
    step with torch.distributions: [B]."""
    normal = torch.distributions.Normal
    nll = -normal(0.0, 1.0).log_prob(states[:, -1]).flatten(1).sum(1)
    for k in range(grid.numel() - 1, 0, -1):
        c_t, c_0, var = posterior_coefficients(grid[k], grid[k - 1])
        x_t = states[:, k]
        mean = c_t * x_t + c_0 * (x_t - grid[k] * velocity(predictor, x_t, grid[k], text))
        nll = nll - normal(mean, var.sqrt()).log_prob(states[:, k - 1]).flatten(1).sum(1)
    return nll


@pytest.fixture
def fm():
    torch.manual_seed(0)
    p = Predictor(sample_size=8, patch_size=2, width=32, depth=2, heads=4, text_dim=TEXT_DIM, markov=True,
                  s_conditioning=False).double()
    return perturb_(p, 0.05)  # a "trained" velocity model: random, non-zero weights


@pytest.mark.parametrize("steps,guidance,temperature,shift", [(1, 1.0, 1.0, 1.0), (4, 1.0, 1.0, 1.0),
                                                               (4, 2.5, 1.0, 1.0), (4, 2.5, 0.5, 1.0),
                                                               (4, 1.0, 0.0, 1.0), (4, 2.5, 1.0, 3.0)])
def test_samples_equal_the_gaussian_sampler(fm, steps, guidance, temperature, shift):
    """Guided too: NTM guides each step's (μ, log σ), the Gaussian sampler its velocity — the same map, as μ is
    affine in v and log σ does not depend on it at initialisation. At any temperature: both scale the step noise."""
    text = random_text(2)
    ntm = ntm_from_flow_matching(fm, Transporter(sample_size=8, patch_size=2, width=32, heads=4, text_dim=TEXT_DIM),
                                 TrajectorySchedule(t_min=0.05, shift=shift)).double()
    grid = ntm.schedule.grid(steps, dtype=torch.float64)  # on any grid: the shift is the schedule's
    ours = ntm.sample(text=text, num_steps=steps, guidance_scale=guidance, temperature=temperature,
                      generator=torch.Generator().manual_seed(3)).images
    ref = gaussian_sample(fm, (2, 3, 8, 8), grid, text, generator=torch.Generator().manual_seed(3),
                          guidance_scale=guidance, temperature=temperature)
    assert (ours - ref).abs().max() < 1e-10 and ours.abs().max() > 0.1
    if guidance != 1.0:  # and guidance changed the samples
        plain = gaussian_sample(fm, (2, 3, 8, 8), grid, text, generator=torch.Generator().manual_seed(3),
                                temperature=temperature)
        assert (plain - ref).abs().max() > 1e-3
    if temperature != 1.0 and steps > 1:  # and the temperature changed them
        hot = gaussian_sample(fm, (2, 3, 8, 8), grid, text, generator=torch.Generator().manual_seed(3),
                              guidance_scale=guidance)
        assert (hot - ref).abs().max() > 1e-3


def test_the_gaussian_sampler_denoises_with_its_own_tweedie_step(fm):
    text = random_text(2)
    grid = TrajectorySchedule(t_min=0.05).grid(4, dtype=torch.float64)
    x_t0 = gaussian_sample(fm, (2, 3, 8, 8), grid, text, torch.Generator().manual_seed(3), guidance_scale=2.0)
    x0 = gaussian_sample(fm, (2, 3, 8, 8), grid, text, torch.Generator().manual_seed(3), guidance_scale=2.0,
                         denoise=True)
    guided_v = 2.0 * velocity(fm, x_t0, grid[0], text) - velocity(fm, x_t0, grid[0], text.null())
    assert torch.allclose(x0, x_t0 - grid[0] * guided_v, atol=1e-10)


def test_nll_equals_the_gaussian_model(fm):
    text = random_text(2)
    ntm = ntm_from_flow_matching(fm, Transporter(sample_size=8, patch_size=2, width=32, heads=4, text_dim=TEXT_DIM),
                                 TrajectorySchedule(t_min=0.05)).double()
    grid = ntm.schedule.grid(4, dtype=torch.float64)
    states = sample_trajectory(torch.randn(2, 3, 8, 8, dtype=torch.float64), grid, torch.Generator().manual_seed(0))
    ours = ntm.trajectory_nll(states, grid, text).total
    ref = gaussian_trajectory_nll(fm, states, grid, text)
    assert torch.allclose(ours, ref, atol=1e-8, rtol=1e-12)


def test_conversion_keeps_the_velocity_weights_and_zeroes_the_rest(fm):
    ntm = ntm_from_flow_matching(fm, Transporter(sample_size=8, patch_size=2, text_dim=TEXT_DIM),
                                 TrajectorySchedule()).double()
    pred = ntm.predictor
    assert pred.config.markov and pred.config.s_conditioning
    fm_sd = fm.state_dict()
    half = pred.final.proj.out_features // 2
    for k, v in pred.state_dict().items():
        if k.startswith("s_embed.mlp.2"):
            assert not v.any(), "s-embedding output starts at zero"
        elif k.startswith("final.proj"):
            assert torch.equal(v[:half], fm_sd[k][:half]) and not v[half:].any(), "velocity head kept, δ head zero"
        elif not k.startswith("s_embed"):
            assert torch.equal(v, fm_sd[k])

"""The paper's central claim at toy scale: with 4 steps on a multi-modal 2-D distribution, the transporter makes
samples measurably closer to the data than the same budget without it (a 4-step Gaussian diffusion), and the
trajectory likelihood better. ~100 s on 2 CPU cores."""
import pytest

from analysis.toy2d import train_and_evaluate


@pytest.mark.slow
def test_transporter_beats_gaussian_steps_on_8_gaussians():
    ntm = train_and_evaluate(use_transporter=True, seed=0)
    gauss = train_and_evaluate(use_transporter=False, seed=0)
    assert ntm["energy_distance"] < 0.8 * gauss["energy_distance"], (ntm, gauss)
    assert ntm["trajectory_nll_nats_per_dim"] < gauss["trajectory_nll_nats_per_dim"] - 0.01, (ntm, gauss)

"""analysis.sample_likelihood: samples and real renders of the same prompts under the model's exact likelihood.
A sampler that returned the renders themselves must read Δ = 0 exactly (same images, same forward trajectories);
the real sampler's rows carry both densities, their gap to the renders and the evaluator's share."""
import numpy as np
import pytest

import analysis.sample_likelihood as sl
from ntm_core.pipeline import load_pipeline

from .train_helpers import run_tiny


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return load_pipeline(run_tiny(str(tmp_path_factory.mktemp("sl") / "ntm"), "train.steps=2"))


def test_a_sampler_that_draws_the_renders_reads_no_gap(pipe, monkeypatch):
    monkeypatch.setattr(sl, "samples", lambda p, part, n, *rest: sl.renders(part, n, p.sample_shape[1]))
    df = sl.measure(pipe, per_category=1, n=2, steps=4, trajectories=2, guidances=[3.0], finals=["none"], batch=4)
    assert list(df["images"]) == ["real renders", "samples"] and list(df["n"]) == [10, 10]  # 5 prompts × 2
    for col in (sl.TRAJECTORY, sl.X_T0):
        assert df[col][0] == df[col][1] and np.isfinite(df[col][0])
        assert (df[col + " Δ vs real renders"] == 0).all()
    assert df["evaluator"][0] == df["evaluator"][1]  # the same images read the same (the evaluator reads 32 px;
    # at this 16-px test size it misses some shapes, so its share here is no check of the renders)


def test_the_sampler_rows(pipe):
    df = sl.measure(pipe, per_category=1, n=1, steps=4, trajectories=1, guidances=[1.0, 3.0], finals=["score", "none"])
    assert len(df) == 1 + 2 * 2
    samples = df[df["images"] == "samples"]
    assert sorted(zip(samples["guidance"], samples["final step"])) == [(1.0, "none"), (1.0, "score"), (3.0, "none"),
                                                                         (3.0, "score")]
    assert samples["evaluator"].between(0, 1).all() and np.isfinite(samples[sl.TRAJECTORY]).all()
    gap = samples[sl.TRAJECTORY] - df[sl.TRAJECTORY][0]  # the per-prompt mean gap averages to the gap of the means
    assert np.allclose(gap, samples[sl.TRAJECTORY + " Δ vs real renders"], atol=1e-5)

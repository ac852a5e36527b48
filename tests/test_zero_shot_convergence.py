"""analysis.mnist's zero-shot accuracy by the number of shared forward trajectories averaged: a noisy but unbiased
score separates the classes only with enough trajectories, which the rows must show."""
import numpy as np

from analysis.mnist import accuracy_by_trajectories


def test_accuracy_rises_with_trajectories_when_the_bound_is_noisy():
    rng = np.random.default_rng(0)
    n, t = 400, 32
    labels = rng.integers(0, 10, n)
    mean = np.zeros((n, 10))
    mean[np.arange(n), labels] = -0.5  # the true class is 0.5 lower on average
    scores = mean[..., None] + rng.normal(0, 1.0, (n, 10, t))  # noise of each trajectory's score
    acc = {k: v.mean() for k, v in accuracy_by_trajectories(scores, labels).items()}
    assert list(acc) == [1, 2, 4, 8, 16, 32]
    assert acc[1] < 0.5 and acc[32] > 0.8 and acc[32] > acc[4] > acc[1]
    # a trajectory count that is not a power of two ends the list
    assert list(accuracy_by_trajectories(scores[..., :6], labels)) == [1, 2, 4, 6]


def test_importance_weighting_estimates_the_density_not_the_mean_bound():
    """Each trajectory's bound is −log₂ of an unbiased estimate of p(x): importance weighting averages the estimates.
    With D = 1, bounds {0, 10} bits average to 5 but estimate p = (1 + 2⁻¹⁰)/2, i.e. ≈ 1 bit: that class wins over
    bounds {4, 4}, which the mean picks. The estimate never exceeds the mean bound (Jensen) and equals it for equal
    bounds."""
    from analysis.mnist import importance_weighted

    scores = np.array([[[0.0, 10.0], [4.0, 4.0]]])  # one image, two prompts, two trajectories
    iw = importance_weighted(scores, dims=1)
    assert np.allclose(iw, [[-np.log2((1 + 2.0**-10) / 2), 4.0]])
    labels = np.array([0])
    assert not accuracy_by_trajectories(scores, labels)[2][0], "the mean bound picks prompt 1"
    assert accuracy_by_trajectories(scores, labels, dims=1)[2][0], "the density estimate picks prompt 0"
    rng = np.random.default_rng(1)
    s = rng.normal(0, 0.01, (50, 10, 8))
    assert (importance_weighted(s, 784) <= s.mean(-1) + 1e-12).all()
    # many dimensions: the estimate is the best trajectory's bound plus log₂ T / D
    assert np.allclose(importance_weighted(s, 10**6), s.min(-1) + np.log2(8) / 10**6, atol=1e-9)

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

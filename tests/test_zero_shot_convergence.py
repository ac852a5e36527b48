"""Zero-shot classification's bookkeeping: analysis.mnist's accuracy by the number of shared forward trajectories
(a noisy but unbiased score separates the classes only with enough trajectories, which the rows must show) and its
importance-weighted estimate (ntm_core.trajectory.importance_weighted); analysis.zero_shot_shapes' relation candidates."""
import numpy as np
import torch

from analysis.mnist import accuracy_by_trajectories
from ntm_core.trajectory import importance_weighted


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
    scores = np.array([[[0.0, 10.0], [4.0, 4.0]]])  # one image, two prompts, two trajectories
    iw = importance_weighted(torch.as_tensor(scores), dims=1).numpy()
    assert np.allclose(iw, [[-np.log2((1 + 2.0**-10) / 2), 4.0]])
    labels = np.array([0])
    assert not accuracy_by_trajectories(scores, labels)[2][0], "the mean bound picks prompt 1"
    assert accuracy_by_trajectories(scores, labels, dims=1)[2][0], "the density estimate picks prompt 0"
    rng = np.random.default_rng(1)
    s = torch.as_tensor(rng.normal(0, 0.01, (50, 10, 8)))
    assert (importance_weighted(s, 784) <= s.mean(-1) + 1e-12).all()
    # many dimensions: the estimate is the best trajectory's bound plus log₂ T / D
    assert torch.allclose(importance_weighted(s, 10**6), s.min(-1).values + np.log2(8) / 10**6, atol=1e-9)
    # along another axis: the trajectories of the 8-bit bound are rows ([T, B])
    assert torch.allclose(importance_weighted(s.movedim(-1, 0), 784, dim=0), importance_weighted(s, 784))


def test_position_candidates_keep_the_objects_and_vary_only_the_relation():
    """analysis.zero_shot_shapes --parts position: each image's four candidates are its own two objects in caption
    order with the four relations, and the lowest score names the prediction. A stand-in model that prefers 'below'
    scores exactly the share of 'below' specs; one that reads the truth scores 1."""
    import torch

    from analysis.zero_shot_shapes import position_rows
    from ntm_core.data.shapes import ShapesDataset

    n = 24
    specs = [ShapesDataset("test", seed=0, categories=("position",))[i]["spec"] for i in range(n)]

    class Prefers:
        def __init__(self, pick):
            self.pick, self.seen = pick, []

        def prompt_nll(self, images, prompts, steps, trajectories, generator):
            assert images.shape == (1, 3, 32, 32) and len(prompts) == 4
            self.seen.append(prompts)
            return torch.tensor([[[0.0 if self.pick(len(self.seen) - 1, p) else 1.0] * trajectories
                                  for p in prompts]])

    below = Prefers(lambda i, p: " below " in p)
    row, = position_rows(below, "test", n, 4, 2, 0)
    share = np.mean([s["relation"] == "below" for s in specs])
    assert 0 < share < 1 and np.isclose(row["value"], share)
    for prompts, s in zip(below.seen, specs):
        (c0, k0), (c1, k1) = s["objects"]
        assert all(p.startswith(f"a {c0} {k0} ") and p.endswith(f" a {c1} {k1}") for p in prompts)
        assert len(set(prompts)) == 4
    wording = {"left of": " to the left of ", "right of": " to the right of ", "above": " above ", "below": " below "}
    truth = Prefers(lambda i, p: wording[specs[i]["relation"]] in p)
    assert position_rows(truth, "test", n, 4, 2, 0)[0]["value"] == 1.0

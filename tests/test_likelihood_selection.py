"""analysis.likelihood_selection: the rules of the best-of-C table on candidates whose outcome is known (the
pipeline's ranking itself is tested in tests/test_pipeline.py)."""
import numpy as np
import pytest

from analysis.likelihood_selection import RULES, selection_table


def _table(passes, logp, categories, candidates):
    df = selection_table(np.asarray(passes), np.asarray(logp, dtype=float), categories, candidates)
    return {(r.C, r.rule): r for r in df.itertuples(index=False)}


def test_rules_on_candidates_whose_likelihood_knows_the_evaluator():
    rng = np.random.default_rng(0)
    passes = rng.random((40, 4)) < 0.5
    categories = ["single_object"] * 20 + ["position"] * 20
    t = _table(passes, passes + 0.1 * rng.random(passes.shape), categories, [1, 2, 4])  # passing ones are likelier
    for c in (1, 2, 4):
        any_c = passes[:, :c].any(1)
        assert t[(c, "any of C")].overall == pytest.approx((any_c[:20].mean() + any_c[20:].mean()) / 2)
        assert t[(c, "most likely of C")].overall == pytest.approx(t[(c, "any of C")].overall)
        none_fail = passes[:, :c].all(1)
        assert t[(c, "least likely of C")].overall == pytest.approx((none_fail[:20].mean() + none_fail[20:].mean()) / 2)
        assert t[(c, "one sample")].overall == pytest.approx((passes[:20].mean() + passes[20:].mean()) / 2)
    assert t[(1, "most likely of C")].overall == t[(1, "least likely of C")].overall, "C = 1 is one draw"
    assert t[(4, "most likely of C")].overall > t[(1, "most likely of C")].overall
    assert set(RULES) == {r for _, r in t}


def test_a_blind_likelihood_picks_like_one_sample():
    rng = np.random.default_rng(1)
    passes = rng.random((4000, 4)) < 0.3
    t = _table(passes, rng.random(passes.shape), ["counting"] * 4000, [4])
    assert abs(t[(4, "most likely of C")].overall - 0.3) < 0.03
    assert abs(t[(4, "least likely of C")].overall - 0.3) < 0.03
    assert t[(4, "any of C")].overall > 0.7

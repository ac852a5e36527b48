"""analysis.bench_training's rate: all the timed samples over all their time, so that a step that renders a pool
of shapes for the next 15 counts at its share (a median of the log intervals would leave it out)."""
import pandas as pd
import pytest

from analysis.bench_training import timed_rate


def test_the_rate_is_the_timed_steps_samples_over_their_time():
    # 40 steps logged every 5: 0.1 s a step, but warm-up in the first interval and a render in the fourth
    seconds = [1.0, 0.1, 0.1, 0.4, 0.1, 0.1, 0.1, 0.1]
    metrics = pd.DataFrame({"step": range(5, 41, 5), "seconds": seconds})
    rate, steps = timed_rate(metrics, batch_size=512, warmup=8)
    assert steps == 30  # the intervals that start at step 10 or later: 11–40
    assert rate == pytest.approx(512 * 30 / (5 * (0.4 + 5 * 0.1)))
    assert rate < 512 / 0.1  # the render step's share is in it; a median would read 5,120


def test_a_last_interval_that_is_shorter_counts_by_its_length():
    metrics = pd.DataFrame({"step": [5, 10, 12], "seconds": [1.0, 0.2, 0.5]})
    rate, steps = timed_rate(metrics, batch_size=8, warmup=2)
    assert steps == 7 and rate == pytest.approx(8 * 7 / (5 * 0.2 + 2 * 0.5))

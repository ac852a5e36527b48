"""analysis.step_ops: kernel launches per training step, by phase — the render pool divides the data phase's and
leaves every other phase's alone."""
import torch

from analysis.step_ops import OpCounter, count_step_ops
from ntm_core.data.shapes_torch import ShapesRenderer

from .train_helpers import run_tiny

CATEGORIES = "data.categories=[single_object,counting]"


def test_the_counter_books_each_op_under_its_phase_and_views_apart():
    counter = OpCounter()
    x = torch.ones(4, 4)
    with counter:
        with counter.within("forward"):
            y = x + 1  # one kernel
            y.t()  # a view: no kernel
        torch.mul(y, 2)
        with counter.within("clip"):
            float(y.sum())  # a sum, then the host reads it
    assert counter.ops == {"forward": 1, "other": 1, "clip": 2}
    assert counter.views == {"forward": 1} and counter.reads == {"clip": 1}


def test_a_pool_of_four_micro_batches_divides_the_data_phase_and_nothing_else():
    one, four = (count_step_ops("ntm_core/configs/tiny.yaml", "ntm", pool, steps=4, overrides=[CATEGORIES])
                 for pool in (1, 4))
    renderer, render = ShapesRenderer("train", 16, ("single_object", "counting")), OpCounter()
    with render:  # one render call, counted on its own: its ops do not depend on the batch
        renderer.sample(32, torch.Generator().manual_seed(0))
    calls = render.ops["other"]
    assert calls > 100  # its rounds of placement proposals
    gather = one["data"] - calls  # per step, besides the render: the rows and their captions
    assert 0 < gather < 20, gather
    assert four["data"] == calls / 4 + gather
    for phase in ("forward", "backward", "clip", "optimizer", "ema"):  # the same steps draw the same K
        assert one[phase] == four[phase] > 0, phase
    assert one["host reads"] == four["host reads"] == 0  # a GPU step never waits on the host


def test_the_denoisers_step_reads_nothing_on_the_host(tmp_path):
    # its targets need the trajectory covariance S, which had been filled entry by entry from host reads of the grid
    ntm = run_tiny(tmp_path / "ntm", "train.steps=1", CATEGORIES)
    row = count_step_ops("ntm_core/configs/tiny.yaml", "denoiser", 1, steps=2, overrides=[CATEGORIES],
                         init_from=ntm)
    assert row["forward"] > 0 and row["host reads"] == 0

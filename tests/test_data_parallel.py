"""Data-parallel training really works on this machine: 2 CPU processes (gloo) both step, their gradients are
averaged (replicas stay identical although they see different data), and one checkpoint is written."""
import re
import subprocess
import sys

import pytest

from ntm_core.data.shapes import ShapesDataset
from ntm_core.batches import BatchSampler

from .train_helpers import ENV, TINY, metrics


@pytest.mark.slow
def test_two_cpu_processes(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ntm_core.train", "--config", TINY, "--set", f"output_dir={tmp_path}", "train.steps=3",
           "train.checkpoint_every=100"]
    out = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert "2× CPU process(es)" in text
    ranks = dict(re.findall(r"\[rank (\d)/2\] steps 3 params checksum ([-+0-9.eE]+)", text))
    assert set(ranks) == {"0", "1"}, text[-2000:]
    assert ranks["0"] == ranks["1"], "replicas diverged: gradients were not averaged"
    assert [m["step"] for m in metrics(tmp_path)] == [1, 2, 3], "one metrics stream, from the main process"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000003"]


def test_processes_see_disjoint_data():
    ds = ShapesDataset()
    a, b = BatchSampler(ds, 4, 0, 0, 2).batch(5), BatchSampler(ds, 4, 0, 1, 2).batch(5)
    assert not set(a["caption"]) & set(b["caption"]) or not all(
        (x == y).all() for x, y in zip(a["image"], b["image"]))
    single = BatchSampler(ds, 8, 0, 0, 1).batch(5)  # the same 8 samples as the two halves together
    assert single["caption"] == a["caption"] + b["caption"]

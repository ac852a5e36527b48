"""Kill a training run mid-way (SIGKILL: no chance to save), resume, stop it gracefully (SIGTERM), resume again:
the step counter and the loss curve continue with no gap or overlap, and equal an uninterrupted run's."""
import json
import os
import signal
import subprocess
import time

import pytest

from .train_helpers import ENV, metrics, train_cmd

SLOW = ["data.image_size=32", "train.batch_size=48", "train.steps=12", "train.checkpoint_every=3",
        "train.keep_checkpoints=2"]


def _run_until(cmd, out_dir, min_lines: int, sig) -> int:
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    path = os.path.join(out_dir, "metrics.jsonl")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(path) and sum(1 for _ in open(path)) >= min_lines:
            proc.send_signal(sig)
            break
        time.sleep(0.02)
    proc.wait(timeout=120)
    return proc.returncode


@pytest.mark.slow
def test_kill_resume_stop_resume_matches_uninterrupted(tmp_path):
    ref_dir, dir_ = tmp_path / "ref", tmp_path / "run"
    subprocess.run(train_cmd(ref_dir, *SLOW), env=ENV, check=True, capture_output=True)
    reference = {m["step"]: m["loss"] for m in metrics(ref_dir)}
    assert sorted(reference) == list(range(1, 13))

    rc = _run_until(train_cmd(dir_, *SLOW), dir_, 5, signal.SIGKILL)
    assert rc == -signal.SIGKILL, "the run must really be killed mid-way for this test to mean anything"
    logged_before = len(metrics(dir_))
    assert 5 <= logged_before < 12

    rc = _run_until(train_cmd(dir_, *SLOW, resume=True), dir_, 9, signal.SIGTERM)
    assert rc == 0
    status = json.load(open(dir_ / "status.json"))
    assert status["state"] == "stopped" and 9 <= status["step"] < 12
    assert os.path.isdir(dir_ / "checkpoints" / f"step-{status['step']:08d}"), "a graceful stop checkpoints"

    subprocess.run(train_cmd(dir_, *SLOW, resume=True), env=ENV, check=True, capture_output=True)
    rows = metrics(dir_)
    assert [m["step"] for m in rows] == list(range(1, 13)), "no gap, no duplicate"
    for m in rows:
        assert m["loss"] == pytest.approx(reference[m["step"]], rel=1e-5), m["step"]
    assert json.load(open(dir_ / "status.json"))["state"] == "finished"
    assert len(os.listdir(dir_ / "checkpoints")) == 2, "old checkpoints are pruned"
    assert os.path.exists(dir_ / "pipeline" / "model_index.json")

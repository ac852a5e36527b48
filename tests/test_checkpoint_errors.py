"""A corrupt or missing checkpoint gives a clear error (and nothing is unpickled)."""
import os
import subprocess

import pytest

from ntm_core.checkpoint import CheckpointError, list_checkpoints
from ntm_core.pipeline import load_pipeline
from ntm_core.train import Trainer

from .train_helpers import ENV, run_tiny, tiny_config, train_cmd


def test_corrupt_checkpoints_fall_back_then_fail_clearly(tmp_path):
    """A damaged last checkpoint: resume continues from the one before it (and says so). All damaged: a clear
    error, no traceback. Bytes overwritten in place (same size, still a valid file) are caught by the checksums."""
    run_tiny(tmp_path, "train.steps=2", "train.checkpoint_every=1")
    (s1, first), (s2, last) = list_checkpoints(str(tmp_path / "checkpoints"))
    with open(os.path.join(last, "model.safetensors"), "r+b") as f:
        f.seek(-64, os.SEEK_END)  # inside the last tensor's data: safetensors would load it without complaint
        f.write(b"\xff" * 64)
    trainer = Trainer(tiny_config(tmp_path, "train.steps=4"), resume=True)
    assert trainer.step == s1 == 1, "fell back to the previous complete checkpoint"
    trainer._release_lock()
    with open(os.path.join(first, "model.safetensors"), "r+b") as f:
        f.truncate(100)
    with pytest.raises(CheckpointError, match="checksum mismatch in .*model.safetensors"):
        Trainer(tiny_config(tmp_path, "train.steps=4"), resume=True)
    out = subprocess.run(train_cmd(tmp_path, "train.steps=4", resume=True), env=ENV, capture_output=True, text=True)
    assert out.returncode == 2 and "error: checksum mismatch" in out.stderr and "Traceback" not in out.stderr
    assert out.stdout.count("skipping a damaged checkpoint") + out.stderr.count("skipping a damaged checkpoint") == 2


def test_a_fresh_start_never_overwrites_an_earlier_runs_checkpoints(tmp_path):
    """Forgetting --resume on an interrupted job must not throw its checkpoints away: a clear error, files intact."""
    run_tiny(tmp_path, "train.steps=2", "train.checkpoint_every=1")
    before = {p: os.path.getmtime(p) for p in (tmp_path / "checkpoints").rglob("*")}
    out = subprocess.run(train_cmd(tmp_path, "train.steps=4"), env=ENV, capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "already holds a checkpoint (step 2)" in out.stderr and "--resume" in out.stderr
    assert {p: os.path.getmtime(p) for p in (tmp_path / "checkpoints").rglob("*")} == before
    trainer = Trainer(tiny_config(tmp_path, "train.steps=4"), resume=True)  # the lock was released; resume works
    assert trainer.step == 2
    trainer._release_lock()


def test_torn_metrics_line_does_not_stop_resume(tmp_path):
    run_tiny(tmp_path, "train.steps=2", "train.checkpoint_every=1")
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 0.')  # killed mid-write
    from ntm_core.train import train

    train(tiny_config(tmp_path, "train.steps=3"), resume=True)
    import pandas as pd

    assert pd.read_json(tmp_path / "metrics.jsonl", lines=True)["step"].tolist() == [1, 2, 3]


def test_half_written_checkpoint_is_ignored(tmp_path):
    run_tiny(tmp_path, "train.steps=2", "train.checkpoint_every=1")
    os.makedirs(tmp_path / "checkpoints" / "step-00000009.tmp")  # a kill during a write leaves only this
    os.makedirs(tmp_path / "checkpoints" / "step-00000010")  # … or a folder without trainer_state.json
    assert [s for s, _ in list_checkpoints(str(tmp_path / "checkpoints"))] == [1, 2]


def test_missing_or_corrupt_pipeline_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_pipeline(str(tmp_path / "nothing"))
    folder = run_tiny(tmp_path / "run", "train.steps=1")
    with open(os.path.join(folder, "predictor", "diffusion_pytorch_model.safetensors"), "wb") as f:
        f.write(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot load"):
        load_pipeline(folder)


def test_a_second_trainer_on_the_same_folder_is_refused(tmp_path):
    import sys

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.makedirs(tmp_path)  if not tmp_path.exists() else None
        (tmp_path / ".lock").write_text(str(sleeper.pid))
        with pytest.raises(ValueError, match="in use by training process"):
            Trainer(tiny_config(tmp_path, "train.steps=1"))
    finally:
        sleeper.kill()
        sleeper.wait()
    run_tiny(tmp_path, "train.steps=1")  # a stale lock (dead process) is taken over
    assert not (tmp_path / ".lock").exists(), "released at the end"

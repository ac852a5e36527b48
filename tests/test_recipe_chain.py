"""assets/train_bundled.sh's `default` chain — what every GPU session runs through `device` — end to end on the CPU
at a tiny size: the finetune from the bundled backbone and its denoiser train, are scored and exported as the
bundle; a second call skips what is finished; a call whose deadline is too close stops with exit 3 before training.
GPU time is scarce: a recipe broken by a code change must fail here, not in a lent session."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _checkout(dest: Path) -> Path:
    """The tracked files only (no runs/, no local bundles): what a clean clone or a device machine has."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dest / f)
    return dest


def _chain(repo: Path, **env) -> subprocess.CompletedProcess:
    base = {**os.environ, "PYTHON": sys.executable, "FM_PIPELINE": "assets/fm-shapes32", "CHAIN": "ntm denoiser",
            "NTM_STEPS": "2", "DEN_STEPS": "2", "EXPORT_TO": "bundles", "SECONDS_CAP": "300",
            "EXTRA": "train.batch_size=4 train.checkpoint_every=1 train.num_workers=0 train.log_every=1",
            "SCORE_ARGS": "--per-category 1 --categories single_object",
            "SAMPLE_LIK_ARGS": "--per-category 1 --samples 1 --trajectories 1 --guidance 3"}
    return subprocess.run(["bash", "assets/train_bundled.sh", "default"], cwd=repo, env={**base, **env},
                          capture_output=True, text=True, timeout=900)


def _status(repo: Path, run: str) -> dict:
    return json.loads((repo / "runs" / run / "status.json").read_text())


def test_the_default_chain_trains_scores_exports_and_resumes(tmp_path):
    repo = _checkout(tmp_path / "repo")
    first = _chain(repo)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "chain finished" in first.stdout and "training fm_to_ntm" in first.stdout + first.stderr
    for run in ("ntm-shapes32-from-fm", "ntm-shapes32-denoiser"):
        status = _status(repo, run)
        assert status["state"] == "finished" and status["step"] == 2, (run, status)
    # the finetune started from the bundled backbone, and the denoiser from the finetune
    ntm_config = (repo / "runs/ntm-shapes32-from-fm/config.yaml").read_text()
    assert "init_from: assets/fm-shapes32" in ntm_config
    den_config = (repo / "runs/ntm-shapes32-denoiser/config.yaml").read_text()
    assert "init_from: runs/ntm-shapes32-from-fm/pipeline" in den_config
    # each finished job was scored where it trained, at the three temperatures
    for name in ("ntm4-score-t1", "ntm4-score-t05", "ntm4-score-t0", "ntm4-learned-t1"):
        rows = json.loads((repo / f"runs/score-{name}.json").read_text())
        assert rows, name
        failures = json.loads((repo / f"runs/score-{name}-failures.json").read_text())["rows"]  # and why they fail
        assert failures[-1]["category"] == "overall" and "relation" in failures[-1], name
    # and each NTM's samples against real renders under its own likelihood (analysis.sample_likelihood)
    for job in ("ntm", "denoiser"):
        rows = json.loads((repo / f"runs/sample-likelihood-{job}.json").read_text())["rows"]
        assert [r["images"] for r in rows] == ["real renders", "samples", "samples"], job  # its final step, none
        assert rows[2]["final step"] == "none" and rows[1]["final step"] == ("score" if job == "ntm" else "learned")
    # the bundle: the default's folder with its learned denoiser, and no backbone export (FM_PIPELINE: not trained)
    index = json.loads((repo / "bundles/ntm-shapes32/model_index.json").read_text())
    assert index.get("denoiser") and index["denoiser"][0], index
    assert not (repo / "bundles/fm-shapes32").exists()

    # a second call finds both jobs finished: no training, the same statuses, the chain finishes again
    before = {run: _status(repo, run) for run in ("ntm-shapes32-from-fm", "ntm-shapes32-denoiser")}
    again = _chain(repo)
    assert again.returncode == 0 and "chain finished" in again.stdout, again.stderr[-3000:]
    assert "training fm_to_ntm" not in again.stdout + again.stderr
    assert {run: _status(repo, run) for run in before} == before

    # a call of bounded length (`device`) whose deadline leaves less than one run stops before training, exit 3
    late = _chain(repo, VARIANT="-late", DEADLINE=str(int(time.time()) + 30))
    assert late.returncode == 3, late.stdout[-2000:] + late.stderr[-2000:]
    assert "deadline: ntm goes on in the next call" in late.stdout
    assert not (repo / "runs/ntm-shapes32-from-fm-late/status.json").exists()


def test_job_lengths_from_an_earlier_bench(tmp_path):
    """A 15-minute GPU session has no time to bench first: BENCH=<an earlier bench_training JSON> sets each job's
    optimizer steps from its minutes at that bench's samples/s (explicit *_STEPS would win)."""
    repo = _checkout(tmp_path / "repo")
    bench = "docs/gpu-2026-11-24/bench-default.json"
    rows = {r["objective"]: r for r in json.loads((repo / bench).read_text())["rows"]}
    late = _chain(repo, BENCH=bench, NTM_MIN="3.5", DEN_MIN="1.5", NTM_STEPS="", DEN_STEPS="",
                  DEADLINE=str(int(time.time()) + 30))
    assert late.returncode == 3, late.stdout[-2000:] + late.stderr[-2000:]  # the lengths fixed, then no time to train
    lengths = dict(line.split("  #")[0].split("=", 1) for line in
                   (repo / "runs/steps-ntm-denoiser.env").read_text().splitlines())
    for var, objective, minutes in (("NTM_STEPS", "fm_to_ntm", 3.5), ("DEN_STEPS", "denoiser", 1.5)):
        r = rows[objective]
        want = int(minutes * 60 * r["samples_per_s"] / r["batch_size"])
        assert lengths[var] == f"${{{var}:-{want}}}", (var, lengths)
        assert 300 < want < 3000, want  # minutes of an H100, not seconds or hours


MNIST = REPO.parent / "shared" / "data" / "mnist"


def test_the_8bit_job_sizes_its_schedule_to_the_minutes_it_is_given(tmp_path):
    """`mnist-bpd` with BPD_MIN (issue 13's ntm-mnist28-bpd in one 15-minute GPU session; `device-bpd` wraps it):
    a short bench, the cosine schedule set to the steps those minutes allow at the benched speed, the run finished
    and exported — so a fixed-length call ends its schedule instead of stopping in its middle."""
    import pytest

    if not (MNIST / "train-images-idx3-ubyte").exists() and not (MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("MNIST idx files not beside the checkout")
    repo = _checkout(tmp_path / "repo")
    tiny = ("model.predictor.width=32 model.predictor.depth=1 model.predictor.heads=2 model.transporter.width=32 "
            "model.transporter.layers_per_block=1 model.transporter.heads=2 train.batch_size=4 train.log_every=1 "
            "train.checkpoint_every=2")
    env = {**os.environ, "PYTHON": sys.executable, "MNIST": str(MNIST), "BPD_MIN": "0.1", "BENCH_STEPS": "6",
           "EXPORT_TO": "bundles", "EXTRA": tiny}
    done = subprocess.run(["bash", "assets/train_bundled.sh", "mnist-bpd"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    bench = json.loads((repo / "runs/bench-bpd.json").read_text())["rows"][0]
    want = max(1, int(0.1 * 60 * bench["samples_per_s"] / bench["batch_size"]))
    assert (repo / "runs/steps-bpd.env").read_text().startswith(f"BPD_STEPS=${{BPD_STEPS:-{want}}}  #")
    status = _status(repo, "ntm-mnist28-bpd")
    assert status["state"] == "finished" and status["total_steps"] == want == status["step"], status
    index = json.loads((repo / "bundles/ntm-mnist28-bpd/model_index.json").read_text())
    assert index["_class_name"] == "NTMPipeline"

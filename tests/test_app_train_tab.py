"""The Train tab: on only where strangers cannot reach the server; switched on, a job launched through the API runs
as its own process, finishes, and its model appears in the app's model list; bad job settings are clear errors."""
import time

import pytest

from .browser_helpers import AppServer, make_models


@pytest.mark.slow
def test_launch_watch_and_pick_up_a_job(tmp_path):
    from gradio_client import Client

    srv = AppServer(make_models(str(tmp_path / "m")), str(tmp_path), {"NTM_STUDIO_ENABLE_TRAINING": "1"})
    try:
        client = Client(srv.url, verbose=False)
        with pytest.raises(Exception, match="starts from a trained model"):
            client.predict("x", "self-distilled denoiser for an NTM", None, "shapes (generated)", None, None,
                           "tiny (fast check)", 10, 8, api_name="/train")
        job = client.predict("smoke", "NTM from scratch", None, "shapes (generated)", None, None,
                             "tiny (fast check)", 10, 8, api_name="/train")
        job_id = job if isinstance(job, str) else job.get("value", job)
        assert "smoke" in str(job_id)
        from app.jobs import JobManager
        import os

        os.environ["NTM_STUDIO_RUNS"] = str(tmp_path)
        deadline = time.time() + 240
        state = {}
        while time.time() < deadline:
            state = JobManager().state(str(job_id))
            if state.get("state") in ("finished", "failed"):
                break
            time.sleep(1)
        assert state.get("state") == "finished", state
        assert (tmp_path / str(job_id) / "pipeline" / "model_index.json").exists()
        from app.registry import discover

        assert f"trained: {job_id}" in discover()
    finally:
        srv.stop()


@pytest.mark.parametrize("env, on", [
    ({}, True),  # the quick start: gradio's default 127.0.0.1
    ({"GRADIO_SERVER_NAME": "localhost"}, True),
    ({"GRADIO_SERVER_NAME": "0.0.0.0"}, False),  # reachable from other machines
    ({"SPACE_ID": "user/ntm-studio", "GRADIO_SERVER_NAME": "0.0.0.0"}, False),
    ({"SPACE_ID": "user/ntm-studio"}, False),
    ({"GRADIO_SHARE": "True"}, False),  # a public share link
    ({"SPACE_ID": "user/ntm-studio", "NTM_STUDIO_ENABLE_TRAINING": "1"}, True),  # a duplicated Space, switched on
    ({"NTM_STUDIO_ENABLE_TRAINING": "0"}, False),
    ({"GRADIO_SERVER_NAME": "0.0.0.0", "NTM_STUDIO_ENABLE_TRAINING": "yes"}, False),  # only "1" switches it on
])
def test_training_is_on_only_where_strangers_cannot_reach_it(monkeypatch, env, on):
    from app.train import enabled

    for key in ("NTM_STUDIO_ENABLE_TRAINING", "SPACE_ID", "GRADIO_SERVER_NAME", "GRADIO_SHARE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert enabled() is on


def test_the_recipe_size_trains_what_the_bundled_recipe_trains(tmp_path):
    """A job of the recipe size has the networks, time grid and optimizer of ntm_core/configs/shapes32_fm.yaml (what
    assets/train_bundled.sh runs), the app's steps and batch, and its config passes the trainer's checks."""
    import yaml

    from app.jobs import RECIPE, job_config
    from ntm_core.config import load_config

    recipe = load_config("ntm_core/configs/shapes32_fm.yaml")
    data = {"kind": "shapes", "image_size": 32, "channels": 3}
    cfg = job_config(job="j", out=str(tmp_path), data=data, objective="ntm", init_from=None, size=RECIPE, steps=300,
                     batch_size=64)
    assert cfg["model"] == recipe["model"] and cfg["text"] == recipe["text"]
    assert cfg["train"]["lr"] == recipe["train"]["lr"] and cfg["train"]["ema_decay"] == recipe["train"]["ema_decay"]
    assert (cfg["train"]["steps"], cfg["train"]["batch_size"], cfg["train"]["warmup_steps"]) == (300, 64, 30)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(cfg))
    loaded = load_config(str(path))
    assert loaded["model"]["predictor"]["patch_size"] == 2 and loaded["model"]["schedule"]["shift"] == 3.0
    tiny = job_config(job="j", out=str(tmp_path), data=data, objective="ntm", init_from=None,
                      size="tiny (fast check)", steps=300, batch_size=64)
    assert tiny["model"]["predictor"]["width"] == 64 and "shift" not in tiny["model"]["schedule"]


def test_a_finetune_trains_on_its_flow_matching_models_grid_and_image_shape(tmp_path):
    import json

    from app.jobs import check_start_model, job_config

    fm = tmp_path / "fm"
    (fm / "scheduler").mkdir(parents=True)
    (fm / "predictor").mkdir()
    (fm / "predictor" / "config.json").write_text(json.dumps({"sample_size": 28, "in_channels": 3}))
    for shift, expect in ((2.5, 2.5), (1, 1.0), ("3", None), (-1, None)):
        (fm / "scheduler" / "scheduler_config.json").write_text(json.dumps({"shift": shift}))
        cfg = job_config(job="j", out=str(tmp_path), data={"kind": "shapes", "image_size": 32, "channels": 3},
                         objective="fm_to_ntm", init_from=str(fm), size="tiny (fast check)", steps=10, batch_size=4)
        assert cfg["model"]["schedule"].get("shift") == expect, shift
    assert check_start_model(str(fm), {"kind": "shapes", "image_size": 32, "channels": 3})["image_size"] == 28
    with pytest.raises(ValueError, match="fm draws 3-channel images and mnist images have 1"):
        check_start_model(str(fm), {"kind": "mnist", "image_size": 32, "channels": 1})
    with pytest.raises(ValueError, match="no predictor config"):
        check_start_model(str(tmp_path), {"kind": "shapes", "image_size": 32, "channels": 3})


def test_the_tab_shows_only_the_inputs_a_choice_needs():
    from app.registry import Registry
    from app.train import data_inputs, dataset_of, start_picker

    registry = Registry()
    assert start_picker(registry, "NTM from scratch").visible is False
    fm = start_picker(registry, "NTM finetuned from flow matching")
    fm_labels = [c[0] if isinstance(c, tuple) else c for c in fm.choices]
    assert fm.visible and fm.value == "fm-shapes32" and "ntm-shapes32" not in fm_labels
    den = start_picker(registry, "self-distilled denoiser for an NTM")
    den_labels = [c[0] if isinstance(c, tuple) else c for c in den.choices]
    assert den.value == "ntm-shapes32" and "fm-shapes32" not in den_labels and "ntm-mnist28" in den_labels
    folders = ["data/fashion-mnist", "data/mnist"]
    upload, root = data_inputs("MNIST", folders)
    assert upload.visible is False and root.visible and root.value == "data/mnist"
    upload, root = data_inputs("my images (zip: images + captions)", folders)
    assert upload.visible and root.visible is False
    assert dataset_of(registry, "ntm-mnist28", "shapes (generated)") == "MNIST"
    assert dataset_of(registry, "no-such-model", "Fashion-MNIST") == "Fashion-MNIST"


def test_progress_says_how_far_how_fast_and_how_long():
    import pandas as pd

    from app.train import progress_text

    m = pd.DataFrame({"step": [25, 50], "loss": [1.5, 1.25], "samples_per_s": [80.0, 80.0], "seconds": [0.8, 0.8]})
    text = progress_text("job", {"state": "running", "step": 20, "total_steps": 200, "device": "cpu"}, m)
    assert "step 50/200 (25 %)" in text and "loss 1.2500" in text and "80 samples/s" in text
    assert "about 2 min left" in text  # 150 steps × 0.8 s
    done = progress_text("job", {"state": "finished", "step": 200, "total_steps": 200}, m.assign(step=[100, 200]))
    assert "left" not in done and "(100 %)" in done
    assert "step 0" in progress_text("job", {}, pd.DataFrame(columns=["step", "loss"]))


def test_the_log_keeps_messages_and_only_the_latest_progress_bar(tmp_path, monkeypatch):
    from app.jobs import JobManager

    monkeypatch.setenv("NTM_STUDIO_RUNS", str(tmp_path))
    (tmp_path / "j").mkdir()
    bar = "j:  {p}%|██        | {s}/60 [00:10<00:54,  1.05s/it, K=1, loss=2.0]"
    (tmp_path / "j" / "train.log").write_text(
        "training ntm on CPU\n" + "\r".join(bar.format(p=10 * i, s=6 * i) for i in range(1, 4)) + "\n"
        "checkpoint saved at step 18\n" + "\r".join(bar.format(p=10 * i, s=6 * i) for i in range(4, 6)) + "\n")
    assert JobManager().log_tail("j").splitlines() == [
        "training ntm on CPU", bar.format(p=30, s=18), "checkpoint saved at step 18", bar.format(p=50, s=30)]


def test_a_pop_up_says_once_that_the_watched_job_ended():
    from app.train import end_notice, progress_text
    import pandas as pd

    none = pd.DataFrame(columns=["step", "loss"])
    running = progress_text("job-a", {"state": "running", "step": 5, "total_steps": 10}, none)
    done = {"state": "finished", "step": 10, "total_steps": 10}
    assert "trained: job-a" in end_notice("job-a", running, done)
    assert "boom" in end_notice("job-a", running, {"state": "failed", "error": "boom"})
    assert end_notice("job-a", progress_text("job-a", done, none), done) is None  # said already
    assert end_notice("job-b", running, done) is None  # the page showed another job
    assert end_notice("job-a", "No job selected.", done) is None
    assert end_notice("job-a", running, {"state": "running", "step": 6}) is None


def test_the_loss_curve_has_one_line_per_trajectory_length():
    import pandas as pd

    from app.figures import loss_curve_figure

    m = pd.DataFrame({"step": [1, 2, 3, 4], "loss": [20.0, 1.0, 19.0, 0.9], "num_steps": [1, 4, 1, 4],
                      "bits_per_dim": [25.0, 1.2, 24.0, 1.1]})
    fig = loss_curve_figure(m)
    lines = {t.name: list(t.y) for t in fig.data}
    assert lines == {"loss · K=1": [20.0, 19.0], "bits/dim · K=1": [25.0, 24.0], "loss · K=4": [1.0, 0.9],
                     "bits/dim · K=4": [1.2, 1.1]}
    assert [t.name for t in loss_curve_figure(m.assign(num_steps=4)).data] == ["loss", "bits/dim"]
    # no metrics yet: no empty axes, a line that says why
    empty = loss_curve_figure(m.iloc[:0], empty_note="No job selected.")
    assert not empty.data and [a.text for a in empty.layout.annotations] == ["No job selected."]
    assert empty.layout.xaxis.visible is False and empty.layout.yaxis.visible is False
    assert "first log interval" in loss_curve_figure(m.iloc[:0]).layout.annotations[0].text


def test_the_loss_axes_fit_the_settled_curve_not_the_untrained_start():
    import numpy as np
    import pandas as pd

    from app.figures import loss_curve_figure, settled_range

    step = pd.Series(np.arange(1, 201, dtype=float))
    spiky = pd.Series(np.r_[[180.0, 120.0, 60.0], np.linspace(-0.5, -1.0, 197)])  # an NLL may go negative
    lo, hi = settled_range(step, spiky)
    # the curve after its first quarter shows whole, the untrained start runs off the top
    assert lo <= -1.0 and spiky[step >= 50.75].max() <= hi < 0.0, (lo, hi)
    assert settled_range(step, pd.Series(np.linspace(2.0, 1.0, 200))) is None  # nothing to cut: autorange
    fig = loss_curve_figure(pd.DataFrame({"step": step, "loss": spiky}))
    assert list(fig.layout.yaxis.range) == [lo, hi] and "run off the top" in fig.layout.annotations[0].text
    assert not loss_curve_figure(pd.DataFrame({"step": step, "loss": np.linspace(2.0, 1.0, 200)})).layout.annotations


def test_the_last_metrics_line_is_read_from_the_end(tmp_path):
    import json

    from ntm_core.runs import RunFolder

    run = RunFolder(str(tmp_path))
    assert run.last_metrics() == {}
    run.append_metrics([{"step": s, "loss": 1.0 / s, "pad": "x" * 300} for s in range(1, 200)])
    with open(run.metrics_path, "a") as f:
        f.write(json.dumps({"step": 200})[:5])  # torn by a kill mid-write
    assert run.last_metrics()["step"] == 199

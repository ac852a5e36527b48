"""The Train tab, switched on: a job launched through the API runs as its own process, finishes, and its model
appears in the app's model list; bad job settings are clear errors."""
import time

import pytest

from .browser_helpers import AppServer, make_models

pytestmark = pytest.mark.slow


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

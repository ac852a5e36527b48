"""Start the app on 127.0.0.1 in a subprocess (small test models) and drive it."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from .train_helpers import ENV, ROOT, run_tiny

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_models(root) -> str:
    """A tiny NTM with a learned denoiser, trained for a few steps: enough for the app's code paths."""
    ntm = run_tiny(os.path.join(root, "ntm"), "train.steps=3")
    run_tiny(os.path.join(root, "testmodel"), "objective=denoiser", f"init_from={ntm}", "train.steps=2")
    return os.path.join(root, "testmodel", "pipeline")


class AppServer:
    def __init__(self, models: str, runs: str, extra_env: dict | None = None):
        self.port, self.runs = free_port(), runs
        self.url = f"http://127.0.0.1:{self.port}/"
        env = dict(ENV, NTM_STUDIO_MODELS=models, NTM_STUDIO_RUNS=runs, GRADIO_SERVER_PORT=str(self.port),
                   GRADIO_ANALYTICS_ENABLED="False", **(extra_env or {}))
        self.log = open(os.path.join(runs, f"app-{self.port}.log"), "w")
        self.proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited early: {open(self.log.name).read()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError("the app did not start within 120 s")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

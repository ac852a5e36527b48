"""A bounded load test of the app over HTTP: N concurrent gradio_client users on loopback mixing Generate and
Likelihood calls against `python app.py` (started here on a free port, bundled models). Reports p50/p95 latency
per endpoint, errors, and the server's RSS before and after the calls (the goal: no errors, flat memory).

    python -m app.load_test --users 8 --calls 200 --out docs/load-test
    python -m app.load_test --url http://127.0.0.1:7860/ --pid 1234   # an app that is already running
"""
from __future__ import annotations

import argparse
import functools
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from ntm_core.report import environment, report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPLOAD = os.path.join(ROOT, "assets", "examples", "shapes-render.png")
PROMPTS = ["a red circle", "two green triangles", "a blue square to the left of a yellow circle",
           "a picture of three blue squares", "a cyan circle over a green square"]


def rss_mib(pid: int) -> float:
    """Resident memory of the server process and its children (MiB), from /proc."""
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
        except (OSError, StopIteration):
            continue
    return total


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def start_app(model: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    log = open(os.path.join(tempfile.gettempdir(), f"ntm-load-test-app-{port}.log"), "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited: see {log.name}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, f"http://127.0.0.1:{port}/"
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise TimeoutError("the app did not start within 180 s")


@functools.lru_cache
def final_steps(model: str) -> list[str]:
    """The mix of final steps a user picks: mostly the learned denoiser where the model has one."""
    from app.registry import Registry

    return ["learned", "learned", "score"] if Registry().info(model).has_denoiser else ["score", "score", "none"]


def one_call(client, kind: str, model: str, rng: random.Random) -> None:
    from gradio_client import handle_file

    if kind == "generate":
        client.predict(rng.choice(PROMPTS), model, 4, 3.0, 1.0, rng.randrange(2**31), False, rng.choice([1, 2, 4]),
                       rng.choice(final_steps(model)), api_name="/generate")
    else:
        client.predict(handle_file(UPLOAD), "\n".join(rng.sample(PROMPTS, 3)), model, 4, 2, rng.randrange(1000),
                       api_name="/likelihood")


def run(url: str, pid: int | None, users: int, calls: int, model: str, likelihood_share: float, seed: int):
    from gradio_client import Client

    plan = random.Random(seed)
    kinds = ["likelihood" if plan.random() < likelihood_share else "generate" for _ in range(calls)]
    warm = Client(url, verbose=False)
    for kind in ("generate", "likelihood"):  # models loaded, caches filled: RSS "before" is the steady state
        one_call(warm, kind, model, random.Random(0))
    rss_before = rss_mib(pid) if pid else float("nan")
    clients = [Client(url, verbose=False) for _ in range(users)]
    lock, queue, rows = threading.Lock(), list(enumerate(kinds)), []

    def user(u: int) -> None:
        rng = random.Random(seed * 1000 + u)
        while True:
            with lock:
                if not queue:
                    return
                i, kind = queue.pop(0)
            start = time.perf_counter()
            error = ""
            try:
                one_call(clients[u], kind, model, rng)
            except Exception as e:  # every failure is counted and its message kept
                error = f"{type(e).__name__}: {e}"[:200]
            rows.append({"call": i, "user": u, "endpoint": kind, "seconds": time.perf_counter() - start,
                         "error": error})

    trace, done = [(0, rss_before)], threading.Event()

    def sample_rss() -> None:  # the server's memory as calls complete: growth that levels off vs. a leak
        while not done.wait(5.0):
            if pid:
                trace.append((len(rows), rss_mib(pid)))

    start = time.perf_counter()
    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    with ThreadPoolExecutor(users) as pool:
        list(pool.map(user, range(users)))
    wall = time.perf_counter() - start
    done.set()
    rss_after = rss_mib(pid) if pid else float("nan")
    trace.append((len(rows), rss_after))
    return pd.DataFrame(rows), wall, rss_before, rss_after, trace


def worst_cases(url: str, model: str, fm_model: str = "fm-shapes32") -> pd.DataFrame:
    """Each endpoint's largest allowed request, timed once with no other load: what a spaces.GPU(duration=…) must
    cover (on a GPU these run faster, so they are upper bounds)."""
    from gradio_client import Client, handle_file

    c = Client(url, verbose=False)
    many = "\n".join(f"{p} {i}" for i in range(6) for p in PROMPTS)[:10_000].splitlines()[:32]
    cases = {
        "generate: 8 images, score denoising": lambda: c.predict(
            PROMPTS[0], model, 4, 3.0, 1.0, 0, False, 8, "score", api_name="/generate"),
        "generate: flow matching, 8 images × 50 steps": lambda: c.predict(
            PROMPTS[0], fm_model, 50, 3.0, 1.0, 0, False, 8, "none", api_name="/generate"),
        "latents: 4 steps": lambda: c.predict(PROMPTS[0], model, 4, 3.0, 0, False, api_name="/latents"),
        "likelihood: 32 prompts × 16 trajectories": lambda: c.predict(
            handle_file(UPLOAD), "\n".join(many), model, 8, 16, 0, api_name="/likelihood"),
        "likelihood_generated: 8 images + 4 real renders × 16 trajectories, K = 8": lambda: c.predict(
            PROMPTS[0], model, 8, 8, 16, 0, 4, api_name="/likelihood_generated"),
    }
    # Compare needs an NTM with a learned denoiser (none is bundled until the default's is trained: no row then)
    from app.registry import Registry

    denoised = Registry().choices("denoiser")
    if denoised:
        extra = [m for m in ("fm-shapes32", "gauss-shapes32", "ntm-shapes32", "ntm-mnist28") if m != denoised[0]][:4]
        cases["compare: 4 steps + 4 extra models"] = lambda: c.predict(
            PROMPTS[0], denoised[0], 4, 3.0, 0, False, extra, api_name="/compare")
    rows = []
    for name, call in cases.items():
        call() if name.startswith("generate: 8") else None  # first call of the run loads the models
        start = time.perf_counter()
        call()
        rows.append({"request": name, "seconds": time.perf_counter() - start})
    return pd.DataFrame(rows)


def summarize(calls: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for name, g in [*calls.groupby("endpoint"), ("all", calls)]:
        ok = g[g["error"] == ""]["seconds"].to_numpy()
        rows.append({"endpoint": name, "calls": len(g), "errors": int((g["error"] != "").sum()),
                     "p50 s": float(np.percentile(ok, 50)) if len(ok) else float("nan"),
                     "p95 s": float(np.percentile(ok, 95)) if len(ok) else float("nan"),
                     "max s": float(ok.max()) if len(ok) else float("nan")})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--model", default="ntm-shapes32")
    ap.add_argument("--likelihood-share", type=float, default=0.25, help="fraction of calls that are /likelihood")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--url", default=None, help="an app already running (default: start one here)")
    ap.add_argument("--pid", type=int, default=None, help="its process id, for RSS")
    ap.add_argument("--worst-case", action="store_true", help="time each endpoint's largest request instead")
    ap.add_argument("--out", default="results/load-test")
    a = ap.parse_args()

    proc = None
    url, pid = a.url, a.pid
    if url is None:
        proc, url = start_app(a.model)
        pid = proc.pid
    if a.worst_case:
        try:
            report(worst_cases(url, a.model), "Largest allowed request per endpoint, no other load", environment(
                model=a.model), a.out)
        finally:
            if proc is not None:
                proc.terminate()
        return
    try:
        calls, wall, before, after, trace = run(url, pid, a.users, a.calls, a.model, a.likelihood_share, a.seed)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    table = summarize(calls)
    errors = calls[calls["error"] != ""]["error"].value_counts().to_dict()
    env = environment(users=a.users, calls=a.calls, model=a.model, wall_s=round(wall, 1),
                      rss_before_mib=round(before, 1), rss_after_mib=round(after, 1),
                      rss_growth_mib=round(after - before, 1), throughput_calls_per_s=round(len(calls) / wall, 2))
    half = [r for n, r in trace if n <= len(calls) // 2]
    env["rss_growth_second_half_mib"] = round(after - (half[-1] if half else before), 1)
    report(table, f"Load test: {a.users} concurrent users, {len(calls)} calls over HTTP", env, a.out,
           extra={"errors": errors, "rss_trace": [{"calls_done": n, "rss_mib": round(r, 1)} for n, r in trace]})
    print(f"server RSS {before:.0f} → {after:.0f} MiB ({after - before:+.0f}; second half "
          f"{env['rss_growth_second_half_mib']:+.0f}) over {len(calls)} calls; {sum(errors.values())} errors")
    print("RSS trace (calls done → MiB): " + ", ".join(f"{n}→{r:.0f}" for n, r in trace[:: max(1, len(trace) // 12)]))


if __name__ == "__main__":
    main()

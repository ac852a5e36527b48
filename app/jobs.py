"""Training jobs launched from the app: each a separate process running `python -m ntm_core.train`
(`accelerate launch --multi_gpu` when several GPUs are present), logging into runs/<job>/.

What a visitor can reach is bounded: a job is named by its id (never a path), uploads are size- and count-capped
before extraction, MNIST folders come from a fixed list (NTM_STUDIO_DATA), and at most NTM_STUDIO_MAX_JOBS
trainers run at once."""
from __future__ import annotations

import copy
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile

import pandas as pd
import torch
import yaml

from ntm_core.config import load_config
from ntm_core.runs import RunFolder

from .registry import ROOT, read_json, runs_dir

SIZES = {  # per model size: transporter / predictor / denoiser widths and depths
    "tiny (fast check)": {"transporter": {"num_blocks": 2, "layers_per_block": 1, "width": 32, "heads": 4},
                          "predictor": {"width": 64, "depth": 2, "heads": 4},
                          "denoiser": {"width": 32, "depth": 1, "heads": 4}},
    "small (≈2.8M, CPU)": {"transporter": {"num_blocks": 2, "layers_per_block": 2, "width": 96, "heads": 4},
                           "predictor": {"width": 160, "depth": 4, "heads": 5},
                           "denoiser": {"width": 128, "depth": 2, "heads": 4}},
}
RECIPE = "bundled models' recipe (≈5M, GPU)"  # a size whose model and optimizer come from the recipe's config file
RECIPES = {"shapes": "shapes32_fm.yaml", "imagefolder": "shapes32_fm.yaml", "mnist": "mnist28_fm.yaml",
           "fashion-mnist": "mnist28_fm.yaml"}  # the file assets/train_bundled.sh trains that kind of data with
RECIPE_TRAIN = ("lr", "warmup_steps", "ema_decay", "grad_clip", "mixed_precision", "log_every")


def sizes() -> list[str]:
    return [*SIZES, RECIPE]


def recipe_config(dataset: str) -> dict:
    """The bundled models' training config for a kind of data (ntm_core/configs), as the trainer reads it."""
    return load_config(os.path.join(ROOT, "ntm_core", "configs", RECIPES[dataset]))


def job_config(*, job: str, out: str, data: dict, objective: str, init_from: str | None, size: str, steps: int,
               batch_size: int) -> dict:
    """The training config of a job launched from the app: the size's networks (or the recipe's, with its optimizer
    settings), the app's data, steps and batch. A finetune from flow matching trains on the FM model's time grid, the
    grid its step 0 samples best on (README, 'Where the steps go')."""
    steps, text = int(steps), {"encoder": "minilm", "max_length": 32, "drop_prob": 0.1}
    if size == RECIPE:
        recipe = recipe_config(data["kind"])
        text = dict(recipe["text"])
        model = copy.deepcopy(recipe["model"])
        if not init_from:  # a start model keeps its own image size
            data = dict(data, image_size=recipe["data"]["image_size"])
        train = {k: recipe["train"][k] for k in RECIPE_TRAIN}
        train["warmup_steps"] = min(train["warmup_steps"], max(1, steps // 10))
    else:
        s = SIZES[size]
        model = {"transporter": dict(s["transporter"], patch_size=4),
                 "predictor": dict(s["predictor"], patch_size=4, markov=False),
                 "schedule": {"t_min": 0.05, "train_num_steps": [1, 2, 4]}, "denoiser": s["denoiser"]}
        train = {"lr": 5e-4, "warmup_steps": 20}
    if objective == "fm_to_ntm" and init_from:
        shift = _scheduler_shift(init_from)
        if shift is not None:
            model["schedule"]["shift"] = shift
    train.update(steps=steps, batch_size=int(batch_size), checkpoint_every=max(10, steps // 10))
    return {"name": job, "objective": objective, "output_dir": out, "init_from": init_from, "data": data,
            "text": text, "model": model, "train": train}


def _scheduler_shift(folder: str) -> float | None:
    shift = read_json(os.path.join(folder, "scheduler", "scheduler_config.json")).get("shift")
    return float(shift) if isinstance(shift, (int, float)) and not isinstance(shift, bool) and shift > 0 else None


def check_start_model(folder: str, data: dict) -> dict:
    """`data` at the start model's image size; a model drawing another number of channels than the data is refused
    here, not minutes later in the job's log."""
    cfg = read_json(os.path.join(folder, "predictor", "config.json"))
    size, channels = cfg.get("sample_size"), cfg.get("in_channels")
    if not isinstance(size, int) or not isinstance(channels, int):
        raise ValueError(f"{os.path.basename(folder.rstrip(os.sep))} is not a pipeline this tab can start from "
                         "(no predictor config)")
    if channels != data["channels"]:
        raise ValueError(f"{os.path.basename(folder.rstrip(os.sep))} draws {channels}-channel images and "
                         f"{data['kind']} images have {data['channels']}: pick a start model trained on this dataset")
    return dict(data, image_size=size)


PROGRESS_LINE = re.compile(r"^.*?\s\d{1,3}%\|.*\|\s*\d+/\d+ \[")  # a tqdm bar: "name:  42%|███   | 42/100 ["
JOB_COLUMNS = ["job", "objective", "state", "step", "device"]
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,80}$")
ZIP_MAX_FILES = 20_000
ZIP_MAX_BYTES = 512 * 2**20  # uncompressed (declared sizes are enforced by zipfile's CRC/size check)


def max_jobs() -> int:
    return int(os.environ.get("NTM_STUDIO_MAX_JOBS", max(1, torch.cuda.device_count())))


def data_folders() -> dict[str, str]:
    """label → folder of IDX files offered to the Train tab: each folder under NTM_STUDIO_DATA (os.pathsep-separated;
    default ../shared/data beside the checkout) that holds *-idx*-ubyte files. Nothing else on the server is
    reachable from the tab."""
    default = os.path.join(os.path.dirname(ROOT), "shared", "data")
    found = {}
    for root in filter(None, os.environ.get("NTM_STUDIO_DATA", default).split(os.pathsep)):
        for folder in sorted({os.path.dirname(p) for p in glob.glob(os.path.join(root, "**", "*-idx*-ubyte*"),
                                                                      recursive=True)}):
            found[os.path.relpath(folder, os.path.dirname(root.rstrip(os.sep)))] = folder
    return found


def hardware() -> str:
    n = torch.cuda.device_count()
    return f"{n}× {torch.cuda.get_device_name(0)} (bf16)" if n else "CPU (no GPU found)"


class _Reserved:
    """A launch in progress (its zip being unpacked): holds a slot like a running process."""

    returncode = None

    def poll(self):
        return None


class JobManager:
    def __init__(self):
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def _dir(self, job: str) -> str:
        """A job's folder from its id; anything else (a path, "..", a name with slashes) is refused."""
        if not isinstance(job, str) or not JOB_ID.match(job):
            raise ValueError("no such job: pick one from the list")
        return os.path.join(runs_dir(), job)

    def exists(self, job: str) -> bool:
        try:
            return os.path.exists(os.path.join(self._dir(job), "job.yaml"))
        except ValueError:
            return False

    def prepare_data(self, job: str, upload: str | None) -> str:
        """Unpack an uploaded zip of images + captions into the job folder (checked for unsafe names, member count
        and total size before anything is written); returns the folder."""
        target = os.path.join(self._dir(job), "data")
        try:
            with zipfile.ZipFile(upload) as z:
                infos = z.infolist()
                if len(infos) > ZIP_MAX_FILES:
                    raise ValueError(f"the zip has {len(infos)} files; at most {ZIP_MAX_FILES:,}")
                total = sum(i.file_size for i in infos)
                if total > ZIP_MAX_BYTES:
                    raise ValueError(f"the zip expands to {total / 2**20:.0f} MiB; at most {ZIP_MAX_BYTES / 2**20:.0f}")
                for member in z.namelist():
                    if os.path.isabs(member) or ".." in member.replace("\\", "/").split("/"):
                        raise ValueError(f"unsafe path in zip: {member}")
                z.extractall(target)
        except zipfile.BadZipFile as e:
            raise ValueError(f"the upload is not a zip file: {e}") from e
        return target

    def running(self) -> list[str]:
        with self._lock:
            return self._busy()

    def _busy(self) -> list[str]:  # under self._lock
        return [job for job, proc in self._procs.items() if proc.poll() is None]

    def _new_job_dir(self, name: str) -> str:
        """A fresh id (two launches with one name in one second get two): the folder is created exclusively."""
        base = f"{time.strftime('%Y%m%d-%H%M%S')}-{''.join(c if c.isalnum() else '-' for c in name)[:40] or 'job'}"
        os.makedirs(runs_dir(), exist_ok=True)
        for n in range(1, 1000):
            job = base if n == 1 else f"{base}-{n}"
            try:
                os.makedirs(self._dir(job))
                return job
            except FileExistsError:
                continue
        raise RuntimeError("could not allocate a job id")

    def launch(self, *, name: str, dataset: str, size: str, steps: int, objective: str, batch_size: int = 32,
               init_from: str | None = None, upload: str | None = None, image_size: int = 32,
               data_root: str | None = None) -> str:
        if size not in sizes():
            raise ValueError(f"unknown model size {size!r}; one of: {', '.join(sizes())}")
        if objective in ("fm_to_ntm", "denoiser") and not init_from:
            raise ValueError(f"{objective} starts from a trained model: pick one")
        data = {"kind": dataset, "image_size": image_size, "channels": 3}
        if dataset == "imagefolder" and not upload:
            raise ValueError("upload a zip of images with captions (metadata.jsonl or .txt files)")
        if dataset in ("mnist", "fashion-mnist"):
            folders = data_folders()
            if data_root not in folders:  # a label from the list, never a server path
                raise ValueError(f"{dataset} needs its IDX files: pick a data folder from the list "
                                 f"({', '.join(folders) or 'none offered on this server'})")
            data.update(root=folders[data_root], channels=1, image_size=32)
        if objective in ("fm_to_ntm", "denoiser"):
            data = check_start_model(init_from, data)
        with self._lock:
            busy = self._busy()
            if len(busy) >= max_jobs():
                raise ValueError(f"{len(busy)} training job(s) already running ({', '.join(busy)}); at most "
                                 f"{max_jobs()} at a time here — wait for it or cancel it")
            job = self._new_job_dir(name)
            self._procs[job] = _Reserved()  # counts as running until its process starts
        out = self._dir(job)
        try:
            self._start(job, out, data, upload, objective, init_from, size, steps, batch_size)
        except BaseException:  # nothing half-made stays behind, and the slot is free again
            with self._lock:
                self._procs.pop(job, None)
            shutil.rmtree(out, ignore_errors=True)
            raise
        return job

    def _start(self, job, out, data, upload, objective, init_from, size, steps, batch_size) -> None:
        if data["kind"] == "imagefolder":
            data["root"] = self.prepare_data(job, upload)
        cfg = job_config(job=job, out=out, data=data, objective=objective, init_from=init_from, size=size, steps=steps,
                         batch_size=batch_size)
        path = os.path.join(out, "job.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
        n_gpu = torch.cuda.device_count()
        if n_gpu > 1:
            cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n_gpu),
                   "-m", "ntm_core.train", "--config", path]
        else:
            cmd = [sys.executable, "-m", "ntm_core.train", "--config", path]
        log = open(os.path.join(out, "train.log"), "w")
        env = dict(os.environ, PYTHONPATH=ROOT, HF_HUB_OFFLINE="1")
        with open(os.path.join(out, "command.json"), "w") as f:
            json.dump({"command": cmd, "hardware": hardware()}, f)
        with self._lock:
            self._procs[job] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                                start_new_session=True)

    def cancel(self, job: str) -> str:
        self._dir(job)
        with self._lock:
            proc = self._procs.get(job)
        if proc is None or proc.poll() is not None:
            return f"{job} is not running"
        os.killpg(proc.pid, signal.SIGTERM)  # the trainer checkpoints and stops after its current step
        return f"stopping {job} (it saves a checkpoint first)"

    def state(self, job: str) -> dict:
        status = RunFolder(self._dir(job)).status()
        proc = self._procs.get(job)
        if proc is not None and proc.poll() is not None and status.get("state") in (None, "running"):
            status["state"] = "failed" if proc.returncode else "finished"
        if proc is not None and proc.poll() is None and not status:
            status["state"] = "starting"
        return status

    def jobs(self) -> pd.DataFrame:
        rows = []
        runs = runs_dir()
        for job in sorted(os.listdir(runs), reverse=True) if os.path.isdir(runs) else []:
            if not os.path.exists(os.path.join(runs, job, "job.yaml")):
                continue
            st = self.state(job)
            step = RunFolder(os.path.join(runs, job)).step(st)
            rows.append({"job": job, "objective": st.get("objective", ""), "state": st.get("state", "unknown"),
                         "step": f"{step}/{st.get('total_steps', '?')}", "device": st.get("device", "")})
        return pd.DataFrame(rows, columns=JOB_COLUMNS)

    def metrics(self, job: str) -> pd.DataFrame:
        return RunFolder(self._dir(job)).metrics()

    def log_tail(self, job: str, lines: int = 25) -> str:
        path = os.path.join(self._dir(job), "train.log")
        if not os.path.exists(path):
            return ""
        with open(path, errors="replace") as f:
            text = f.read()[-20000:].replace("\r", "\n")
        kept: list[str] = []
        for ln in filter(str.strip, text.splitlines()):
            if kept and PROGRESS_LINE.match(ln) and PROGRESS_LINE.match(kept[-1]):
                kept[-1] = ln  # a progress bar's redraws: only the latest is news
            else:
                kept.append(ln)
        return "\n".join(kept[-lines:])

"""The trainer: one loop on `accelerate` for every objective (ntm, gauss, fm, fm_to_ntm, denoiser).

    python -m ntm_core.train --config ntm_core/configs/shapes32.yaml [--resume] [--set train.steps=200 ...]
    accelerate launch --num_processes 2 -m ntm_core.train --config …      (data-parallel; CPU or GPUs)

CPU here, one or many GPUs elsewhere (bf16 autocast on GPU with mixed_precision: auto). Gradient accumulation,
EMA weights (diffusers EMAModel), warmup + cosine schedule, gradient clipping, a tqdm bar, metrics appended to
<output_dir>/metrics.jsonl (pandas.read_json(..., lines=True)). Checkpoints are atomic folders of safetensors +
JSON; --resume continues from the last one with the same step counter, the same data order and the same noise,
so the loss curve continues with no gap. SIGTERM / Ctrl-C stop after the current step with a checkpoint.
The finished run writes <output_dir>/pipeline: a pipeline folder (EMA weights) the app and analysis load.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import signal
import sys
import time

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from .checkpoint import CheckpointError, atomic_dir, list_checkpoints, load_checkpoint, prune_checkpoints, save_checkpoint
from .data import collate

DEFAULTS: dict = {
    "name": "run",
    "objective": "ntm",  # ntm | gauss | fm | fm_to_ntm | denoiser
    "output_dir": "runs/run",
    "seed": 0,
    "init_from": None,  # a pipeline folder: the FM model (fm_to_ntm) or the NTM (denoiser)
    "data": {"kind": "shapes", "root": None, "image_size": 32, "channels": 3},
    "text": {"encoder": "minilm", "max_length": 32, "drop_prob": 0.1},  # text: null → unconditional
    "model": {"transporter": {}, "predictor": {}, "schedule": {}, "denoiser": {}},
    "train": {
        "steps": 1000, "batch_size": 64, "lr": 3e-4, "warmup_steps": 50, "weight_decay": 0.0, "grad_clip": 1.0,
        "ema_decay": 0.999, "grad_accum": 1, "mixed_precision": "auto", "checkpoint_every": 200,
        "keep_checkpoints": 2, "log_every": 1, "aux_lambda": 2.5, "max_seconds": None,
        "num_workers": "auto",
        # data echoing (Choi et al. 2019): each rendered micro-batch serves this many consecutive micro-steps, each with
        # fresh trajectory noise, K and text dropout — when rendering, not the accelerator, limits throughput
        "data_echo": 1,
    },
}
OBJECTIVES = ("ntm", "gauss", "fm", "fm_to_ntm", "denoiser")


# ---------------------------------------------------------------- config
def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | None, overrides: list[str] = ()) -> dict:
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        with open(path) as f:
            cfg = _merge(cfg, yaml.safe_load(f) or {})
    for item in overrides:
        key, _, raw = item.partition("=")
        if not _:
            raise ValueError(f"--set expects key=value, got {item!r}")
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(raw)
    if cfg["objective"] not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {cfg['objective']!r}")
    if cfg["objective"] in ("fm_to_ntm", "denoiser") and not cfg["init_from"]:
        raise ValueError(f"objective {cfg['objective']} needs init_from: a pipeline folder to start from")
    if not isinstance(cfg["train"]["data_echo"], int) or cfg["train"]["data_echo"] < 1:
        raise ValueError(f"train.data_echo must be an integer ≥ 1, got {cfg['train']['data_echo']!r}")
    return cfg


# ---------------------------------------------------------------- data
def build_dataset(cfg: dict, seed: int):
    from .data.idx import IdxDataset
    from .data.imagefolder import ImageFolderDataset
    from .data.shapes import ShapesDataset

    d = cfg["data"]
    kind, size, ch = d["kind"], d["image_size"], d["channels"]
    if kind == "shapes":
        return ShapesDataset("train", seed=seed, image_size=size)
    if kind in ("mnist", "fashion-mnist"):
        if not d.get("root"):
            raise ValueError(f"data.root must point at the {kind} IDX files")
        return IdxDataset(d["root"], kind, "train", image_size=size, channels=ch)
    if kind == "imagefolder":
        return ImageFolderDataset(d["root"], image_size=size, channels=ch)
    raise ValueError(f"unknown data.kind {kind!r}")


class BatchSampler:
    """Micro-batch m of process r is a pure function of (seed, m, r): resumable, and disjoint across processes.
    Finite datasets are walked in a fresh seeded permutation each epoch."""

    def __init__(self, dataset, batch_size: int, seed: int, rank: int, world: int):
        self.ds, self.b, self.seed, self.rank, self.world = dataset, batch_size, seed, rank, world
        self.finite = not hasattr(dataset, "spec_at")
        self._perm: tuple[int, np.ndarray] | None = None

    def _index(self, i: int) -> int:
        if not self.finite:
            return i
        n = len(self.ds)
        epoch, pos = divmod(i, n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(n))
        return int(self._perm[1][pos])

    def batch(self, m: int) -> dict:
        start = (m * self.world + self.rank) * self.b
        return collate([self.ds[self._index(i)] for i in range(start, start + self.b)])


class _MicroBatches(torch.utils.data.Dataset):
    """Micro-batch m of a BatchSampler as a dataset item, so that a DataLoader can prefetch them."""

    def __init__(self, sampler: "BatchSampler"):
        self.sampler = sampler

    def __getitem__(self, m: int) -> dict:
        return dict(self.sampler.batch(int(m)), micro=int(m))


def _generator(*key: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))


# ---------------------------------------------------------------- models
def build_objective(cfg: dict, text_dim: int):
    """→ (objective module, save_pipeline(module, folder))."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from .denoiser import Denoiser
    from .flow_matching import ntm_from_flow_matching
    from .model import NTM
    from .objectives import DenoiserObjective, FlowMatchingObjective, NTMObjective
    from .pipeline import FlowMatchingPipeline, NTMPipeline, load_pipeline
    from .predictor import Predictor
    from .trajectory import TrajectorySchedule
    from .transporter import Transporter

    obj, m, d = cfg["objective"], cfg["model"], cfg["data"]
    shape = {"sample_size": d["image_size"], "in_channels": d["channels"]}
    text_kw = {"text_encoder_path": (cfg.get("text") or {}).get("encoder") or "minilm",
               "text_max_length": (cfg.get("text") or {}).get("max_length", 32)}

    def ntm_pipeline(ntm, denoiser=None):
        return NTMPipeline(ntm.transporter, ntm.predictor, ntm.schedule, denoiser, **text_kw)

    if obj in ("ntm", "gauss"):
        tcfg = dict(m["transporter"], **shape, text_dim=text_dim)
        if obj == "gauss":
            tcfg["num_blocks"] = 0
        ntm = NTM(Transporter(**tcfg), Predictor(**dict(m["predictor"], **shape, text_dim=text_dim)),
                  TrajectorySchedule(**m["schedule"]))
        return NTMObjective(ntm), lambda mod, path: ntm_pipeline(mod.ntm).save_pretrained(path)
    if obj == "fm":
        pred = Predictor(**dict(m["predictor"], **shape, text_dim=text_dim, markov=True, s_conditioning=False))
        return FlowMatchingObjective(pred), lambda mod, path: FlowMatchingPipeline(
            mod.predictor, FlowMatchEulerDiscreteScheduler(shift=1.0), **text_kw).save_pretrained(path)
    init = load_pipeline(cfg["init_from"])
    if obj == "fm_to_ntm":
        if not isinstance(init, FlowMatchingPipeline):
            raise ValueError(f"fm_to_ntm needs a flow-matching pipeline in init_from, got {type(init).__name__}")
        fm = init.predictor
        tcfg = dict(m["transporter"], sample_size=fm.config.sample_size, in_channels=fm.config.in_channels,
                    text_dim=fm.config.text_dim)
        # Markov, whatever model.predictor says: only then is step 0 exactly the FM model (NTM_METHOD §3, §5)
        ntm = ntm_from_flow_matching(fm, Transporter(**tcfg), TrajectorySchedule(**m["schedule"]), markov=True)
        return NTMObjective(ntm, frozen_fm=copy.deepcopy(fm)), lambda mod, path: ntm_pipeline(mod.ntm).save_pretrained(path)
    if obj == "denoiser":
        if not isinstance(init, NTMPipeline):
            raise ValueError(f"denoiser needs an NTM pipeline in init_from, got {type(init).__name__}")
        pc = init.predictor.config
        t_min = init.scheduler.config.t_min
        # the skip u/α_{t_0} is the right start only while f_T = identity; a trained transporter's u is far from x
        skip = 1.0 / (1.0 - t_min) if init.transporter.is_identity else 0.0
        den = Denoiser(**dict(m["denoiser"], sample_size=pc.sample_size, in_channels=pc.in_channels,
                              patch_size=pc.patch_size, text_dim=pc.text_dim, skip_scale=skip))
        return DenoiserObjective(init.ntm, den), lambda mod, path: ntm_pipeline(mod.ntm, mod.denoiser).save_pretrained(path)
    raise AssertionError(obj)


def text_dim_for(cfg: dict) -> int:
    """Text width of the model to build: from the init model where there is one, else the encoder's."""
    if cfg["objective"] in ("fm_to_ntm", "denoiser"):
        with open(os.path.join(cfg["init_from"], "predictor", "config.json")) as f:
            return int(json.load(f).get("text_dim", 0))
    if not cfg.get("text"):
        return 0
    from .text import get_text_encoder

    return get_text_encoder(cfg["text"].get("encoder"), cfg["text"].get("max_length", 32)).dim


# ---------------------------------------------------------------- loop
class _StopFlag:
    def __init__(self):
        self.stop = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from an app): no signal handling
                pass

    def _handle(self, *_):
        self.stop = True


def _write_json_atomic(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def _take_run_lock(out: str) -> str:
    """One live trainer per output folder: a second one would interleave metrics and checkpoints."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, ".lock")
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                with open(path) as f:
                    pid = int(f.read().strip() or 0)
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError, PermissionError):
                os.remove(path)  # stale: its process is gone
                continue
            raise ValueError(f"{out} is in use by training process {pid}; wait for it, or stop it first")
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return path
    raise ValueError(f"could not lock {out}")


def _truncate_metrics(path: str, step: int) -> None:
    """Keep only the metric lines up to the resumed checkpoint, so the curve continues with no gap or overlap."""
    if not os.path.exists(path):
        return
    keep = []
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line if line.endswith("\n") else line + "\n")
            except (json.JSONDecodeError, KeyError, TypeError):  # a torn last line (killed mid-write), blanks
                continue
    with open(path + ".tmp", "w") as f:
        f.writelines(keep)
    os.replace(path + ".tmp", path)


class Trainer:
    """Holds one run's state; `run()` trains to cfg.train.steps (or a stop) and returns the pipeline folder."""

    def __init__(self, cfg: dict, resume: bool = False):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        self.cfg, t = cfg, cfg["train"]
        self.t, self.out = t, cfg["output_dir"]
        mp = t["mixed_precision"]
        mp = "no" if mp in (False, None) else mp  # YAML reads a bare `no` as false
        if mp == "auto":
            mp = "bf16" if torch.cuda.is_available() else "no"
        self.accelerator = acc = Accelerator(
            cpu=not torch.cuda.is_available(),  # lets several CPU processes form a gloo group (torchrun / launch)
            mixed_precision=mp, gradient_accumulation_steps=t["grad_accum"],
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        self.rank, self.world, self.main = acc.process_index, acc.num_processes, acc.is_main_process
        self.seed = int(cfg["seed"])
        torch.manual_seed(self.seed)  # weight initialisation: identical on every process

        text_dim = text_dim_for(cfg)
        self.encoder = None
        if text_dim:
            from .text import get_text_encoder

            tc = cfg.get("text") or {}
            self.encoder = get_text_encoder(tc.get("encoder"), tc.get("max_length", 32), str(acc.device))
        self.drop_prob = float((cfg.get("text") or {}).get("drop_prob", 0.0)) if text_dim else 0.0
        objective, self.save_pipeline = build_objective(cfg, text_dim)
        self.params = [p for p in objective.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.params, lr=t["lr"], weight_decay=t["weight_decay"])
        self.lr_scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=t["warmup_steps"],
                                          num_training_steps=t["steps"])
        self.ema = EMAModel(self.params, decay=t["ema_decay"]) if t["ema_decay"] else None
        self.objective, self.optimizer = acc.prepare(objective, optimizer)
        self.module = acc.unwrap_model(self.objective)

        self.ckpt_dir = os.path.join(self.out, "checkpoints")
        self.metrics_path = os.path.join(self.out, "metrics.jsonl")
        self.status_path = os.path.join(self.out, "status.json")
        self.step, self.samples = 0, 0
        self._lock_path = _take_run_lock(self.out) if self.main else None
        try:
            if resume:
                found = list_checkpoints(self.ckpt_dir)
                if found:
                    state, path = self._load_newest_good(found)
                    self.step, self.samples = int(state["step"]), int(state.get("samples", 0))
                    acc.print(f"resumed from {path} at step {self.step}")
                else:
                    acc.print(f"--resume: no checkpoint in {self.ckpt_dir}; starting from step 0")
            if self.main:
                os.makedirs(self.out, exist_ok=True)
                if self.step == 0 and os.path.exists(self.metrics_path):
                    os.remove(self.metrics_path)
                _truncate_metrics(self.metrics_path, self.step)
                with open(os.path.join(self.out, "config.yaml"), "w") as f:
                    yaml.safe_dump(cfg, f, sort_keys=False)
            self.sampler = BatchSampler(build_dataset(cfg, self.seed), t["batch_size"], self.seed, self.rank,
                                        self.world)
        except BaseException:
            self._release_lock()
            raise
        if self.ema is not None:  # shadow weights live where the weights do (after a resume too)
            self.ema.to(acc.device)
        acc.wait_for_everyone()
        self.device_desc = (f"{self.world}× {torch.cuda.get_device_name(acc.device)}" if acc.device.type == "cuda"
                            else f"{self.world}× CPU process(es)") + f", mixed precision {mp}"
        self.step_choices = list(self.module.ntm.schedule.config.train_num_steps) if hasattr(self.module, "ntm") else [1]

    def micro_batches(self, first: int, end: int):
        """Micro-batches first…end-1 in order, rendered ahead by worker processes on GPU machines (procedural
        data costs CPU time that would otherwise leave the accelerator idle)."""
        workers = self.t["num_workers"]
        if workers == "auto":
            workers = min(8, (os.cpu_count() or 1) - 1) if self.accelerator.device.type == "cuda" else 0
        items = _MicroBatches(self.sampler)
        if int(workers) <= 0:
            return (items[m] for m in range(first, end))
        return torch.utils.data.DataLoader(items, batch_size=None, sampler=range(first, end),
                                           num_workers=int(workers), prefetch_factor=4,
                                           pin_memory=self.accelerator.device.type == "cuda")

    def status(self, state: str, **extra) -> None:
        if self.main:
            _write_json_atomic(self.status_path, {"state": state, "step": self.step, "total_steps": self.t["steps"],
                                                  "device": self.device_desc, "objective": self.cfg["objective"],
                                                  **extra})

    def _save_ema_pipeline(self, path: str) -> None:
        if self.ema is not None:
            self.ema.store(self.params)
            self.ema.copy_to(self.params)
        try:
            self.save_pipeline(self.module, path)
        finally:
            if self.ema is not None:
                self.ema.restore(self.params)

    def _load_newest_good(self, found: list[tuple[int, str]]) -> tuple[dict, str]:
        """The newest checkpoint that verifies and loads; a damaged one is reported and the one before it used.
        Raises the newest one's error when none loads."""
        errors = []
        for _, path in reversed(found):
            try:
                return load_checkpoint(path, self.module, self.optimizer.optimizer, self.lr_scheduler, self.ema), path
            except CheckpointError as e:
                errors.append(e)
                self.accelerator.print(f"warning: skipping a damaged checkpoint: {e}")
        raise errors[0]

    def checkpoint(self) -> None:
        if self.main:
            save_checkpoint(self.ckpt_dir, self.step, self.module, self.optimizer.optimizer, self.lr_scheduler,
                            self.ema, {"samples": self.samples, "objective": self.cfg["objective"]},
                            self._save_ema_pipeline)
            prune_checkpoints(self.ckpt_dir, self.t["keep_checkpoints"])
        self.accelerator.wait_for_everyone()

    def _train_step(self) -> dict:
        t, acc = self.t, self.accelerator
        k = self.step_choices[int(_generator(self.seed, self.step, 7).initial_seed() % len(self.step_choices))]
        aux_weight = t["aux_lambda"] * 0.5 * (1 + math.cos(math.pi * self.step / t["steps"]))  # cosine → 0
        grad_norm = None
        for a in range(t["grad_accum"]):
            micro = self.step * t["grad_accum"] + a
            batch = self._micro_batch(micro)
            gen = _generator(self.seed, micro, self.rank)
            x0 = batch["image"].to(acc.device)
            text = None
            if self.encoder is not None:
                text = self.encoder.encode(batch["caption"])
                text = text.drop(torch.rand(x0.shape[0], generator=gen) < self.drop_prob).to(device=acc.device)
            with acc.accumulate(self.objective):
                with acc.autocast():
                    loss, metrics = self.objective(x0, text, k, gen, aux_weight)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at step {self.step}; lower train.lr or check data")
                acc.backward(loss)
                if acc.sync_gradients:
                    grad_norm = acc.clip_grad_norm_(self.params, t["grad_clip"])
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        self.lr_scheduler.step()
        if self.ema is not None:
            self.ema.step(self.params)
        row = {name: acc.reduce(v.detach().float().reshape(1), "mean").item() for name, v in metrics.items()}
        row.update(num_steps=k, lr=self.lr_scheduler.get_last_lr()[0],
                   grad_norm=float(grad_norm) if grad_norm is not None else None)
        return row

    def _open_batches(self) -> None:
        """The rendered micro-batches from the current step (a resume included) to the last."""
        per_step, echo = self.t["grad_accum"], self.t["data_echo"]
        self._batch = None
        self._batches = iter(self.micro_batches(self.step * per_step // echo, -(-self.t["steps"] * per_step // echo)))

    def _micro_batch(self, micro: int) -> dict:
        """The rendered micro-batch behind optimizer micro-step `micro` (shared by data_echo consecutive ones)."""
        m = micro // self.t["data_echo"]
        if self._batch is None or self._batch["micro"] != m:
            self._batch = next(self._batches)
            assert self._batch["micro"] == m, (self._batch["micro"], m)  # prefetching must keep the order
        return self._batch

    def run(self) -> str:
        self.status("running")
        try:
            return self._run()
        except BaseException as e:
            self.status("failed", error=f"{type(e).__name__}: {e}")
            raise
        finally:
            self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_path and os.path.exists(self._lock_path):
            os.remove(self._lock_path)

    def _run(self) -> str:
        t, acc = self.t, self.accelerator
        stop = _StopFlag()
        acc.print(f"training {self.cfg['objective']} on {self.device_desc}; "
                  f"{sum(p.numel() for p in self.params):,} trainable parameters; steps {self.step} → {t['steps']}")
        bar = tqdm(total=t["steps"], initial=self.step, disable=not self.main, desc=self.cfg["name"],
                   dynamic_ncols=True)
        start = time.perf_counter()
        self._open_batches()
        self.objective.train()
        while self.step < t["steps"] and not stop.stop:
            tick = time.perf_counter()
            row = self._train_step()
            self.step += 1
            per_step = t["batch_size"] * t["grad_accum"] * self.world
            self.samples += per_step
            dt = time.perf_counter() - tick
            if self.main and (self.step % t["log_every"] == 0 or self.step == t["steps"]):
                row.update(step=self.step, samples_per_s=per_step / dt, seconds=dt, samples=self.samples)
                with open(self.metrics_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                bar.set_postfix(loss=f"{row['loss']:.4f}", K=row["num_steps"])
            bar.update(1)
            if t["max_seconds"] and time.perf_counter() - start > t["max_seconds"]:
                acc.print(f"time budget of {t['max_seconds']} s reached at step {self.step}")
                break
            if self.step % t["checkpoint_every"] == 0 and self.step < t["steps"]:
                self.checkpoint()
                self.status("running")
        bar.close()
        if self.world > 1:  # every process reports: data-parallel replicas must hold identical weights
            checksum = sum(float(p.detach().double().sum()) for p in self.params)
            print(f"[rank {self.rank}/{self.world}] steps {self.step} params checksum {checksum:.10e}", flush=True)
        self.checkpoint()
        final = os.path.join(self.out, "pipeline")
        if stop.stop:
            self.status("stopped")
            acc.print(f"stopped at step {self.step}; checkpoint saved. Continue with --resume")
            return final
        if self.main:
            last = list_checkpoints(self.ckpt_dir)[-1][1]
            with atomic_dir(final) as tmp:
                shutil.copytree(os.path.join(last, "pipeline"), tmp, dirs_exist_ok=True)
        self.status("finished", seconds=time.perf_counter() - start)
        acc.wait_for_everyone()
        acc.end_training()
        return final


def train(cfg: dict, resume: bool = False) -> str:
    """Run (or continue) a training job; returns the finished pipeline folder."""
    return Trainer(cfg, resume).run()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="a yaml file (see ntm_core/configs/)")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config entries")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        print(train(cfg, resume=args.resume))
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

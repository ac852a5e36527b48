"""The training loop: one loop on `accelerate` for every objective (ntm, gauss, fm, fm_to_ntm, denoiser).

    python -m ntm_core.train --config ntm_core/configs/shapes32.yaml [--resume] [--set train.steps=200 ...]
    accelerate launch --num_processes 2 -m ntm_core.train --config …      (data-parallel; CPU or GPUs)

The parts live beside it: `config` (defaults, YAML, overrides), `objectives` (the losses, each exporting its own
pipeline), `batches` (the data stream: shapes rendered on the GPU, or any dataset through DataLoader workers),
`runs` (the run folder: lock, status, metrics, checkpoints, pipeline) and `checkpoint` (safetensors shards).

CPU here, one or many GPUs elsewhere (bf16 autocast on GPU with mixed_precision: auto; the transporter, the
output heads and the density stay in float32). Gradient accumulation, EMA weights (diffusers EMAModel), warmup +
cosine schedule, gradient clipping, fused AdamW, a tqdm bar, metrics appended to metrics.jsonl. Nothing
in the loop waits on the GPU except at log steps (metrics are kept on the device until then) and checkpoints.
--resume continues from the last checkpoint with the same step counter, data order and noise, so the loss
curve continues with no gap. SIGTERM / Ctrl-C stop after the current step with a checkpoint. Without --resume, a
folder that already holds checkpoints is refused rather than overwritten.
The finished run writes <output_dir>/pipeline: a pipeline folder (EMA weights) the app and analysis load.
A run that reaches train.max_seconds writes it too (the model so far) but is "stopped", not finished: its
schedule has steps left, and --resume runs them (a recipe repeats a job in bounded runs until it is finished).
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys
import time

import torch
from tqdm.auto import tqdm

from .batches import generator, training_batches
from .checkpoint import CheckpointError, atomic_dir, load_checkpoint, prune_checkpoints, save_checkpoint
from .config import load_config
from .objectives import build_objective, text_dim_for
from .runs import RunFolder


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


class Trainer:
    """Holds one run's state; `run()` trains to cfg.train.steps (or a stop) and returns the pipeline folder."""

    def __init__(self, cfg: dict, resume: bool = False):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        self.cfg, t = cfg, cfg["train"]
        self.t, self.run_folder = t, RunFolder(cfg["output_dir"])
        cuda = torch.cuda.is_available()
        mp = t["mixed_precision"]
        mp = "no" if mp in (False, None) else mp  # YAML reads a bare `no` as false
        if mp == "auto":
            mp = "bf16" if cuda else "no"
        if cuda:  # float32 matmuls (the transporter, the heads) on tensor cores
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self.accelerator = acc = Accelerator(
            cpu=not cuda,  # lets several CPU processes form a gloo group (torchrun / launch)
            mixed_precision=mp, gradient_accumulation_steps=t["grad_accum"],
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        self.rank, self.world, self.main = acc.process_index, acc.num_processes, acc.is_main_process
        self.seed = int(cfg["seed"])
        torch.manual_seed(self.seed)  # weight initialisation: identical on every process

        text_dim = text_dim_for(cfg, str(acc.device))  # the encoder it builds is the one the batches use (cached)
        self.encoder = None
        if text_dim:
            from .text import training_encoder

            self.encoder = training_encoder(cfg.get("text"), str(acc.device))
        self.drop_prob = float((cfg.get("text") or {}).get("drop_prob", 0.0)) if text_dim else 0.0
        objective = build_objective(cfg, text_dim)
        self.params = [p for p in objective.parameters() if p.requires_grad]
        frozen = int(t["transporter_frozen_steps"])
        groups = param_groups(objective, t["lr"], t["transporter_lr_scale"], apart=frozen > 0)
        optimizer = torch.optim.AdamW(groups, lr=t["lr"], weight_decay=t["weight_decay"],
                                      fused=acc.device.type in ("cuda", "cpu"))  # a few ops per step, not ~10 per tensor
        self.lr_scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=t["warmup_steps"],
                                          num_training_steps=t["steps"])
        if frozen > 0 and len(groups) == 2:  # the transporter's group at lr 0 until step `frozen`, then the schedule
            cosine = self.lr_scheduler.lr_lambdas[1]
            self.lr_scheduler.lr_lambdas[1] = lambda step: cosine(step) if step >= frozen else 0.0
            optimizer.param_groups[1]["lr"] = 0.0  # step 0's, which LambdaLR set before the lambda was swapped
        self.ema = EMAModel(self.params, decay=t["ema_decay"], foreach=True) if t["ema_decay"] else None
        self.objective, self.optimizer = acc.prepare(objective, optimizer)
        self.module = acc.unwrap_model(self.objective)

        self.step, self.samples = 0, 0
        self._seconds, self._since = 0.0, None  # training time of earlier runs of this job; this run's loop start
        run = self.run_folder
        if self.main:
            run.lock()
        try:
            found = run.checkpoints()
            if found and not resume:  # a fresh start would overwrite them: a finished or interrupted job is lost
                raise ValueError(f"{run.checkpoints_dir} already holds a checkpoint (step {found[-1][0]}) of an earlier "
                                 "run: continue it with --resume, or give another output_dir. Nothing was changed.")
            if resume:
                if found:
                    state, path = self._load_newest_good(found)
                    self.step, self.samples = int(state["step"]), int(state.get("samples", 0))
                    self._seconds = float(state.get("train_seconds", 0.0))
                    acc.print(f"resumed from {path} at step {self.step}")
                else:
                    acc.print(f"--resume: no checkpoint in {run.checkpoints_dir}; starting from step 0")
            if self.main:
                run.truncate_metrics(self.step)
                run.write_config(cfg)
            self.batches = training_batches(cfg, self.seed, self.rank, self.world, acc.device, self.encoder)
        except BaseException:
            self._release_lock()
            raise
        if self.ema is not None:  # shadow weights live where the weights do (after a resume too)
            self.ema.to(acc.device)
        acc.wait_for_everyone()
        self.device_desc = (f"{self.world}× {torch.cuda.get_device_name(acc.device)}" if acc.device.type == "cuda"
                            else f"{self.world}× CPU process(es)") + f", mixed precision {mp}"
        ntm = getattr(self.module, "ntm", None)
        self.schedule = ntm.schedule if ntm is not None else None  # the flow-matching objective has no K

    def train_seconds(self) -> float:
        """Seconds in the training loop over every run of this job (resumes included): what a model card reports."""
        return self._seconds + (0.0 if self._since is None else time.perf_counter() - self._since)

    def status(self, state: str, **extra) -> None:
        if self.main:
            self.run_folder.write_status(state, step=self.step, total_steps=self.t["steps"], device=self.device_desc,
                                         objective=self.cfg["objective"], samples=self.samples,
                                         train_seconds=round(self.train_seconds(), 3), **extra)

    def _save_ema_pipeline(self, path: str) -> None:
        if self.ema is not None:
            self.ema.store(self.params)
            self.ema.copy_to(self.params)
        try:
            self.module.save_pipeline(path)
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
            state = {"samples": self.samples, "objective": self.cfg["objective"], "train_seconds": self.train_seconds()}
            save_checkpoint(self.run_folder.checkpoints_dir, self.step, self.module, self.optimizer.optimizer,
                            self.lr_scheduler, self.ema, state, self._save_ema_pipeline, max_shard_mb=self.t["shard_mb"])
            prune_checkpoints(self.run_folder.checkpoints_dir, self.t["keep_checkpoints"])
        self.accelerator.wait_for_everyone()

    def _train_step(self) -> dict[str, torch.Tensor]:
        """One optimizer step; its metrics stay on the device (reading them would wait for the GPU)."""
        t, acc = self.t, self.accelerator
        key = generator(self.seed, self.step, 7).initial_seed()
        k = self.schedule.train_num_steps_for(key) if self.schedule is not None else 1
        shift = self.schedule.train_shift_for(key) if self.schedule is not None else None
        aux_weight = t["aux_lambda"] * 0.5 * (1 + math.cos(math.pi * self.step / t["steps"]))  # cosine → 0
        grad_norm = None
        for a in range(t["grad_accum"]):
            micro = self.step * t["grad_accum"] + a
            gen = generator(self.seed, micro, self.rank, device=acc.device)
            x0, text = self._micro_batch(micro)
            if text is not None and self.drop_prob:
                drop = torch.rand(x0.shape[0], generator=gen, device=gen.device) < self.drop_prob
                text = text.drop(drop.to(text.pooled.device))
            with acc.accumulate(self.objective):
                with acc.autocast():
                    loss, metrics = self.objective(x0, text, k, gen, aux_weight, shift)
                acc.backward(loss)
                if acc.sync_gradients:
                    grad_norm = acc.clip_grad_norm_(self.params, t["grad_clip"])
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        self.lr_scheduler.step()
        if self.ema is not None:
            self.ema.step(self.params)
        row = {name: v.detach().float().reshape(()) for name, v in metrics.items()}
        row["grid"] = (k, shift)
        if grad_norm is not None:
            row["grad_norm"] = torch.as_tensor(grad_norm, dtype=torch.float32, device=acc.device).reshape(())
        return row

    def _log(self, pending: list[tuple[int, tuple, float, dict]], since: float) -> dict:
        """Read the pending steps' metrics (step, (K, shift), lr, tensors) in one transfer — the loop's one wait for
        the GPU per log interval —, check them and append them to metrics.jsonl."""
        names = sorted(pending[-1][3])
        values = torch.stack([torch.stack([m[n] for n in names]) for *_, m in pending])
        values = self.accelerator.reduce(values, "mean").tolist()
        elapsed = time.perf_counter() - since
        per_step = self.t["batch_size"] * self.t["grad_accum"] * self.world
        rows = []
        for (step, (k, shift), lr, _), vals in zip(pending, values):
            row = dict(zip(names, vals), num_steps=k, lr=lr, step=step,
                       **({} if shift is None else {"shift": shift}),
                       samples=self.samples - (self.step - step) * per_step,
                       samples_per_s=per_step * len(pending) / elapsed, seconds=elapsed / len(pending))
            if not math.isfinite(row["loss"]):
                raise FloatingPointError(f"loss is {row['loss']} at step {step}; lower train.lr or check data")
            rows.append(row)
        if self.main:
            self.run_folder.append_metrics([r for r in rows if r["step"] % self.t["log_every"] == 0
                                            or r["step"] == self.t["steps"]])
        return rows[-1]

    def _open_batches(self) -> None:
        """The data micro-batches from the current step (a resume included) to the last."""
        per_step, echo = self.t["grad_accum"], self.t["data_echo"]
        self.batches.open(self.step * per_step // echo, -(-self.t["steps"] * per_step // echo))

    def _micro_batch(self, micro: int):
        """(images, text) behind optimizer micro-step `micro` (shared by data_echo consecutive ones)."""
        return self.batches.get(micro // self.t["data_echo"])

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
        if self.main:
            self.run_folder.unlock()

    def _run(self) -> str:
        t, acc = self.t, self.accelerator
        stop = _StopFlag()
        acc.print(f"training {self.cfg['objective']} on {self.device_desc}; "
                  f"{sum(p.numel() for p in self.params):,} trainable parameters; steps {self.step} → {t['steps']}")
        bar = tqdm(total=t["steps"], initial=self.step, disable=not self.main, desc=self.cfg["name"],
                   dynamic_ncols=True)
        start = since = self._since = time.perf_counter()
        self._open_batches()
        self.objective.train()
        pending = []
        out_of_time = False
        while self.step < t["steps"] and not stop.stop:
            metrics = self._train_step()
            self.step += 1
            self.samples += t["batch_size"] * t["grad_accum"] * self.world
            pending.append((self.step, metrics.pop("grid"), self.lr_scheduler.get_last_lr()[0], metrics))
            bar.update(1)
            out_of_time = (bool(t["max_seconds"]) and time.perf_counter() - start > t["max_seconds"]
                           and self.step < t["steps"])  # a budget met on the last step still finishes
            due = self.step % t["checkpoint_every"] == 0 and self.step < t["steps"]
            if self.step % t["log_every"] == 0 or self.step == t["steps"] or out_of_time or due or stop.stop:
                row = self._log(pending, since)
                pending, since = [], time.perf_counter()
                bar.set_postfix(loss=f"{row['loss']:.4f}", K=row.get("num_steps", ""))
            if out_of_time:
                acc.print(f"time budget of {t['max_seconds']} s reached at step {self.step}")
                break
            if due:
                self.checkpoint()
                self.status("running")
        bar.close()
        if self.world > 1:  # every process reports: data-parallel replicas must hold identical weights
            checksum = sum(float(p.detach().double().sum()) for p in self.params)
            print(f"[rank {self.rank}/{self.world}] steps {self.step} params checksum {checksum:.10e}", flush=True)
        self.checkpoint()
        final = self.run_folder.pipeline_path
        if stop.stop:
            self.status("stopped")
            acc.print(f"stopped at step {self.step}; checkpoint saved. Continue with --resume")
            return final
        if self.main:  # the model so far, also at a time budget (a sweep scores it; the app can load it)
            last = self.run_folder.checkpoints()[-1][1]
            with atomic_dir(final) as tmp:
                shutil.copytree(os.path.join(last, "pipeline"), tmp, dirs_exist_ok=True)
        if out_of_time:  # not finished: its schedule has steps left, which --resume runs
            self.status("stopped", reason="time budget", seconds=time.perf_counter() - start)
            acc.print(f"stopped at step {self.step} of {t['steps']}; continue with --resume")
            return final
        self.status("finished", seconds=time.perf_counter() - start)
        acc.wait_for_everyone()
        acc.end_training()
        return final


def param_groups(objective: torch.nn.Module, lr: float, transporter_lr_scale: float = 1.0,
                 apart: bool = False) -> list[dict]:
    """The optimizer's groups: one, or the transporter's weights apart at lr·scale (a slower transporter refines the
    predictor's trajectory instead of rescaling the states under it; issue 11) or when `apart` (a schedule of its
    own). The first group sets the logged lr."""
    named = [(n, p) for n, p in objective.named_parameters() if p.requires_grad]
    slow = [p for n, p in named if ".transporter." in f".{n}"]
    if (transporter_lr_scale == 1.0 and not apart) or not slow:
        return [{"params": [p for _, p in named]}]
    ids = {id(p) for p in slow}
    return [{"params": [p for _, p in named if id(p) not in ids]}, {"params": slow, "lr": lr * transporter_lr_scale}]


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

"""Kernel launches per training step, counted on any machine: the aten ops that each phase of one optimizer step
dispatches (data, forward, backward, gradient clipping, optimizer, EMA), by objective and by how many micro-batches
one device render call serves (`data.render_pool`), and the ops whose result the host reads (each would make a GPU
step wait: the loop should have none).

A small model on a GPU is launch-bound: each op costs the host several µs to issue whatever its size, so the count
sets a floor on the step time that a larger batch does not raise. The counts do not depend on the batch size or the
device (the trainer's AdamW is fused on both), so this CPU counts what an H100 issues in float32; under bf16
autocast (`--set train.mixed_precision=bf16`: the CPU's autocast, whose casts are close to CUDA's) the forward and
backward add their casts.

    python -m analysis.step_ops --config ntm_core/configs/shapes32_fm.yaml --pool 1 16 --out docs/step-ops
    python -m analysis.step_ops --pool 1 16 --set train.mixed_precision=bf16 --out docs/step-ops-bf16
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import math
import tempfile

import pandas as pd
from torch.utils._python_dispatch import TorchDispatchMode

from ntm_core.config import load_config
from ntm_core.report import environment, report
from ntm_core.train import Trainer

PHASES = ("data", "forward", "backward", "clip", "optimizer", "ema", "other")
INIT = {"fm_to_ntm": "assets/fm-shapes32", "denoiser": "assets/ntm-shapes32"}


# ops whose result the host must read (a value, or a data-dependent shape): on a GPU each waits for the queue
HOST_READS = frozenset({"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2"})


class OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched while active, under the phase set by `within`; views launch no kernel, so
    they are counted apart; host reads (`.item()`, `float(t)`, `if t:`, boolean indexing) are also counted apart."""

    def __init__(self):
        super().__init__()
        self.ops, self.views, self.reads = collections.Counter(), collections.Counter(), collections.Counter()
        self.phase = "other"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        (self.views if func.is_view else self.ops)[self.phase] += 1
        if func._schema.name.split("::")[-1] in HOST_READS:
            self.reads[self.phase] += 1
        return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def within(self, phase: str):
        outer, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = outer

    def wrap(self, owner, name: str, phase: str) -> None:
        """Count `owner.name(…)` under `phase` (an instance attribute shadows the bound method)."""
        method = getattr(owner, name)

        @functools.wraps(method)
        def counted(*args, **kwargs):
            with self.within(phase):
                return method(*args, **kwargs)
        setattr(owner, name, counted)


def count_step_ops(config: str, objective: str, pool: int, steps: int, batch: int = 4, overrides=(),
                   init_from=None) -> dict:
    """Ops per optimizer step by phase, averaged over `steps` steps after one that warms up (a multiple of `pool`:
    micro-batches 1 … steps take steps / pool render calls; the same steps draw the same K for every pool)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config, [f"objective={objective}", f"output_dir={tmp}/run", f"train.batch_size={batch}",
                                   "data.render=device", f"data.render_pool={pool * batch}", "train.log_every=100000",
                                   "train.checkpoint_every=100000", "train.mixed_precision=no",  # --set may change it
                                   *([f"init_from={init_from}"] if init_from else []), *overrides])
        trainer = Trainer(cfg)
        try:
            trainer._open_batches()
            trainer.objective.train()
            trainer._train_step()
            trainer.step += 1
            counter = OpCounter()
            for owner, name, phase in ((trainer.batches, "get", "data"), (trainer.objective, "forward", "forward"),
                                       (trainer.accelerator, "backward", "backward"),
                                       (trainer.accelerator, "clip_grad_norm_", "clip"),
                                       (trainer.optimizer, "step", "optimizer"),
                                       (trainer.optimizer, "zero_grad", "optimizer"), (trainer.ema, "step", "ema")):
                if owner is not None:
                    counter.wrap(owner, name, phase)
            with counter:
                for _ in range(steps):
                    trainer._train_step()
                    trainer.step += 1
        finally:
            trainer._release_lock()
    row = {p: counter.ops[p] / steps for p in PHASES}
    row["total"] = sum(counter.ops.values()) / steps
    row["views"] = sum(counter.views.values()) / steps
    row["host reads"] = sum(counter.reads.values()) / steps
    return row


def measure(config: str, objectives, pools, batch: int = 4, overrides=()) -> pd.DataFrame:
    rows, steps = [], max(2, math.lcm(*pools))
    for objective in objectives:
        for pool in pools:
            row = count_step_ops(config, objective, pool, steps, batch, overrides, INIT.get(objective))
            rows.append({"objective": objective, "micro-batches per render": pool, **row})
    df = pd.DataFrame(rows)
    base = df[df["micro-batches per render"] == min(pools)].set_index("objective")["total"]
    df[f"total vs {min(pools)} per render"] = df["total"] / df["objective"].map(base)
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="ntm_core/configs/shapes32_fm.yaml")
    ap.add_argument("--objective", nargs="+", default=["fm", "fm_to_ntm", "denoiser", "ntm"],
                    choices=("fm", "fm_to_ntm", "denoiser", "ntm", "gauss"))
    ap.add_argument("--pool", nargs="+", type=int, default=[1, 16],
                    help="micro-batches per device render call (the recipe on a GPU: 8192 images / batch 512 = 16)")
    ap.add_argument("--batch", type=int, default=4, help="micro-batch size (the counts do not depend on it)")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for every job")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if min(args.pool) < 1:
        ap.error("--pool: micro-batches per render call are ≥ 1")
    df = measure(args.config, args.objective, args.pool, args.batch, args.set)
    report(df, "aten ops per optimizer step, by phase (views apart: they launch no kernel), and host reads",
           environment(config=args.config, batch=args.batch, overrides=args.set), args.out, digits=4)


if __name__ == "__main__":
    main()

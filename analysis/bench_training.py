"""Training throughput of every objective, each job alone on the machine, measured with the real trainer — the
engine before (shapes rendered by CPU workers, float32: the recipe that trained the earlier bundles) and now
(shapes rendered on the GPU, captions from a table, bf16 with float32 flow arithmetic) in one run.

    git archive 258c6ca ntm_core | tar -x -C .before      # the trainer as it was before this engine
    python -m analysis.bench_training --device cuda --before-code .before --steps 40 --out docs/bench-training-h100
    python -m analysis.bench_training --device cpu --engine now --steps 6       (the CPU; tiny configs only)

With --before-code, the `before` rows run that copy of ntm_core (in a subprocess), so the ratio compares the two
trainers; without it, they run today's code with the earlier settings (CPU rendering, float32).

Each objective trains `--steps` optimizer steps from the config (fm_to_ntm starts from the fm run just made,
denoiser from the ntm run); the first fifth of the steps (warm-up, allocation) is dropped, and the batch over the
mean step time of the rest is reported: a mean, so that the steps that render a pool of shapes
(`data.render_pool`, one in 16 at batch 512) count at their share, as in a long job sized from this number. The
last rows give each objective's ratio now / before.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import pandas as pd
import torch

from ntm_core.report import environment, report
from ntm_core.config import load_config
from ntm_core.runs import RunFolder
from ntm_core.train import train

ORDER = ("ntm", "gauss", "fm", "fm_to_ntm", "denoiser")
ENGINES = {  # overrides per engine; `before` is assets/train_bundled.sh's earlier recipe (batch 256, 4 workers)
    "before": ["data.render=cpu", "train.mixed_precision=no", "train.num_workers=4", "train.data_echo=3",
               "train.log_every=1"],
    "now": ["data.render=device", "train.mixed_precision=auto", "train.data_echo=1", "train.log_every=5"],
}


def _train(cfg_path: str, extra: list[str], before_code: str | None) -> str:
    """Train in-process, or with an earlier copy of ntm_core in a subprocess; returns the pipeline folder."""
    if before_code is None:
        return train(load_config(cfg_path, extra))
    # the copy first, then this tree (analysis/), then whatever PYTHONPATH already held (carried packages)
    held = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    paths = [os.path.abspath(before_code), os.getcwd(), *held]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    subprocess.run([sys.executable, "-m", "ntm_core.train", "--config", cfg_path, "--set", *extra], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return os.path.join(next(e.split("=", 1)[1] for e in extra if e.startswith("output_dir=")), "pipeline")


def timed_rate(metrics: pd.DataFrame, batch_size: int, warmup: int) -> tuple[float, int]:
    """(samples/s, steps timed) over the log intervals that start after `warmup` steps: all their samples over all
    their time. metrics: a row per log interval (its last `step`, its mean step time `seconds`)."""
    m = metrics.assign(span=metrics["step"].diff().fillna(metrics["step"]))
    timed = m[m["step"] - m["span"] >= warmup]
    timed = timed if len(timed) else m
    return batch_size * timed["span"].sum() / (timed["seconds"] * timed["span"]).sum(), int(timed["span"].sum())


def benchmark(config: str, steps: int, engines=("before", "now"), objectives=ORDER, overrides=(),
              before_code: str | None = None) -> pd.DataFrame:
    rows = []
    objectives = [o for o in ORDER if o in objectives]  # a model before the objectives that start from it
    with tempfile.TemporaryDirectory() as tmp:
        for engine in engines:
            folders = {}
            for obj in objectives:
                out = os.path.join(tmp, engine, obj)
                extra = [f"objective={obj}", f"output_dir={out}", f"train.steps={steps}",
                         f"train.checkpoint_every={steps + 1}", "train.warmup_steps=1", *ENGINES[engine], *overrides]
                if obj == "fm_to_ntm":
                    extra.append(f"init_from={folders['fm']}")
                if obj == "denoiser":  # the NTM this run trained: from scratch, else the one finetuned from fm
                    extra.append(f"init_from={folders.get('ntm') or folders['fm_to_ntm']}")
                cfg = load_config(config, extra)
                folders[obj] = _train(config, extra, before_code if engine == "before" else None)
                rate, steps_timed = timed_rate(RunFolder(out).metrics(), cfg["train"]["batch_size"], steps // 5)
                rows.append({"engine": engine, "objective": obj, "batch_size": cfg["train"]["batch_size"],
                             "precision": RunFolder(out).status().get("device", "").split("precision ")[-1],
                             "samples_per_s": rate, "steps_timed": steps_timed})
    df = pd.DataFrame(rows)
    if set(engines) >= {"before", "now"}:
        wide = df.pivot(index="objective", columns="engine", values="samples_per_s")
        ratio = (wide["now"] / wide["before"]).reindex([o for o in objectives])
        df = pd.concat([df, pd.DataFrame({"engine": "now / before", "objective": ratio.index,
                                          "samples_per_s": ratio.values})], ignore_index=True)
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="ntm_core/configs/shapes32.yaml")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--engine", nargs="+", choices=tuple(ENGINES), default=list(ENGINES))
    ap.add_argument("--objective", nargs="+", choices=ORDER, default=list(ORDER))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--set", nargs="*", default=[], help="overrides for every job (e.g. a new backbone, a batch size)")
    ap.add_argument("--before-code", default=None, help="a copy of the earlier ntm_core package (see above)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no GPU is visible here")
    if args.device == "cpu" and torch.cuda.is_available():
        ap.error("--device cpu on a GPU machine: run with CUDA_VISIBLE_DEVICES= to hide the GPU")
    if "fm_to_ntm" in args.objective and "fm" not in args.objective:
        ap.error("fm_to_ntm starts from the fm model this run trains: list fm too")
    if "denoiser" in args.objective and not {"ntm", "fm_to_ntm"} & set(args.objective):
        ap.error("the denoiser distils an NTM this run trains: list ntm or fm_to_ntm too")
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else None
    df = benchmark(args.config, args.steps, args.engine, args.objective, args.set, args.before_code)
    report(df, "training throughput, each job solo", environment(config=args.config, gpu=gpu, overrides=args.set,
                                                                   before_code=args.before_code), args.out, digits=3)


if __name__ == "__main__":
    main()

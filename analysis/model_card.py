"""A bundled model's training, stage by stage, from the records it carries (training/, training/init/, …): what a
model card states — objective, optimizer steps, samples seen, minutes, hardware, precision — read, not retyped.

    python -m analysis.model_card assets/ntm-shapes32 [--out docs/card-ntm-shapes32]

Minutes are the trainer's own count of time in its loop over every resumed run of a job (`train_seconds`);
records written before it counted them show none.
"""
from __future__ import annotations

import argparse

import pandas as pd

from ntm_core.report import report
from ntm_core.runs import lineage


def training_table(bundle: str) -> pd.DataFrame:
    """One row per stage, the first stage (trained from scratch) first, and a total row."""
    rows = []
    for run in reversed(lineage(bundle)):
        cfg, status = run.config(), run.status()
        device, _, precision = str(status.get("device", "")).partition(", mixed precision ")
        seconds = status.get("train_seconds")
        rows.append({"stage": cfg.get("name", ""), "objective": cfg.get("objective", ""),
                     "state": status.get("state", ""), "steps": status.get("step"),
                     "batch size": (cfg.get("train") or {}).get("batch_size"), "samples seen": status.get("samples"),
                     "minutes": None if seconds is None else round(seconds / 60, 2), "hardware": device,
                     "precision": precision})
    if not rows:
        raise SystemExit(f"{bundle}: no training records (training/config.yaml); export it with ntm_core.export")
    df = pd.DataFrame(rows)
    total = {"stage": "total", "samples seen": df["samples seen"].sum(min_count=1),
             "minutes": df["minutes"].sum(min_count=1) if df["minutes"].notna().all() else None}
    return pd.concat([df, pd.DataFrame([total])], ignore_index=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", help="a bundled model folder (assets/…) or an exported pipeline")
    ap.add_argument("--out", default=None, help="also write <out>.json/.csv/.md")
    a = ap.parse_args(argv)
    table = training_table(a.bundle).astype(object).fillna("")  # blanks, not NaN, where a record has no value
    report(table, f"training of {a.bundle}", {"records": "training/ (ntm_core.runs.lineage)"}, a.out, digits=6)


if __name__ == "__main__":
    main()

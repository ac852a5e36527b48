"""How every benchmark and measurement script reports (analysis/, app/latency.py): print the table with its environment,
write JSON (+ CSV, + markdown) beside it."""
from __future__ import annotations

import json
import math
import os
import platform

import pandas as pd
import torch


def environment(**extra) -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "cpu": platform.processor() or platform.machine(), **extra}


def _strict(value):
    """`value` with every non-finite float (NaN, ±inf: not JSON) as None, through dicts, lists and tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def report(df: pd.DataFrame, title: str, env: dict, out: str | None, digits: int = 4, extra: dict | None = None) -> None:
    """out: a path without or with .json; writes <stem>.json, <stem>.csv and <stem>.md. A missing value (NaN: a
    column that does not apply to a row) is null in the JSON (NaN is not JSON) and an empty cell in the others."""
    print(f"# {title} ({env})")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.{digits}g}"))
    if not out:
        return
    stem = os.path.splitext(out)[0]
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    with open(stem + ".json", "w") as f:
        rows = df.astype(object).where(df.notna(), None).to_dict(orient="records")
        json.dump(_strict({"title": title, "env": env, "rows": rows, **(extra or {})}), f, indent=2, allow_nan=False)
    df.to_csv(stem + ".csv", index=False)
    with open(stem + ".md", "w") as f:
        cols = list(df.columns)
        fmt = lambda v: "" if pd.isna(v) else f"{v:.{digits}g}" if isinstance(v, float) else str(v)  # noqa: E731
        f.write(f"**{title}**\n\n| " + " | ".join(cols) + " |\n|" + " --- |" * len(cols) + "\n")
        for row in df.itertuples(index=False):
            f.write("| " + " | ".join(fmt(v) for v in row) + " |\n")
        f.write(f"\n{env}\n")

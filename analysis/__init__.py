"""Evaluation, likelihood analysis and benchmarks for NTM Studio."""
from __future__ import annotations

import argparse
import time

import numpy as np


def key_values(ap: argparse.ArgumentParser, items: list[str], flag: str) -> dict[str, str]:
    """A repeated `flag KEY=VALUE` option (--model NAME=FOLDER, --option key=value) as a dict; an item without
    '=' or with an empty key or value is an argument error naming the flag."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not (sep and key and value):
            ap.error(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def median_seconds(call, repeats: int) -> float:
    """Median wall time of `call(r)` over r = 1..repeats, after one warm-up `call(0)` (r: a seed, where it takes one)."""
    call(0)
    secs = []
    for r in range(repeats):
        start = time.perf_counter()
        call(r + 1)
        secs.append(time.perf_counter() - start)
    return float(np.median(secs))

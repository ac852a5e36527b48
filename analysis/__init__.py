"""Evaluation, likelihood analysis and benchmarks for NTM Studio."""
from __future__ import annotations

import argparse


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

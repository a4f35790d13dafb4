"""Shared pieces of the benchmark scripts: options, timing, tables."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a smoke-sized run (under 2 minutes)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds to run")
    return p


def mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def emit(args: argparse.Namespace, result: dict, tables: Sequence[str]) -> None:
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        print("\n\n".join(tables))


def bootstrap_interval(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (seeded, so a table is
    reproducible); both ends equal the value when there is one."""
    import numpy as np

    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    tail = (1 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))

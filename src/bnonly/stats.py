"""Statistics over seeds: the mean and 95% Student-t interval, the runs that count, and grouping.

Every table, figure, claim and answer takes its numbers from here (report, claims, questions and
analysis import this module, never each other's).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import NamedTuple

from .data import NUM_CLASSES
from .sets import ordered

CHANCE = 1 / NUM_CLASSES  # ten balanced classes (MNIST, Fashion-MNIST, CIFAR-10)
# Student's t quantile t_{0.975, df} for df = 1..30; beyond 30 we use the normal 1.96.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


class Stat(NamedTuple):
    mean: float
    half: float  # half-width of the 95% interval (0 when n == 1: the interval is just the mean)
    n: int

    @property
    def lo(self) -> float:
        return self.mean - self.half

    @property
    def hi(self) -> float:
        return self.mean + self.half


def t975(df: int) -> float:
    return T975[df - 1] if 1 <= df <= len(T975) else 1.96


def mean_ci(values) -> Stat:
    """Mean and 95% Student-t half-interval over seeds; NaN/None values are dropped."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return Stat(math.nan, math.nan, 0)
    mean = sum(xs) / n
    if n == 1:
        return Stat(mean, 0.0, 1)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return Stat(mean, t975(n - 1) * sd / math.sqrt(n), n)


def finished(runs) -> list[dict]:
    """The runs that count: status 'finished' with a finite test accuracy."""
    out = []
    for r in runs:
        acc = r.get("test_accuracy")
        if r.get("status") == "finished" and acc is not None and math.isfinite(float(acc)):
            out.append(r)
    return out


def mlp_stats(runs) -> dict[tuple[int, int, str], Stat]:
    """(width, depth, trainable) -> Stat over the finished MLP runs."""
    groups = defaultdict(list)
    for r in finished(runs):
        if r.get("model") == "mlp":
            groups[(int(r["width"]), int(r["depth"]), r["trainable"])].append(r["test_accuracy"])
    return {k: mean_ci(v) for k, v in sorted(groups.items())}


def lenet_stats(runs) -> dict[str, Stat]:
    """trainable -> Stat over the finished LeNet-5 runs (width/depth are placeholders there)."""
    groups = defaultdict(list)
    for r in finished(runs):
        if r.get("model") == "lenet5":
            groups[r["trainable"]].append(r["test_accuracy"])
    return {k: mean_ci(groups[k]) for k in ordered(groups)}


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def cell(s: Stat | None) -> str:
    if s is None or s.n == 0:
        return "–"
    return f"{100 * s.mean:.1f} (n=1)" if s.n == 1 else f"{100 * s.mean:.1f} ± {100 * s.half:.1f}"

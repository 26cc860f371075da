"""Statistics over seeds: the mean and its 95% Student-t interval, paired per-seed differences, and
the one way a statistic is written.

Runs of one seed share weights and data order, so every comparison between two sets is the mean
of their per-seed differences with a t interval over seeds (`paired`); intervals never pool runs
whose configurations differ in anything but the seed (cells.py splits a store into studies and cells).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

from scipy.special import stdtr, stdtrit  # Student's t CDF and quantile (what scipy.stats.t calls)


class Stat(NamedTuple):
    mean: float
    se: float  # standard error of the mean (0 from one value: no interval)
    n: int
    diverged: int = 0  # how many of the n runs (or pairs) had a diverged run: counted at their best weights
    df: float | None = None  # its degrees of freedom where not n - 1 (a Welch combination)

    @property
    def dof(self) -> float:
        return self.n - 1 if self.df is None else self.df

    @property
    def half(self) -> float:
        """Half-width of the 95% Student-t interval (0 when n == 1: the interval is just the mean)."""
        return t975(self.dof) * self.se if self.n >= 2 else (0.0 if self.n == 1 else math.nan)

    @property
    def lo(self) -> float:
        return self.mean - self.half

    @property
    def hi(self) -> float:
        return self.mean + self.half

    def as_dict(self) -> dict:
        return {k: v for k, v in {**self._asdict(), "half": self.half}.items() if k != "df" or v is not None}


@lru_cache(maxsize=None)
def t975(df: float) -> float:
    """t_{0.975, df}: the 95% two-sided interval's quantile, for any df > 0."""
    return float(stdtrit(df, 0.975))


@lru_cache(maxsize=None)
def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t with df degrees of freedom (df = inf: the normal's)."""
    return float(stdtrit(df, q))


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom."""
    return float(stdtr(df, t))


def mean_ci(values) -> Stat:
    """Mean and 95% Student-t interval over seeds; NaN/None values are dropped."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return Stat(math.nan, math.nan, 0)
    mean = sum(xs) / n
    if n == 1:
        return Stat(mean, 0.0, 1)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return Stat(mean, sd / math.sqrt(n), n)


def differences(a: dict, b: dict) -> dict:
    """{seed: a[seed] - b[seed]} over the seeds both have ({seed: value} dicts)."""
    return {s: a[s] - b[s] for s in sorted(set(a) & set(b))}


def paired(a: dict, b: dict) -> Stat:
    """Mean and 95% interval of the per-seed differences a - b over the seeds both have."""
    return mean_ci(differences(a, b).values())


def show(s: Stat | None, unit: str = "%", signed: bool = False, count: str = "always") -> str:
    """The one way a Stat is written, in percent or points: '95.1 ± 0.4% (n=3)', '+12.0 ± 0.3 points
    (n=3, 1 diverged)', '95.1% (n=1)' (one seed: no interval). count 'one' (a table cell, whose
    column gives n): '95.1 ± 0.4', '95.1 (n=1)', '95.1 ± 0.4 (1 diverged)'; 'never': no n at all.
    '–' where there is nothing."""
    if s is None or s.n == 0:
        return "–"
    text = f"{100 * s.mean:{'+' if signed else ''}.1f}" + (f" ± {100 * s.half:.1f}" if s.n >= 2 else "") + unit
    diverged = f"{s.diverged} diverged" if s.diverged else ""
    if count == "always":
        return text + f" (n={s.n}" + (f", {diverged})" if diverged else ")")
    shown = [f"n={s.n}"] if count == "one" and s.n == 1 else []
    return text + "".join(f" ({x})" for x in shown + ([diverged] if diverged else []))

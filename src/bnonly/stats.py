"""Statistics over seeds: the mean and 95% Student-t interval, paired per-seed differences, the
runs that count, studies, cells and the budget they were trained under.

Runs are never pooled across configurations: a *study* is the runs that share every configuration
field but the ones a sweep varies (config.GRID_FIELDS), and a *cell* is one configuration of a study less
its seed. Runs of one seed share weights and data order, so comparisons between cells use paired
per-seed differences. Every table, figure, claim and answer takes its numbers from here (report,
claims, questions and analysis import this module, never each other's).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import NamedTuple

from .config import GRID_FIELDS, RunConfig
from .data import NUM_CLASSES
from .models import MODELS
from .sets import SETS, ordered

CHANCE = 1 / NUM_CLASSES  # ten balanced classes (MNIST, Fashion-MNIST, CIFAR-10)


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


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz's method, as
    in Numerical Recipes, 3rd ed., section 6.4)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom."""
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with df degrees of freedom (bisection on t_cdf, to 1e-12)."""
    if not 0 < p < 1 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def t975(df: int) -> float:
    """t_{0.975, df}: the 95% two-sided interval's quantile, for any df >= 1."""
    return _T975[df] if df in _T975 else _T975.setdefault(df, t_quantile(0.975, df))


_T975: dict[int, float] = {}


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


def differences(a: dict, b: dict) -> dict:
    """{seed: a[seed] - b[seed]} over the seeds both have ({seed: value} dicts)."""
    return {s: a[s] - b[s] for s in sorted(set(a) & set(b))}


def paired(a: dict, b: dict) -> Stat:
    """Mean and 95% interval of the per-seed differences a - b over the seeds both have."""
    return mean_ci(differences(a, b).values())


# ----------------------------------------------------------------------------- studies and cells
DEFAULTS = dict(RunConfig().__dict__)


def config_of(r) -> dict:
    """A run's configuration with the defaults of this version filled in (older stores, hand-built rows)
    and the fields that do not apply to it normalised: width/depth of a model without them, the norm
    of a set built without one, the allocation of a set without random entries."""
    c = {**DEFAULTS, **(r.get("config") or {}), **{k: r[k] for k in ("model", "width", "depth", "trainable",
                                                                      "seed", "dataset") if r.get(k) is not None}}
    if c["model"] in MODELS and not MODELS[c["model"]].sized:
        c["width"] = c["depth"] = None
    s = SETS.get(c["trainable"])
    if s is not None and s.without_norm:
        c["norm"] = "none"
    if s is not None and not s.random_entries:
        c["random_allocation"] = "even"
    return c


def study_key(r) -> tuple:
    c = config_of(r)
    return tuple(sorted((k, v) for k, v in c.items() if k not in GRID_FIELDS))


def studies(runs) -> list[tuple[dict, list[dict]]]:
    """The runs split by study: [(fields that tell this study from the others, runs)], largest first."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in runs:
        groups[study_key(r)].append(r)
    keys = list(groups)
    differing = [k for k in DEFAULTS if k not in GRID_FIELDS and len({dict(key)[k] for key in keys}) > 1]
    return sorted((({k: dict(key)[k] for k in differing}, rs) for key, rs in groups.items()), key=lambda t: -len(t[1]))


def describe_study(fields: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in fields.items()) or "the only study"


def cell_key(r) -> tuple:
    """(model, width, depth, trainable); width and depth are None where the model has none (LeNet-5)."""
    c = config_of(r)
    sized = c["width"] is not None
    return c["model"], int(c["width"]) if sized else None, int(c["depth"]) if sized else None, c["trainable"]


def cells(runs) -> dict[tuple, dict[int, dict]]:
    """{cell_key: {seed: run}} over the finished runs of one study and one setting of the other cell
    fields (norm, allocation, data set). Two runs of one cell and seed mean the caller mixed
    configurations: that raises rather than pooling them."""
    out: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for r in finished(runs):
        k, seed = cell_key(r), int(config_of(r)["seed"])
        if seed in out[k]:
            raise ValueError(f"two runs of cell {k} with seed {seed}: configurations differ in more than the seed")
        out[k][seed] = r
    return dict(out)


def accuracies(cell: dict[int, dict]) -> dict[int, float]:
    return {s: float(r["test_accuracy"]) for s, r in cell.items()}


def mlp_stats(runs) -> dict[tuple[int, int, str], Stat]:
    """(width, depth, trainable) -> Stat over the finished MLP runs of one study."""
    return {(w, d, t): mean_ci(accuracies(c).values())
            for (m, w, d, t), c in sorted(cells(runs).items(), key=lambda kv: str(kv[0])) if m == "mlp"}


def lenet_stats(runs) -> dict[str, Stat]:
    """trainable -> Stat over the finished LeNet-5 runs of one study."""
    by_set = {t: c for (m, _, _, t), c in cells(runs).items() if m == "lenet5"}
    return {t: mean_ci(accuracies(by_set[t]).values()) for t in ordered(by_set)}


# ----------------------------------------------------------------------------- budget
# The report's protocol (its section 3 and its code's split): 48,000 training images (MNIST's 60,000
# less a 20% validation split), early stopping on validation loss with patience 3 within 100 epochs,
# SGD lr 0.01, momentum 0.9, batch 128.
PROTOCOL = {"subset": 0, "val_fraction": 0.2, "max_epochs": 100, "patience": 3, "lr": 0.01, "momentum": 0.9,
            "batch_size": 128, "weight_decay": 0.0}
PROTOCOL_TEXT = ("the report's protocol is early stopping (patience 3) within 100 epochs on 48,000 training "
                 "images, SGD lr 0.01, momentum 0.9, batch 128")


def at_protocol(c: dict) -> bool:
    """Whether a configuration (config_of) follows the report's protocol."""
    return all(c[k] == v for k, v in PROTOCOL.items())


def budget_gaps(runs, protocol: dict = PROTOCOL, protocol_text: str = PROTOCOL_TEXT) -> str | None:
    """None when every run followed the protocol (the report's unless given); else why not, in one clause."""
    off = [(r, c) for r in runs if not all((c := config_of(r))[k] == v for k, v in protocol.items())]
    if not off:
        return None
    parts = []
    capped = [r for r, c in off if r.get("epochs_run") is not None and r["epochs_run"] >= c["max_epochs"]]
    caps = sorted({c["max_epochs"] for _, c in off})
    if any(m < protocol["max_epochs"] for m in caps):
        parts.append(f"{len(capped)} of {len(runs)} runs stopped by max_epochs = {'/'.join(map(str, caps))}")
    subsets = sorted({c["subset"] for _, c in off if c["subset"]})
    if subsets:
        parts.append(f"trained on a subset of {'/'.join(f'{n:,}' for n in subsets)} images")
    other = sorted({k for _, c in off for k, v in protocol.items() if k not in ("max_epochs", "subset") and c[k] != v}
                   | ({"max_epochs"} if any(m > protocol["max_epochs"] for m in caps) else set()))
    if other:
        parts.append("other than the protocol in " + ", ".join(other))
    return "; ".join(parts) + f"; {protocol_text}"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def cell(s: Stat | None) -> str:
    if s is None or s.n == 0:
        return "–"
    return f"{100 * s.mean:.1f} (n=1)" if s.n == 1 else f"{100 * s.mean:.1f} ± {100 * s.half:.1f}"

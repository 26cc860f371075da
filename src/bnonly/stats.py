"""Statistics over seeds: the mean and 95% Student-t interval, paired per-seed differences, the
runs that count, chance, studies, cells, and the protocol and setting they were trained under.

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

from dataclasses import dataclass

from .config import GRID_FIELDS, RunConfig
from .data import NUM_CLASSES, majority_rate
from .models import MODELS
from .sets import SETS, ordered


class Stat(NamedTuple):
    mean: float
    half: float  # half-width of the 95% interval (0 when n == 1: the interval is just the mean)
    n: int
    diverged: int = 0  # how many of the n runs (or pairs) had a diverged run: counted at their best weights

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


def counted(runs) -> list[dict]:
    """The runs that count: finished, or diverged (a non-finite loss ended it; it counts at its best
    weights' test accuracy, as the report's Keras early stopping would keep them), with a finite test
    accuracy. Failed runs (errors) have none."""
    out = []
    for r in runs:
        acc = r.get("test_accuracy")
        if r.get("status") in ("finished", "diverged") and acc is not None and math.isfinite(float(acc)):
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
    """{cell_key: {seed: run}} over the counted runs of one study and one setting of the other cell
    fields (norm, allocation, data set). Two runs of one cell and seed mean the caller mixed
    configurations: that raises rather than pooling them."""
    out: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for r in counted(runs):
        k, seed = cell_key(r), int(config_of(r)["seed"])
        if seed in out[k]:
            raise ValueError(f"two runs of cell {k} with seed {seed}: configurations differ in more than the seed")
        out[k][seed] = r
    return dict(out)


def accuracies(cell: dict[int, dict]) -> dict[int, float]:
    return {s: float(r["test_accuracy"]) for s, r in cell.items()}


def _diverged(*cells: dict[int, dict], seeds=None) -> int:
    """How many seeds (of `seeds`, default all) have a diverged run in any of the cells."""
    seeds = set().union(*cells) if seeds is None else set(seeds)
    return sum(any(c.get(s, {}).get("status") == "diverged" for c in cells) for s in seeds)


def accuracy(cell: dict[int, dict]) -> Stat:
    """A cell's test accuracy: mean and 95% interval over its seeds, and how many diverged."""
    return mean_ci(accuracies(cell).values())._replace(diverged=_diverged(cell))


def gap(a: dict[int, dict], b: dict[int, dict]) -> Stat:
    """The paired per-seed difference of two cells' accuracies (a − b) over the seeds both have."""
    seeds = set(a) & set(b)
    return paired(accuracies(a), accuracies(b))._replace(diverged=_diverged(a, b, seeds=seeds))


def mlp_stats(runs) -> dict[tuple[int, int, str], Stat]:
    """(width, depth, trainable) -> Stat over the counted MLP runs of one study."""
    return {(w, d, t): accuracy(c) for (m, w, d, t), c in sorted(cells(runs).items(), key=lambda kv: str(kv[0]))
            if m == "mlp"}


def lenet_stats(runs) -> dict[str, Stat]:
    """trainable -> Stat over the counted LeNet-5 runs of one study."""
    by_set = {t: c for (m, _, _, t), c in cells(runs).items() if m == "lenet5"}
    return {t: accuracy(by_set[t]) for t in ordered(by_set)}


# ----------------------------------------------------------------------------- chance
def chance(dataset: str | None, data_dir=None) -> float:
    """Chance: the test set's majority-class rate, what a network that always predicts the most
    common class scores (MNIST: 11.35%, class 1's 1,135 of 10,000); 1 / classes where the test labels
    cannot be read (a data set on a disk this process does not have)."""
    rate = majority_rate(dataset or "mnist", data_dir)
    return 1 / NUM_CLASSES if rate is None else rate


# ----------------------------------------------------------------------------- protocol and setting
# Every RunConfig field is in one of four groups (tests/test_claims.py checks that none is left out):
# - the grid (config.GRID_FIELDS): what a cell is (model, width, depth, set, norm, allocation, data
#   set) and which seed;
# - the replicate (REPLICATE): which draw of the protocol a run is, like its seed;
# - the protocol (a Protocol below): how it was trained, its budget; a run off it cannot test a claim
#   made under the protocol, whose verdict is then "not testable at this budget", with the reason;
# - the setting (SETTING, less what a protocol checks): what the models are beyond the grid; every
#   claim names it in its measured text.
REPLICATE = ("data_seed",)
SETTING = ("gamma_init", "hidden_beta", "hidden_bias", "bn_momentum", "bn_eps", "random_placement", "random_norm",
           "frozen_trunk_norm")
SCHEDULE = ("lr_drop_epoch", "lr_drop_epochs", "lr_drop_factor")  # checked together, as a schedule


def schedule(c: dict) -> tuple:
    """A configuration's learning-rate schedule: () without drops, else ((drop epochs), factor)."""
    drops = sorted({int(e) for e in str(c["lr_drop_epochs"]).split(",") if e.strip()}
                   | ({int(c["lr_drop_epoch"])} if c["lr_drop_epoch"] else set()))
    return () if not drops else (tuple(drops), float(c["lr_drop_factor"]))


@dataclass(frozen=True)
class Protocol:
    name: str
    values: dict               # field -> the value the protocol trains with
    schedules: tuple           # the learning-rate schedules it allows (schedule())
    text: str

    @property
    def setting(self) -> tuple:
        return tuple(f for f in SETTING if f not in self.values)

    def gaps(self, c: dict) -> list[str]:
        """The fields in which a configuration (config_of) is off this protocol."""
        off = [k for k, v in self.values.items() if c[k] != v]
        return off + (["learning-rate schedule"] if schedule(c) not in self.schedules else [])


# The report's protocol (its section 3 and its code): 48,000 training images (MNIST's 60,000 less a
# 20% validation split), early stopping on validation loss with patience 3 within 100 epochs, SGD lr
# 0.01, momentum 0.9, batch 128, no weight decay, fp32, pixels in [0, 1] without augmentation; a
# constant learning rate, or the published code's x0.1 from the 71st epoch.
REPORT = Protocol("the report's protocol", {
    "subset": 0, "val_fraction": 0.2, "max_epochs": 100, "patience": 3, "lr": 0.01, "momentum": 0.9,
    "batch_size": 128, "weight_decay": 0.0, "precision": "fp32", "augment": False, "normalize": False},
    ((), ((71,), 0.1)),
    "the report's protocol is early stopping (patience 3) within 100 epochs on 48,000 training images, SGD lr "
    "0.01 (constant, or x0.1 from epoch 71 as in its code), momentum 0.9, batch 128, no weight decay, fp32, no "
    "augmentation or input normalisation")
PROTOCOL, PROTOCOL_TEXT = REPORT.values, REPORT.text


def budget_gaps(runs, protocol: Protocol = REPORT) -> str | None:
    """None when every run followed the protocol (the report's unless given); else why not, in one clause."""
    off = [(r, c, protocol.gaps(c)) for r in runs for c in [config_of(r)] if protocol.gaps(c)]
    if not off:
        return None
    parts = []
    caps = sorted({c["max_epochs"] for _, c, g in off if "max_epochs" in g})
    if caps:
        capped = [r for r, c, g in off if "max_epochs" in g and (r.get("epochs_run") or 0) >= c["max_epochs"]]
        parts.append(f"{len(capped)} of {len(runs)} runs stopped by max_epochs = {'/'.join(map(str, caps))}")
    subsets = sorted({c["subset"] for _, c, g in off if "subset" in g and c["subset"]})
    if subsets:
        parts.append(f"trained on a subset of {'/'.join(f'{n:,}' for n in subsets)} images")
    other = sorted({k for _, _, g in off for k in g if k not in ("max_epochs", "subset")})
    if other:
        parts.append("other than the protocol in " + ", ".join(
            f"{k} ({'/'.join(sorted({_show(c, k) for _, c, g in off if k in g}))})" for k in other))
    return "; ".join(parts) + f"; {protocol.text}"


def _show(c: dict, field: str) -> str:
    if field == "learning-rate schedule":
        s = schedule(c)
        return "constant" if not s else f"x{s[1]:g} at epochs {', '.join(map(str, s[0]))}"
    return str(c[field]).lower() if isinstance(c[field], bool) else str(c[field])


# What a setting's value does to a comparison, where it changes what a claim's label means.
SETTING_NOTES = {
    ("random_norm", "inference"): "random's BatchNorm runs in inference mode (its normalization in effect removed: "
                                  "a weaker baseline than Frankle et al.'s)",
    ("random_placement", "neuron"): "random trains whole output units",
    ("random_placement", "report-code"): "random trains two whole output units of every layer whose fan-in equals "
                                         "its width (the report's notebook)",
}


def setting_text(runs, protocol: Protocol = REPORT) -> str:
    """The setting of the runs a verdict rests on, every field with its value(s), and what a value
    does to the comparison where it changes what a label means."""
    cfgs = [config_of(r) for r in runs]
    if not cfgs:
        return ""
    sets = {c["trainable"] for c in cfgs}
    shown = [f for f in protocol.setting
             if (not f.startswith("random_") or "random" in sets)
             and (f != "frozen_trunk_norm" or sets & {"out", "none"})
             and (f != "hidden_bias" or any(SETS[t].without_norm for t in sets if t in SETS))]
    values = {f: sorted({_show(c, f) for c in cfgs if not f.startswith("random_") or c["trainable"] == "random"})
              for f in shown}  # (the random baseline's fields, of its runs)
    notes = "; ".join(SETTING_NOTES[(f, v)] for f in shown for v in values[f] if (f, v) in SETTING_NOTES)
    return ("Setting: " + ", ".join(f"{f} = {'/'.join(v)}" for f, v in values.items()) + "."
            + (f" {notes[0].upper()}{notes[1:]}." if notes else ""))


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def value(s: Stat | None, signed: bool = False) -> str:
    """A Stat in percent or points: '95.1 ± 0.4', '+12.0 ± 0.3', '95.1 (n=1)' (no interval from one
    seed), '–' where there is nothing; ' (k diverged)' where runs diverged."""
    if s is None or s.n == 0:
        return "–"
    mean = f"{100 * s.mean:{'+' if signed else ''}.1f}"
    out = f"{mean} (n=1)" if s.n == 1 else f"{mean} ± {100 * s.half:.1f}"
    return out + (f" ({s.diverged} diverged)" if s.diverged else "")


def cell(s: Stat | None) -> str:
    return value(s)

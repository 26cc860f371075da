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
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from scipy.special import stdtr, stdtrit  # Student's t CDF and quantile (what scipy.stats.t calls)

from .config import GRID_FIELDS, RunConfig, resolve
from .data import NUM_CLASSES, TRAIN_SIZES, majority_rate
from .models import MODELS
from .sets import SETS, ordered


class Stat(NamedTuple):
    mean: float
    se: float  # standard error of the mean (0 from one value: no interval)
    n: int
    diverged: int = 0  # how many of the n runs (or pairs) had a diverged run: counted at their best weights

    @property
    def half(self) -> float:
        """Half-width of the 95% Student-t interval (0 when n == 1: the interval is just the mean)."""
        return t975(self.n - 1) * self.se if self.n >= 2 else (0.0 if self.n == 1 else math.nan)

    @property
    def lo(self) -> float:
        return self.mean - self.half

    @property
    def hi(self) -> float:
        return self.mean + self.half

    def as_dict(self) -> dict:
        return {**self._asdict(), "half": self.half}


@lru_cache(maxsize=None)
def t975(df: int) -> float:
    """t_{0.975, df}: the 95% two-sided interval's quantile, for any df >= 1."""
    return float(stdtrit(df, 0.975))


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
    of a set built without one, the allocation of a set without random entries, a subset as large as
    the training set (it is the whole set: the same split)."""
    c = {**DEFAULTS, **(r.get("config") or {}), **{k: r[k] for k in ("model", "width", "depth", "trainable",
                                                                      "seed", "dataset") if r.get(k) is not None}}
    if c["model"] in MODELS and not MODELS[c["model"]].sized:
        c["width"] = c["depth"] = None
    s = SETS.get(c["trainable"])
    if s is not None and s.without_norm:
        c["norm"] = "none"
    if s is not None and not s.random_entries:
        c["random_allocation"] = "even"
    if c["subset"] and c["subset"] >= TRAIN_SIZES.get(c["dataset"], math.inf):
        c["subset"] = 0
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
class Chance(NamedTuple):
    rate: float
    basis: str  # how the rate was found, for the text beside it


def chance(dataset: str | None, data_dir=None) -> Chance:
    """Chance: the test set's majority-class rate, what a network that always predicts the most
    common class scores (MNIST: 11.35%, class 1's 1,135 of 10,000); 1 / classes, said so, where the
    test labels cannot be read (a data set on a disk this process does not have)."""
    rate = majority_rate(dataset or "mnist", data_dir)
    if rate is None:
        return Chance(1 / NUM_CLASSES, f"1 / {NUM_CLASSES} classes: the test labels of {dataset} could not be read "
                                       "here, so not its majority-class rate")
    return Chance(rate, "the test set's majority-class rate")


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
    presets: tuple = ()        # the published settings (config.PRESETS) its claims were made in
    notes: dict = field(default_factory=dict)  # (setting field, value) -> what it does to a comparison

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
# constant learning rate, or the published code's x0.1 from the 71st epoch. Its claims were made in
# two published settings: its text (preset `report`) and its code (`report-code`).
REPORT = Protocol("the report's protocol", {
    "subset": 0, "val_fraction": 0.2, "max_epochs": 100, "patience": 3, "lr": 0.01, "momentum": 0.9,
    "batch_size": 128, "weight_decay": 0.0, "precision": "fp32", "augment": False, "normalize": False},
    ((), ((71,), 0.1)),
    "the report's protocol is early stopping (patience 3) within 100 epochs on 48,000 training images, SGD lr "
    "0.01 (constant, or x0.1 from epoch 71 as in its code), momentum 0.9, batch 128, no weight decay, fp32, no "
    "augmentation or input normalisation",
    presets=("report", "report-code"),
    notes={
        ("random_norm", "batch"): "random keeps BatchNorm with batch statistics (Frankle et al.'s matched "
                                  "baseline): a stronger baseline than the one behind the report's numbers, whose "
                                  "code ran random's BatchNorm in inference mode",
        ("random_norm", "inference"): "random's BatchNorm runs in inference mode, as in the report's code (its "
                                      "normalization in effect removed): a weaker baseline than Frankle et al.'s",
        ("random_placement", "neuron"): "random trains whole output units",
        ("random_placement", "report-code"): "random trains two whole output units of every layer whose fan-in "
                                             "equals its width (the report's notebook)",
    })
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


def _images(c: dict) -> str:
    """The training data of a configuration: 'all 48,000 training images', 'a subset of 1,000 images (800 to train on)'."""
    if c["subset"]:
        return f"a subset of {c['subset']:,} images ({c['subset'] - round(c['subset'] * c['val_fraction']):,} to train on)"
    n = TRAIN_SIZES.get(c["dataset"])
    return (f"all {n - round(n * c['val_fraction']):,} training images" if n else
            f"the whole training set less a {100 * c['val_fraction']:g}% validation split")


def _epochs(c: dict) -> str:
    return (f"early stopping (patience {c['patience']}) within {c['max_epochs']} epochs" if c["patience"] else
            f"{c['max_epochs']} epochs without early stopping")


def budget_sentence(runs, protocol: Protocol = REPORT) -> str:
    """The budget a conclusion rests on, as one sentence: the data and epochs of its runs, whether
    that is the protocol (and where not, in which fields), how many of its runs ended at the epoch
    cap and how many diverged. '' without runs."""
    if not runs:
        return ""
    cfgs = [(r, config_of(r)) for r in runs]
    data = " / ".join(sorted({_images(c) for _, c in cfgs}))
    epochs = " / ".join(sorted({_epochs(c) for _, c in cfgs}))
    off = sorted({k for _, c in cfgs for k in protocol.gaps(c)})
    where = protocol.name if not off else f"off {protocol.name} in {', '.join(off)}"
    stopping = [(r, c) for r, c in cfgs if c["patience"]]
    capped = sum((r.get("epochs_run") or 0) >= c["max_epochs"] for r, c in stopping)
    diverged = sum(r.get("status") == "diverged" for r in runs)
    cap = (f"{capped} of {len(stopping)} runs ended at the epoch cap" if len(stopping) == len(cfgs) else
           f"{capped} of {len(stopping)} early-stopping runs ended at the epoch cap" if stopping else
           "every run trained to its last epoch")
    return (f"Budget: {data}, {epochs} ({where}); {cap}, "
            f"{diverged or 'none'} diverged.")


def _show(c: dict, field: str) -> str:
    if field == "learning-rate schedule":
        s = schedule(c)
        return "constant" if not s else f"x{s[1]:g} at epochs {', '.join(map(str, s[0]))}"
    return str(c[field]).lower() if isinstance(c[field], bool) else str(c[field])


def _shown(c: dict, protocol: Protocol) -> list[str]:
    """The setting fields that apply to a run: the random baseline's to `random`, frozen_trunk_norm to
    the sets with a frozen trunk, hidden_bias to the sets built without normalization."""
    s = SETS.get(c["trainable"])
    return [f for f in protocol.setting
            if (not f.startswith("random_") or c["trainable"] == "random")
            and (f != "frozen_trunk_norm" or (s is not None and not s.trains_trunk))
            and (f != "hidden_bias" or (s is not None and s.without_norm))]


@lru_cache(maxsize=None)
def _preset_values(preset: str, model: str, trainable: str) -> dict:
    return resolve(preset, model=model, trainable=trainable).__dict__ if model in MODELS else {}


def published(runs, protocol: Protocol = REPORT) -> tuple[str | None, list[str]]:
    """The published setting (one of protocol.presets) whose values every run's setting fields have,
    else None with the fields in which the runs differ from every one of them."""
    cfgs = [config_of(r) for r in runs]
    off: dict[str, set] = {}
    for p in protocol.presets:
        off[p] = {f for c in cfgs for f in _shown(c, protocol)
                  if c["trainable"] in SETS and c[f] != _preset_values(p, c["model"], c["trainable"]).get(f, c[f])}
        if not off[p]:
            return p, []
    return None, sorted(set.intersection(*off.values())) if off else []


def setting_text(runs, protocol: Protocol = REPORT) -> str:
    """The setting of the runs a verdict rests on, every field with its value(s), what a value does
    to the comparison where it changes what a label means, and whether it is a published setting."""
    cfgs = [config_of(r) for r in runs]
    if not cfgs:
        return ""
    fields_ = [f for f in protocol.setting if any(f in _shown(c, protocol) for c in cfgs)]
    values = {f: sorted({_show(c, f) for c in cfgs if f in _shown(c, protocol)}) for f in fields_}
    notes = "; ".join(protocol.notes[(f, v)] for f in fields_ for v in values[f] if (f, v) in protocol.notes)
    out = ("Setting: " + ", ".join(f"{f} = {'/'.join(v)}" for f, v in values.items()) + "."
           + (f" {notes[0].upper()}{notes[1:]}." if notes else ""))
    preset, differ = published(runs, protocol)
    if protocol.presets and preset is None:
        names = " nor ".join(f"`{p}`" for p in protocol.presets)
        out += (f" Outside the published settings: neither {names} (it differs from each in "
                f"{', '.join(differ) or 'a mix of their fields'}), so the verdict is about this setting, not theirs.")
    return out


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

"""The runs that count, and a store split into studies and cells; chance.

A *study* is the runs that share every configuration field but those a sweep grid varies
(config.run.GRID_FIELDS), and a *cell* is one configuration of a study less its seed: {seed: run}.
Two runs of one cell and seed mean configurations were mixed, which raises rather than pools them.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import NamedTuple

from ..config.run import GRID_FIELDS, RunConfig
from ..registry.data import NUM_CLASSES, TRAIN_SIZES, majority_rate
from ..registry.models import MODELS
from ..registry.sets import SETS, ordered
from .stats import Stat, mean_ci, paired


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


def diverged_seeds(*cells: dict[int, dict], seeds=None) -> int:
    """How many seeds (of `seeds`, default all) have a diverged run in any of the cells."""
    seeds = set().union(*cells) if seeds is None else set(seeds)
    return sum(any(c.get(s, {}).get("status") == "diverged" for c in cells) for s in seeds)


def accuracy(cell: dict[int, dict]) -> Stat:
    """A cell's test accuracy: mean and 95% interval over its seeds, and how many diverged."""
    return mean_ci(accuracies(cell).values())._replace(diverged=diverged_seeds(cell))


def difference(a: dict[int, dict], b: dict[int, dict]) -> Stat:
    """The paired per-seed difference of two cells' accuracies (a − b) over the seeds both have."""
    seeds = set(a) & set(b)
    return paired(accuracies(a), accuracies(b))._replace(diverged=diverged_seeds(a, b, seeds=seeds))


def mlp_stats(runs) -> dict[tuple[int, int, str], Stat]:
    """(width, depth, trainable) -> Stat over the counted MLP runs of one study."""
    return {(w, d, t): accuracy(c) for (m, w, d, t), c in sorted(cells(runs).items(), key=lambda kv: str(kv[0]))
            if m == "mlp"}


def lenet_stats(runs) -> dict[str, Stat]:
    """trainable -> Stat over the counted LeNet-5 runs of one study."""
    by_set = {t: c for (m, _, _, t), c in cells(runs).items() if m == "lenet5"}
    return {t: accuracy(by_set[t]) for t in ordered(by_set)}


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

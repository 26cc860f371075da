"""A sweep's grid: the runs a study trains, from a sweep file's plural keys (`models`, `widths`,
`depths`, `trainable`, `seeds`, `norms`, `random_allocations`, `datasets`) and its run settings.
config/layers.py reads a sweep file and its overrides into a SweepConfig.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import ConfigError
from ..version import configs_dir
from ..registry.models import MODELS
from ..registry.sets import SETS
from .run import DEFAULT_PRESET, FIELD_TYPES, GRID_KEYS, RunConfig, resolve


CONFIG_DIR = configs_dir()  # the shipped studies (version.py: they are code, hashed with it)


def shipped_configs() -> list[str]:
    return sorted(p.name[:-5] for p in CONFIG_DIR.iterdir() if p.name.endswith(".toml"))


def skipped_without_norm(t: str, grid_sets: list[str]) -> bool:
    """With norm 'none': a set that needs a normalization layer has nothing to train, and a set that
    trains what a without-norm set in the grid trains (`all` next to `all-nobn`) is the same model."""
    s = SETS.get(t)
    if s is None:
        return False  # an unknown name: resolve() names it
    return s.needs_norm or any(SETS[o].without_norm and SETS[o].parts == s.parts
                               for o in grid_sets if o != t and o in SETS)


@dataclass(frozen=True)
class SweepConfig:
    name: str = "sweep"
    preset: str = DEFAULT_PRESET
    models: list = field(default_factory=lambda: ["mlp"])
    widths: list = field(default_factory=lambda: [784])
    depths: list = field(default_factory=lambda: [4])
    trainable: list = field(default_factory=lambda: ["bn"])
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    # grid keys that may stay empty: the run setting of their field (norm, random_allocation, dataset) then applies
    norms: list = field(default_factory=list)
    random_allocations: list = field(default_factory=list)
    datasets: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # any other RunConfig field, as a scalar

    @staticmethod
    def check_keys(table: dict, source: str) -> None:
        """Every key is a grid key, name, preset or run setting (a grid field only where its grid key
        may stay empty); else one line naming the source."""
        for key in table:
            if key not in GRID_KEYS and key not in ("name", "preset") and (
                    key not in FIELD_TYPES or key in LIST_ONLY):
                grid = next((g for g, f in GRID_KEYS.items() if f == key), None)  # 'width': the grid says 'widths'
                hint = f"did you mean {grid!r}? " if grid else ""
                raise ConfigError(f"{source}: unknown key {key!r} ({hint}grid keys: {', '.join(GRID_KEYS)}; "
                                  f"or any run setting such as max_epochs, dataset, subset)")

    @staticmethod
    def check_grid(key: str, value, source: str) -> None:
        typ = {"int": int, "str": str}[FIELD_TYPES[GRID_KEYS[key]]]
        if not isinstance(value, list) or not value or not all(isinstance(v, typ) and not isinstance(v, bool)
                                                               for v in value):
            raise ConfigError(f"{source}: {key} must be a non-empty list of {typ.__name__}, got {value!r}")

    @classmethod
    def from_dict(cls, table: dict, source: str = "config") -> "SweepConfig":
        """A sweep from a table of keys; every value checked now (the grid is expanded once, here),
        naming the source of a bad one."""
        cls.check_keys(table, source)
        kw, settings = {}, {}
        for key, value in table.items():
            if key in GRID_KEYS:
                cls.check_grid(key, value, source)
                kw[key] = value
            elif key in ("name", "preset"):
                if not isinstance(value, str):
                    raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
                kw[key] = value
            else:  # a run setting (check_keys let nothing else through)
                settings[key] = value
        cfg = cls(**kw, settings=settings)
        if not cfg.runs():
            raise ConfigError(f"{source}: the grid has no runs (with norm 'none' every set of it needs a "
                              "normalization layer)")
        return cfg

    def to_dict(self) -> dict:
        """The sweep as a TOML-like table (empty grid lists, which mean "the setting", left out)."""
        d = dataclasses.asdict(self)
        return {**{k: v for k, v in d.items() if k != "settings" and v != []}, **d["settings"]}

    def runs(self) -> list[RunConfig]:
        """The grid's runs, in a stable order, without duplicates (expanded once)."""
        return self._expanded

    @cached_property
    def _expanded(self) -> list[RunConfig]:
        """LeNet-5 and the CIFAR models have no width/depth: they appear once per set x seed. Runs
        that would compute the same thing are one run: `all-nobn` is built without normalization
        whatever `norms` says, `random_allocations` only varies `random`, and with norm 'none' the
        sets that need a normalization layer are left out, and so is `all` when `all-nobn` (the same
        model) is in the grid."""
        out, seen = [], set()
        norms = self.norms or [self.settings.get("norm", "batchnorm")]
        allocations = self.random_allocations or [self.settings.get("random_allocation", "even")]
        datasets = self.datasets or [self.settings.get("dataset")]  # None: the preset's
        settings = {k: v for k, v in self.settings.items() if k not in ("norm", "random_allocation", "dataset")}
        for dataset, model, norm in itertools.product(datasets, self.models, norms):
            sized = model in MODELS and MODELS[model].sized
            widths, depths = (self.widths, self.depths) if sized else ([None], [None])
            for w, d, t in itertools.product(widths, depths, self.trainable):
                if norm == "none" and skipped_without_norm(t, self.trainable):
                    continue
                random = t in SETS and SETS[t].random_entries
                for alloc, s in itertools.product(allocations if random else allocations[:1], self.seeds):
                    cfg = resolve(self.preset, **settings, model=model, **({"width": w, "depth": d} if sized else {}),
                                  trainable=t, seed=s, **({"dataset": dataset} if dataset else {}),
                                  norm="none" if t in SETS and SETS[t].without_norm else norm,
                                  random_allocation=alloc if random else "even")
                    if cfg.run_id not in seen:
                        seen.add(cfg.run_id)
                        out.append(cfg)
        return out


# The grid fields a sweep gives as lists only (their grid keys always apply): model, width, depth, trainable, seed.
LIST_ONLY = tuple(GRID_KEYS[f.name] for f in dataclasses.fields(SweepConfig)
                  if f.name in GRID_KEYS and f.default_factory())

"""How a configuration is put together, every layer in one place (config/run.py holds the run's
fields and their checks):
- the presets (PRESETS, and FAMILY_PRESETS for a family of models) over the defaults: resolve();
- a run (`bnonly train`, bnonly.train()): the defaults, a preset, a TOML file of run settings, then
  flags (text) or keywords (typed);
- a sweep (`bnonly sweep`, bnonly.sweep()): a shipped study, a TOML file or a SweepConfig (the grid
  of a sweep file's plural keys and its run settings, expanded once into RunConfigs), then
  `--set KEY=VALUE` (TOML values), then keywords;
- a selection (`bnonly report --where`, report(where=)): FIELD=VALUE strings or a dict.
A bad value is one ConfigError naming where it came from (the file, the flag or the keyword).
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import ConfigError
from ..files import read_text
from ..registry.models import MODELS
from ..registry.sets import SETS
from ..version import configs_dir
from .run import FIELD_TYPES, GRID_KEYS, RunConfig

# ---------------------------------------------------------------------------- presets
# Presets change only the fields they name; explicit flags/keys override them.
PRESETS: dict[str, dict] = {
    # The report's text: gamma ~ U(-1, 1), beta = 0 and "deactivated for the hidden layers".
    "report": dict(gamma_init="uniform(-1,1)", hidden_beta=False, bn_momentum=0.1, bn_eps=1e-5,
                   lr_drop_epoch=0, random_norm="batch", frozen_trunk_norm=True, random_placement="scattered",
                   hidden_bias=True),
    # The report's published code (Marcusntnu/mlp_lenet_bathnorm, dense_batchnorm.ipynb): gamma ~
    # N(0, 1), beta everywhere, Keras BN defaults (momentum 0.99 -> 0.01 in PyTorch's convention, eps
    # 1e-3), lr x0.1 from its 0-based epoch 70 (the 71st; lr_drop_epoch counts from 1), and a frozen BN
    # layer that runs in inference mode in the `random` baseline. Its random baseline trains two whole
    # output neurons of every layer whose fan-in equals its width (CustomDenseRandomLayer: Dense(2)
    # trainable beside Dense(width - 2) frozen) and scattered entries elsewhere; its vanilla MLP, and
    # its `out` / `none` models, have neither BatchNorm nor hidden biases (use_bias=False). The stored
    # notebook calls an undefined FixWeights for the scattered layers (it defines FreezeWeights), so it
    # is not exactly the code that produced the report.
    "report-code": dict(gamma_init="normal(0,1)", hidden_beta=True, bn_momentum=0.01, bn_eps=1e-3,
                        lr_drop_epoch=71, random_norm="inference", frozen_trunk_norm=False,
                        random_placement="report-code", hidden_bias=False),
    # Frankle, Schwab & Morcos' code: gamma ~ U[0, 1), PyTorch BN defaults.
    "frankle": dict(gamma_init="uniform(0,1)", hidden_beta=True, bn_momentum=0.1, bn_eps=1e-5,
                    lr_drop_epoch=0, random_norm="batch", frozen_trunk_norm=True, random_placement="scattered",
                    hidden_bias=True),
}
# A preset's additions for a family of models (models.Architecture.family), applied after the
# preset and before explicit values. Frankle et al.'s CIFAR-10 setup is OpenLTH's default for
# cifar_resnet_N and cifar_vgg_N (open_lth models/cifar_resnet.py default_hparams: SGD lr 0.1,
# momentum 0.9, weight decay 1e-4, batch 128, 160 epochs, lr x0.1 after epochs 80 and 120 (its
# milestones '80ep,120ep' count iterations from 0: epochs 81 and 121 counted from 1 run at the lower
# rate), kaiming
# normal weights, gamma ~ U[0, 1), beta = 0; datasets/cifar10.py: random crop with 4-pixel padding
# and horizontal flip), with their random baseline of two weights per output channel (per-unit
# placement of as many entries as the BatchNorm layer has parameters). Where bnonly differs: 10% of
# the training set is held out for validation (OpenLTH trains on all 50,000 images), and images are
# normalised with CIFAR-10's own per-channel statistics (OpenLTH uses ImageNet's) (README, "Frankle's
# CIFAR-10 setting").
FAMILY_PRESETS: dict[tuple[str, str], dict] = {
    ("frankle", "cifar"): dict(dataset="cifar10", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128,
                               max_epochs=160, patience=0, lr_drop_epoch=0, lr_drop_epochs="81,121",
                               lr_drop_factor=0.1, augment=True, normalize=True, val_fraction=0.1,
                               random_placement="per-unit"),
}
DEFAULT_PRESET = "report"


def resolve(preset: str = DEFAULT_PRESET, **overrides) -> RunConfig:
    """Defaults, then the preset, then explicit overrides."""
    if preset not in PRESETS:
        raise ConfigError(f"preset={preset!r}: must be one of {', '.join(PRESETS)}")
    unknown = sorted(set(overrides) - set(FIELD_TYPES))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} (known: {', '.join(FIELD_TYPES)})")
    model = overrides.get("model", PRESETS[preset].get("model", RunConfig.model))
    family = MODELS[model].family if model in MODELS else None
    return RunConfig(**{**PRESETS[preset], **FAMILY_PRESETS.get((preset, family), {}), **overrides})


# ---------------------------------------------------------------------------- a sweep's grid
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
    # more cells beside the grid: [[also]] tables of grid keys, each the grid with those keys replaced
    # (e.g. more seeds for one model's cells); the runs are the union, each once
    also: list = field(default_factory=list)

    @classmethod
    def check_entry(cls, key: str, value, source: str) -> None:
        """One key's value: a grid key's list, or a name or preset as a string (check_keys vets the keys)."""
        if key in GRID_KEYS:
            cls.check_grid(key, value, source)
        elif key == "also":
            if not isinstance(value, list) or not value or not all(isinstance(t, dict) and t for t in value):
                raise ConfigError(f"{source}: also must be a list of tables of grid keys ([[also]] with e.g. "
                                  f"seeds = [3, 4]), got {value!r}")
            for i, t in enumerate(value):
                for k, v in t.items():
                    if k not in GRID_KEYS:
                        raise ConfigError(f"{source}: also[{i}] may only replace grid keys ({', '.join(GRID_KEYS)}), "
                                          f"not {k!r}")
                    cls.check_grid(k, v, f"{source}: also[{i}]")
        elif key in ("name", "preset") and not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        elif key == "name" and (value in ("", ".", "..") or "/" in value or "\\" in value or "\0" in value):
            # the name is the default output directory's (runs/NAME): a path there would write elsewhere
            raise ConfigError(f"{source}: name {value!r} must be a plain name (no '/', not empty, '.' or '..'): it "
                              "names the directory runs/NAME")

    @staticmethod
    def check_keys(table: dict, source: str) -> None:
        """Every key is a grid key, name, preset or run setting (a grid field only where its grid key
        may stay empty); else one line naming the source."""
        for key in table:
            if key not in GRID_KEYS and key not in ("name", "preset", "also") and (
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
            cls.check_entry(key, value, source)
            if key in GRID_KEYS or key in ("name", "preset", "also"):
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
        """The grid's runs, then each `also` table's (the grid with its keys replaced); LeNet-5 and the
        CIFAR models have no width/depth: they appear once per set x seed. Runs that would compute the
        same thing are one run: `all-nobn` is built without normalization whatever `norms` says,
        `random_allocations` only varies `random`, and with norm 'none' the sets that need a
        normalization layer are left out, and so is `all` when `all-nobn` (the same model) is in the grid."""
        out, seen = [], set()
        for part in [{}] + self.also:
            for cfg in dataclasses.replace(self, also=[], **part).grid_runs():
                if cfg.run_id not in seen:
                    seen.add(cfg.run_id)
                    out.append(cfg)
        return out

    def grid_runs(self) -> list[RunConfig]:
        """The runs of the grid alone (not `also`), in a stable order."""
        out = []
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
                    out.append(cfg)
        return out


# The grid fields a sweep gives as lists only (their grid keys always apply): model, width, depth, trainable, seed.
LIST_ONLY = tuple(GRID_KEYS[f.name] for f in dataclasses.fields(SweepConfig)
                  if f.name in GRID_KEYS and f.default_factory())




def load_toml(path) -> dict:
    """A TOML file as a dict; a missing, unreadable or malformed file is a one-line ConfigError naming it."""
    text = read_text(path, ConfigError, "a TOML file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None


def parse_value(key: str, text: str):
    """A field's value from command-line text, in the field's type."""
    t = FIELD_TYPES[key]
    try:
        if t == "bool":
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        return {"int": int, "float": float, "str": str}[t](text)
    except ValueError:
        raise ConfigError(f"{key}={text!r}: expected {t}") from None


def is_path(value) -> bool:
    """A path argument: str or os.PathLike, not empty (the one check behind every path flag)."""
    return isinstance(value, (str, os.PathLike)) and bool(os.fspath(value).strip())


def path_arg(value, what: str) -> Path:
    """A path argument (str or os.PathLike, not empty), or a one-line ConfigError naming it."""
    if not is_path(value):
        raise ConfigError(f"{what} {value!r}: expected a path")
    return Path(value)


# ---------------------------------------------------------------------------- a run
def run_config(config: RunConfig | None = None, preset: str | None = None, file=None,
               flags: dict[str, str] | None = None, **fields) -> RunConfig:
    """A run: a RunConfig (then only fields change it), or the defaults, the preset (the argument,
    else the file's `preset`, else 'report'), the file's run settings, the flags (text, parsed as
    their fields' types), then the typed fields."""
    if config is not None:
        if preset is not None or file is not None:
            raise ConfigError("give a RunConfig or a preset and a file, not both")
        if not isinstance(config, RunConfig):
            raise ConfigError(f"config: expected a RunConfig, got {type(config).__name__}")
        return resolve(DEFAULT_PRESET, **{**dataclasses.asdict(config), **fields})
    values = {}
    if file is not None:
        table = load_toml(path_arg(file, "--config"))
        table_preset = table.pop("preset", None)
        if table_preset is not None and not isinstance(table_preset, str):
            raise ConfigError(f"{file}: preset must be a string, got {table_preset!r}")
        preset = preset or table_preset
        values.update(table)
    values.update({k: parse_value(k, v) for k, v in (flags or {}).items()})
    values.update(fields)
    return resolve(preset or DEFAULT_PRESET, **values)


# ---------------------------------------------------------------------------- a sweep
def parse_set(items: list[str]) -> dict:
    """`--set key=value` pairs; the value is TOML (`[10, 100]`, `"bn"`, `3`), or a bare word."""
    if isinstance(items, str) or not isinstance(items, (list, tuple)):
        raise ConfigError(f"--set {items!r}: expected KEY=VALUE strings")
    out = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # a bare word, e.g. --set preset=frankle
        out[key.strip()] = value
    return out


def _check_overrides(table: dict, source: str) -> None:
    """Overrides checked on their own, so a bad one names the flag or keyword it came from."""
    SweepConfig.check_keys(table, source)
    for key, value in table.items():
        SweepConfig.check_entry(key, value, source)


def sweep_file(spec) -> tuple[Path, dict]:
    """A shipped study's name or a TOML path, and its table (its name, where it has none, the file's)."""
    if not is_path(spec):
        raise ConfigError(f"sweep config {spec!r}: expected a shipped study ({', '.join(shipped_configs())}) "
                          "or a .toml path")
    path = Path(os.fspath(spec))
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{os.fspath(spec)}.toml"
        if not path.is_file():
            raise ConfigError(f"no sweep config {os.fspath(spec)!r} (shipped: {', '.join(shipped_configs())}; or give "
                              "a .toml path)")
    elif path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a sweep config (.toml)")
    table = load_toml(path)
    if not table:
        raise ConfigError(f"{path}: an empty sweep file (give its grid, e.g. widths = [10, 100], or run settings)")
    table.setdefault("name", Path(path.name).stem)
    return path, table


def load_sweep(config="quick", sets: list[str] | None = None, keywords: dict | None = None) -> SweepConfig:
    """A sweep: a shipped study, a TOML path or a SweepConfig, then `--set` strings, then keywords
    (the Python API's), each checked under its own name; the grid is expanded once, here."""
    if isinstance(config, SweepConfig):
        source, table = "sweep()", config.to_dict()
    elif isinstance(config, (str, os.PathLike)):
        path, table = sweep_file(config)
        source = str(path)
    else:
        raise ConfigError(f"config {type(config).__name__}: expected a shipped study name "
                          f"({', '.join(shipped_configs())}), a TOML path or a SweepConfig")
    for overrides, name in ((parse_set(sets or []), "--set"), (dict(keywords or {}), "sweep()")):
        _check_overrides(overrides, name)
        table.update(overrides)
    return SweepConfig.from_dict(table, source=source)


# ---------------------------------------------------------------------------- a selection
def parse_where(where) -> dict:
    """`--where` as {field: value}: from "FIELD=VALUE" strings (the command line's) or a dict
    (values as typed, or as text); each field a run field, each value parsed as that field's type."""
    if where is None:
        return {}
    if isinstance(where, dict):
        items = [(k, v, f"{k}={v}") for k, v in where.items()]
    else:
        if isinstance(where, str):
            where = [where]
        if not isinstance(where, (list, tuple)) or not all(isinstance(w, str) for w in where):
            raise ConfigError(f"where {where!r}: expected a dict of field values or FIELD=VALUE strings")
        items = []
        for item in where:
            key, sep, value = item.partition("=")
            items.append((key.strip() if sep else None, value.strip(), item))
    out = {}
    for key, value, item in items:
        if key not in FIELD_TYPES:
            raise ConfigError(f"--where {item!r}: expected FIELD=VALUE with a run field ({', '.join(FIELD_TYPES)})")
        if key in out:  # every --where must hold, and a run has one value of each field
            raise ConfigError(f"--where {item!r}: {key} is given twice (a run has one {key}, and every --where must "
                              "hold); give it once")
        out[key] = parse_value(key, value if isinstance(value, str) else str(value))
    return out

"""Sweeps: a TOML grid of runs, expanded and trained group by group into the results store.

A sweep file names the grid with plural keys (`models`, `widths`, `depths`, `trainable`, `seeds`)
and may set any run field (`preset`, `max_epochs`, `dataset`, `subset`, `lr`, ...) as a scalar.
Every key can be overridden on the command line with `--set key=value` (value in TOML syntax).
Re-launching a sweep skips the runs the store already holds, so an interrupted sweep resumes.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from tqdm.auto import tqdm

from . import cluster
from .config import DEFAULT_PRESET, FIELD_TYPES, GRID_KEYS, ConfigError, RunConfig, load_toml, resolve
from .data import train_size
from .device import EngineOptions, describe_device
from .engine import batches_per_epoch
from .executors import Progress, SweepOptions, describe, duration, inline, pool
from .groups import estimate_seconds
from .leases import Leases, group_id
from .models import MODELS
from .sets import SETS
from .stacking import longest_first, plan_groups
from .store import Store


def _config_dir():
    """The shipped configs: the package data `bnonly.configs` of an install (a wheel's too); from a
    source tree on PYTHONPATH (no install), the repository's configs/ folder."""
    try:
        return resources.files("bnonly.configs")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "configs"


CONFIG_DIR = _config_dir()


def _skipped_without_norm(t: str, grid_sets: list[str]) -> bool:
    """With norm 'none': a set that needs a normalization layer has nothing to train, and a set that
    trains what a without-norm set in the grid trains (`all` next to `all-nobn`) is the same model."""
    s = SETS.get(t)
    if s is None:
        return False  # an unknown name: resolve() names it
    return s.needs_norm or any(SETS[o].without_norm and SETS[o].parts == s.parts
                               for o in grid_sets if o != t and o in SETS)


@dataclass
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
        if not isinstance(value, list) or not value or not all(isinstance(v, typ) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{source}: {key} must be a non-empty list of {typ.__name__}, got {value!r}")

    @classmethod
    def from_dict(cls, table: dict, source: str = "config") -> "SweepConfig":
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
        cfg.runs()  # validate every value now, naming the key
        return cfg

    def to_dict(self) -> dict:
        """The sweep as a TOML-like table (empty grid lists, which mean "the setting", left out)."""
        d = dataclasses.asdict(self)
        return {**{k: v for k, v in d.items() if k != "settings" and v != []}, **d["settings"]}

    def runs(self) -> list[RunConfig]:
        """The grid, in a stable order, without duplicates. LeNet-5 has no width/depth: it appears once
        per set x seed. Runs that would compute the same thing are one run: `all-nobn` is built
        without normalization whatever `norms` says, `random_allocations` only varies `random`, and
        with norm 'none' the sets that need a normalization layer (bn, bn+out, gamma, beta, random)
        are left out, and so is `all` when `all-nobn` (the same model) is in the grid."""
        out, seen = [], set()
        norms = self.norms or [self.settings.get("norm", "batchnorm")]
        allocations = self.random_allocations or [self.settings.get("random_allocation", "even")]
        datasets = self.datasets or [self.settings.get("dataset")]  # None: the preset's (mnist, or cifar10 for
        # Frankle's CIFAR models under preset "frankle")
        settings = {k: v for k, v in self.settings.items() if k not in ("norm", "random_allocation", "dataset")}
        for dataset, model in ((ds, m) for ds in datasets for m in self.models):
            sized = model in MODELS and MODELS[model].sized
            widths, depths = (self.widths, self.depths) if sized else ([None], [None])
            for norm in norms:
                for w in widths:
                    for d in depths:
                        for t in self.trainable:
                            if norm == "none" and _skipped_without_norm(t, self.trainable):
                                continue
                            varies_alloc = t in SETS and SETS[t].random_entries
                            for alloc in (allocations if varies_alloc else allocations[:1]):
                                for s in self.seeds:
                                    arch = {"model": model} | ({"width": w, "depth": d} if w is not None else {})
                                    cfg = resolve(self.preset, **settings, **arch, trainable=t, seed=s,
                                                  **({"dataset": dataset} if dataset else {}),
                                                  norm="none" if t in SETS and SETS[t].without_norm else norm,
                                                  random_allocation=alloc if varies_alloc else "even")
                                    if cfg.run_id not in seen:
                                        seen.add(cfg.run_id)
                                        out.append(cfg)
        return out


# The grid fields a sweep gives as lists only (their grid keys always apply): model, width, depth, trainable, seed.
LIST_ONLY = tuple(GRID_KEYS[f.name] for f in dataclasses.fields(SweepConfig) if f.name in GRID_KEYS and f.default_factory())


def parse_set(items: list[str]) -> dict:
    """`--set key=value` pairs; the value is TOML (`[10, 100]`, `"bn"`, `3`), or a bare word."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # a bare word, e.g. --set preset=frankle
        out[key] = value
    return out


def shipped_configs() -> list[str]:
    return sorted(p.name[:-5] for p in CONFIG_DIR.iterdir() if p.name.endswith(".toml"))


def load_sweep(spec: str | os.PathLike, overrides: list[str] | dict | None = None, source: str = "--set") -> SweepConfig:
    """A sweep from a shipped config name (`quick`, `report`, ...) or a TOML path, then overrides:
    `--set key=value` strings, or a dict of keys and values (the Python API's keywords)."""
    if not isinstance(spec, (str, os.PathLike)):
        raise ConfigError(f"sweep config {spec!r}: expected a shipped config's name or a .toml path")
    spec = os.fspath(spec)
    path = Path(spec)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{spec}.toml"
        if not path.is_file():
            raise ConfigError(f"no sweep config {spec!r} (shipped: {', '.join(shipped_configs())}; or give a .toml path)")
    elif path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a sweep config (.toml)")
    table = load_toml(path)
    table.setdefault("name", Path(path.name).stem)
    sets = dict(overrides) if isinstance(overrides, dict) else parse_set(overrides or [])
    SweepConfig.check_keys(sets, source)
    for key in GRID_KEYS.keys() & sets.keys():
        SweepConfig.check_grid(key, sets[key], source)
    table.update(sets)
    return SweepConfig.from_dict(table, source=str(path))



# ---------------------------------------------------------------------------- running
def run_sweep(sweep: SweepConfig, out_dir: str | Path, options: SweepOptions | None = None, quiet: bool = False) -> dict:
    """Train every run of the grid that the store in out_dir does not hold yet.

    The runs are planned into groups (stacking.plan_groups), claimed in the store one group at a
    time (leases.Leases: sweeps may share a store) and trained by the executor the options name:
    this process, `workers` processes, or a Ray cluster (cluster.py). Only this process writes the
    store, one transaction per finished group, so an interrupted sweep resumes where it stopped."""
    options = options or SweepOptions()
    device = options.resolved_device()
    cfgs = sweep.runs()  # every value checked before the store is opened or written
    store = Store(Path(out_dir) / "results.sqlite")
    store.set_meta("sweep", sweep.to_dict())
    ended = store.ended_ids()
    todo = [c for c in cfgs if c.run_id not in ended]
    log = (lambda *a: None) if quiet else (lambda msg: tqdm.write(msg, file=sys.stderr))
    threads = options.cpus_per_task if options.executor == "ray" else options.group_threads()
    groups = plan_groups(todo, EngineOptions.for_device("cpu" if device == "auto" else device), options.group_size, threads)
    if options.workers > 1 or options.executor == "ray":  # groups at once: start the long ones first
        groups = longest_first(groups)
    log(f"sweep {sweep.name}: {len(cfgs)} runs, {len(cfgs) - len(todo)} already in {store.path}, "
        f"{len(todo)} to train in {len(groups)} groups"
        + (f" on Ray (device {device}: " + ("resolved on the cluster)" if device == "auto" else "every task)")
           if options.executor == "ray" else f"; {describe_device(device, options.group_threads())}"
           + (f" per group, {options.workers} groups at a time" if options.workers > 1 else "")))
    if groups and options.estimate and not quiet and options.executor == "local":
        t0 = time.perf_counter()
        secs, shapes, left_out = estimate_seconds(groups, device, options.data_dir)
        stops = any(c.patience for g in groups for c in g)
        log(f"estimated compute on this machine: about {duration(secs)} if every run goes to its max_epochs ("
            + ("early stopping ends most runs sooner" if stops else "no early stopping here: every run does")
            + f"{f'; --workers {options.workers} share it' if options.workers > 1 else ''}); "
            f"measured on {shapes} group shapes in {time.perf_counter() - t0:.1f} s"
            + (f"; {left_out} group(s) could not be measured (their training will say why)" if left_out else ""))

    def steps_per_epoch(c):
        return batches_per_epoch(train_size(c.dataset, c.val_fraction, c.subset, options.data_dir), c.batch_size)

    progress = Progress(groups, steps_per_epoch, quiet)
    leases = Leases(store)
    work = leases.work(groups, progress)
    if options.executor == "ray":
        finished = cluster.ray_groups(work, device, options, progress)
    elif options.workers > 1:
        finished = pool(work, device, options, len(groups))
    else:
        finished = inline(work, device, options, progress)
    try:
        stats = _write_results(finished, store, progress, log, total=len(cfgs), skipped=len(cfgs) - len(todo),
                               release=lambda i: (leases.owner, group_id(groups[i])))
    finally:
        leases.close()
    stats["by_others"] = leases.by_others
    others = f", {leases.by_others} trained by another sweep on this store" if leases.by_others else ""
    log(f"sweep {sweep.name}: {stats['trained']} trained ({stats['failed']} failed), "
        f"{stats['skipped']} skipped{others}, {stats['seconds']:.1f} s -> {store.path}")
    return stats


def _write_results(finished, store: Store, progress: Progress, log, total: int, skipped: int, release) -> dict:
    """Store each group's rows as the executor yields them (one transaction per group); the stats."""
    t0 = time.perf_counter()
    stats = {"total": total, "skipped": skipped, "trained": 0, "failed": 0}
    nodes = Counter()
    try:
        for i, rows, node in finished:
            progress.done(i)
            store.write(rows, release=release(i))
            if node:
                nodes[node] += 1
            for r in rows:
                stats["trained"] += 1
                stats["failed"] += r["status"] == "failed"
                log(f"[{stats['skipped'] + stats['trained']}/{total}] {describe(r)}")
    finally:
        finished.close()  # stops a remote executor's outstanding work (Ctrl-C, errors)
        progress.close()
    stats["seconds"] = time.perf_counter() - t0
    if nodes:
        stats["nodes"] = dict(nodes)
        log("groups per node: " + ", ".join(f"{n}: {k}" for n, k in nodes.most_common()))
    return stats

"""Sweeps: a TOML grid of runs, expanded and trained group by group into the results store.

A sweep file names the grid with plural keys (`models`, `widths`, `depths`, `trainable`, `seeds`)
and may set any run field (`preset`, `max_epochs`, `dataset`, `subset`, `lr`, ...) as a scalar.
Every key can be overridden on the command line with `--set key=value` (value in TOML syntax).
Re-launching a sweep skips the runs the store already holds, so an interrupted sweep resumes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import multiprocessing as mp
import os
import signal
import socket
import sys
import threading
import time
import tomllib
import uuid
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from tqdm.auto import tqdm  # widgets in a notebook, text in a terminal

from . import cluster
from .config import DEFAULT_PRESET, FIELD_TYPES, GRID_FIELDS, ConfigError, RunConfig, load_toml, resolve
from .data import train_size
from .engine import Hooks, batches_per_epoch, describe_device, resolve_device
from .groups import estimate_seconds, longest_first, measured_stack_sizes, plan_groups, train_group
from .models import MODELS, arch_name
from .sets import SETS
from .store import Store



def _config_dir():
    """The shipped configs: the package data `bnonly.configs` of an install (a wheel's too); from a
    source tree on PYTHONPATH (no install), the repository's configs/ folder."""
    try:
        return resources.files("bnonly.configs")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "configs"


CONFIG_DIR = _config_dir()
GRID_KEYS = {"models": ("model", str), "widths": ("width", int), "depths": ("depth", int),
             "trainable": ("trainable", str), "seeds": ("seed", int), "norms": ("norm", str),
             "random_allocations": ("random_allocation", str), "datasets": ("dataset", str)}
assert {f for f, _ in GRID_KEYS.values()} == set(GRID_FIELDS)  # one list of the fields a grid varies


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
    norms: list = field(default_factory=list)                # empty: the `norm` setting (batchnorm)
    random_allocations: list = field(default_factory=list)   # empty: the `random_allocation` setting (even)
    datasets: list = field(default_factory=list)             # empty: the `dataset` setting (mnist)
    settings: dict = field(default_factory=dict)  # any other RunConfig field, as a scalar

    @staticmethod
    def check_keys(table: dict, source: str) -> None:
        """Every key is a grid key, name, preset or run setting; else one line naming the source."""
        for key in table:
            if key not in GRID_KEYS and key not in ("name", "preset") and (
                    key not in FIELD_TYPES or key in ("model", "width", "depth", "trainable", "seed")):
                raise ConfigError(f"{source}: unknown key {key!r} (grid keys: {', '.join(GRID_KEYS)}; "
                                  f"or any run setting such as max_epochs, dataset, subset)")

    @staticmethod
    def check_grid(key: str, value, source: str) -> None:
        _, typ = GRID_KEYS[key]
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


def load_sweep(spec: str, overrides: list[str] | dict | None = None, source: str = "--set") -> SweepConfig:
    """A sweep from a shipped config name (`quick`, `report`, ...) or a TOML path, then overrides:
    `--set key=value` strings, or a dict of keys and values (the Python API's keywords)."""
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
def duration(seconds: float) -> str:
    """'45 s', '12 min', '3.4 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _ignore_sigint():
    """Worker processes leave Ctrl-C to the parent, which stops the pool (no traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pool_job(args):
    return args[0], train_group(*args[1:])


def describe(row: dict) -> str:
    c = row["config"]
    arch = arch_name(c)
    if row["status"] == "failed":
        return f"{arch} {c['trainable']} seed {c['seed']}: FAILED ({row['error']})"
    return (f"{arch} {c['trainable']:8s} seed {c['seed']}: test {row['test_accuracy']:.4f} "
            f"({row['epochs_run']} epochs, {row['trainable_params']:,} trained, {row['seconds']:.1f} s, {row['status']})")


class Progress:
    """One bar over the whole sweep, in model-steps. Its total is an upper bound (every run going to
    max_epochs), lowered as models stop early, so the ETA shrinks towards the truth. Executors
    report per batch (inline), per epoch (Ray tasks) or per finished group (process pool)."""

    def __init__(self, groups, steps_per_epoch, quiet: bool):
        self.groups = groups
        self.n_batches = [steps_per_epoch(g[0]) for g in groups]
        self.bound = [sum(c.max_epochs for c in g) * n for g, n in zip(groups, self.n_batches)]
        self.shown = [0] * len(groups)     # steps counted for group i
        self.lowered = [0] * len(groups)   # steps group i will not take (early stops)
        self.active = [len(g) for g in groups]
        self.last_epoch = [0] * len(groups)
        self.bar = tqdm(total=sum(self.bound), unit="step", unit_scale=True, file=sys.stderr,
                        disable=quiet or None, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} model-steps [{elapsed}<{remaining} (at most)]")

    def _advance(self, i, n):
        n = max(0, min(n, self.bound[i] - self.lowered[i] - self.shown[i]))
        self.shown[i] += n
        self.bar.update(n)

    def batch(self, i, n_models):
        self._advance(i, n_models)

    def epoch(self, i, epoch, n_active, counted_batches=False):
        """Group i ended `epoch` with n_active models still training. An epoch seen before (a Ray
        task re-run after its worker died starts again from epoch 1) is ignored."""
        if epoch <= self.last_epoch[i]:
            return
        self.last_epoch[i] = epoch
        if not counted_batches:
            self._advance(i, self.active[i] * self.n_batches[i])
        saved = (self.active[i] - n_active) * (self.groups[i][0].max_epochs - epoch) * self.n_batches[i]
        self.lowered[i] += saved
        self.bar.total -= saved
        self.active[i] = n_active
        self.bar.refresh()

    def done(self, i):
        self._advance(i, self.bound[i])
        self.last_epoch[i] = math.inf  # late progress events of a finished group change nothing

    def close(self):
        self.bar.close()


# ---------------------------------------------------------------------------- sharing a store
# Several sweeps may run on one store (two terminals, two nodes): each claims a group in the store
# before it trains it, and keeps the claim alive with a heartbeat; a group whose claim is older than
# LEASE_STALE seconds belongs to a process that died and is taken over.
LEASE_HEARTBEAT = float(os.environ.get("BNONLY_LEASE_HEARTBEAT", 20))
LEASE_STALE = float(os.environ.get("BNONLY_LEASE_STALE", 120))


def group_id(group: list[RunConfig]) -> str:
    return hashlib.sha256(",".join(sorted(c.run_id for c in group)).encode()).hexdigest()[:16]


def owner_gone(owner: str) -> bool:
    """A lease owner is gone at once when it ran on this machine and its process no longer exists
    (a sweep killed here is resumed without waiting for its claims to go stale)."""
    host, pid, _ = owner.split(":")
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


class Leases:
    """This process's claims on groups of a store, kept alive by a background heartbeat."""

    def __init__(self, store: Store):
        self.store = store
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.by_others = 0
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._run, daemon=True)
        self._beat.start()

    def _run(self):
        while not self._stop.wait(LEASE_HEARTBEAT):
            try:
                self.store.heartbeat(self.owner)
            except Exception:  # noqa: BLE001 - a missed beat only risks a takeover, never a lost row
                pass

    def work(self, groups: list[list[RunConfig]], progress: "Progress"):
        """(index, group) for every group this process claims, lazily; a group another live process
        holds is looked at again later, and dropped once that process has written its runs."""
        pending = list(range(len(groups)))
        while pending:
            waiting = []
            for i in pending:
                if self._done(groups[i]):
                    self.by_others += len(groups[i])
                    progress.done(i)
                elif self.store.claim(group_id(groups[i]), self.owner, LEASE_STALE, gone=owner_gone):
                    if self._done(groups[i]):  # written (and released) between the look and the claim
                        self.store.release(self.owner, group_id(groups[i]))
                        self.by_others += len(groups[i])
                        progress.done(i)
                    else:
                        yield i, groups[i]
                else:
                    waiting.append(i)
            pending = waiting
            if pending:
                time.sleep(min(5.0, LEASE_HEARTBEAT))

    def _done(self, group) -> bool:
        done = self.store.ended_ids() | self.store.ids_since(self.started)
        return all(c.run_id in done for c in group)

    def close(self):
        self._stop.set()
        try:
            self.store.release(self.owner)
        except Exception:  # noqa: BLE001 - stale claims are taken over anyway
            pass


def _inline(work, device, data_dir, progress, threads):
    """The default executor: one group after another in this process."""
    for i, g in work:
        hooks = Hooks(batch=lambda e, b, n, m, i=i: progress.batch(i, m),
                      epoch=lambda e, n, i=i: progress.epoch(i, e, n, counted_batches=True))
        yield i, train_group(g, device, data_dir, hooks, threads), None


def group_threads(workers: int) -> int:
    """Torch threads per group when --threads is not given: the cores, divided among the workers."""
    return torch.get_num_threads() if workers <= 1 else max(1, (os.cpu_count() or 1) // workers)


def _pool(work, device, data_dir, workers, threads):
    """--workers N: groups in N spawned processes; only this process writes the store."""
    threads = threads or group_threads(workers)
    with mp.get_context("spawn").Pool(workers, initializer=_ignore_sigint) as pool:
        jobs = ((i, g, device, data_dir, None, threads) for i, g in work)
        for i, rows in pool.imap_unordered(_pool_job, jobs):
            yield i, rows, None


EXECUTORS = ("local", "ray")


def check_options(device, workers, threads, executor, address, cpus_per_task, gpus_per_task, group_size=32) -> str:
    """The executor's flags, checked before anything is written; returns the device to use."""
    for flag, value in (("--group-size", group_size), ("--workers", workers), ("--threads", threads),
                        ("--cpus-per-task", cpus_per_task)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{flag} {value!r}: expected an integer")
    if gpus_per_task is not None and (not isinstance(gpus_per_task, (int, float)) or isinstance(gpus_per_task, bool)):
        raise ConfigError(f"--gpus-per-task {gpus_per_task!r}: expected a number")
    if group_size < 1:
        raise ConfigError(f"--group-size {group_size}: must be >= 1")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: must be >= 1")
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    if threads < 0:
        raise ConfigError(f"--threads {threads}: must be >= 0 (0: all cores)")
    if executor == "ray":
        cluster.check_options(device, workers, threads, cpus_per_task, gpus_per_task, address)  # and the extra is installed
        return device  # 'auto' is resolved on the cluster
    given = [f for f, v in (("--address", address), ("--cpus-per-task", cpus_per_task != 1),
                            ("--gpus-per-task", gpus_per_task is not None)) if v]
    if given:
        raise ConfigError(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} for the Ray executor: add --executor ray")
    return resolve_device(device)  # no GPU for --device cuda: one line, not a store of failed runs


def run_sweep(sweep: SweepConfig, out_dir: str | Path, device: str = "auto", workers: int = 1,
              data_dir: str | None = None, quiet: bool = False, group_size: int = 32, threads: int = 0,
              executor: str = "local", address: str | None = None, cpus_per_task: int = 1,
              gpus_per_task: float | None = None, estimate: bool = True) -> dict:
    """Train every run of the grid that the store in out_dir does not hold yet.

    executor "local" trains groups in this process (or in `workers` processes); "ray" sends each
    group to a Ray cluster as one task (see cluster.py). Either way only this process writes the
    store, one transaction per finished group, so resume and skip-finished work the same."""
    device = check_options(device, workers, threads, executor, address, cpus_per_task, gpus_per_task, group_size)
    cfgs = sweep.runs()  # every value checked before the store is opened or written
    store = Store(Path(out_dir) / "results.sqlite")
    store.set_meta("sweep", sweep.to_dict())
    ended = store.ended_ids()
    todo = [c for c in cfgs if c.run_id not in ended]
    log = (lambda *a: None) if quiet else (lambda msg: tqdm.write(msg, file=sys.stderr))
    # Where stacking may lose on this CPU, the stack sizes measured on it. The store keeps them and the
    # first measurement of each stack wins, so every sweep of the store plans the same groups. Ray
    # plans by the cap: its tasks run on other machines ('auto' is planned as a CPU).
    sizes = None
    if executor == "local":
        known = store.meta().get("stack_sizes", {})
        measured = measured_stack_sizes(todo, device, data_dir, group_size, threads or group_threads(workers), known, log)
        sizes = store.add_meta("stack_sizes", measured) if measured != known else known
    groups = plan_groups(todo, group_size, device, sizes)
    if workers > 1 or executor == "ray":  # groups at once: start the long ones first
        groups = longest_first(groups)
    log(f"sweep {sweep.name}: {len(cfgs)} runs, {len(cfgs) - len(todo)} already in {store.path}, "
        f"{len(todo)} to train in {len(groups)} groups"
        + (f" on Ray (device {device}: " + ("resolved on the cluster)" if device == "auto" else "every task)")
           if executor == "ray" else f"; {describe_device(device, threads or group_threads(workers))}"
           + (f" per group, {workers} groups at a time" if workers > 1 else "")))
    if groups and estimate and not quiet and executor == "local":
        t0 = time.perf_counter()
        secs, shapes, left_out = estimate_seconds(groups, device, data_dir)
        stops = any(c.patience for g in groups for c in g)
        log(f"estimated compute on this machine: about {duration(secs)} if every run goes to its max_epochs ("
            + ("early stopping ends most runs sooner" if stops else "no early stopping here: every run does")
            + f"{f'; --workers {workers} share it' if workers > 1 else ''}); "
            f"calibrated on {shapes} group shapes in {time.perf_counter() - t0:.1f} s"
            + (f"; {left_out} group(s) could not be calibrated (their training will say why)" if left_out else ""))

    def steps_per_epoch(c):
        return batches_per_epoch(train_size(c.dataset, c.val_fraction, c.subset, data_dir), c.batch_size)

    progress = Progress(groups, steps_per_epoch, quiet)
    leases = Leases(store)
    work = leases.work(groups, progress)
    if executor == "ray":
        finished = cluster.ray_groups(work, device, data_dir, progress, address=address,
                                      cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task)
    elif workers > 1:
        finished = _pool(work, device, data_dir, workers, threads)
    else:
        finished = _inline(work, device, data_dir, progress, threads)
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

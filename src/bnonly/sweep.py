"""Sweeps: a TOML grid of runs, expanded and trained group by group into the results store.

A sweep file names the grid with plural keys (`models`, `widths`, `depths`, `trainable`, `seeds`)
and may set any run field (`preset`, `max_epochs`, `dataset`, `subset`, `lr`, ...) as a scalar.
Every key can be overridden on the command line with `--set key=value` (value in TOML syntax).
Re-launching a sweep skips the runs the store already holds, so an interrupted sweep resumes.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .config import DEFAULT_PRESET, FIELD_TYPES, ConfigError, RunConfig, resolve

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
GRID_KEYS = {"models": ("model", str), "widths": ("width", int), "depths": ("depth", int),
             "trainable": ("trainable", str), "seeds": ("seed", int), "norms": ("norm", str),
             "random_allocations": ("random_allocation", str), "datasets": ("dataset", str)}
NEEDS_NORM = ("bn", "bn+out", "gamma", "beta", "random")


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

    @classmethod
    def from_dict(cls, table: dict, source: str = "config") -> "SweepConfig":
        kw, settings = {}, {}
        for key, value in table.items():
            if key in GRID_KEYS:
                _, typ = GRID_KEYS[key]
                if not isinstance(value, list) or not value or not all(isinstance(v, typ) and not isinstance(v, bool) for v in value):
                    raise ConfigError(f"{source}: {key} must be a non-empty list of {typ.__name__}, got {value!r}")
                kw[key] = value
            elif key in ("name", "preset"):
                if not isinstance(value, str):
                    raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
                kw[key] = value
            elif key in FIELD_TYPES and key not in ("model", "width", "depth", "trainable", "seed"):
                settings[key] = value
            else:
                raise ConfigError(f"{source}: unknown key {key!r} (grid keys: {', '.join(GRID_KEYS)}; "
                                  f"or any run setting such as max_epochs, dataset, subset)")
        cfg = cls(**kw, settings=settings)
        cfg.runs()  # validate every value now, naming the key
        return cfg

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {**{k: v for k, v in d.items() if k != "settings"}, **d["settings"]}

    def runs(self) -> list[RunConfig]:
        """The grid, in a stable order, without duplicates. LeNet-5 has no width/depth: it appears once
        per set x seed. Runs that would compute the same thing are one run: `all-nobn` is built
        without normalization whatever `norms` says, `random_allocations` only varies `random`, and
        with norm 'none' the sets that need a normalization layer (bn, bn+out, gamma, beta, random)
        are left out, and so is `all` when `all-nobn` (the same model) is in the grid."""
        out, seen = [], set()
        norms = self.norms or [self.settings.get("norm", "batchnorm")]
        allocations = self.random_allocations or [self.settings.get("random_allocation", "even")]
        datasets = self.datasets or [self.settings.get("dataset", "mnist")]
        settings = {k: v for k, v in self.settings.items() if k not in ("norm", "random_allocation", "dataset")}
        for dataset, model in ((ds, m) for ds in datasets for m in self.models):
            widths, depths = (self.widths, self.depths) if model == "mlp" else ([None], [None])
            for norm in norms:
                for w in widths:
                    for d in depths:
                        for t in self.trainable:
                            if norm == "none" and (t in NEEDS_NORM or (t == "all" and "all-nobn" in self.trainable)):
                                continue  # nothing to normalize; `all` without a norm layer is `all-nobn`
                            for alloc in (allocations if t == "random" else allocations[:1]):
                                for s in self.seeds:
                                    arch = {"model": model} | ({"width": w, "depth": d} if w is not None else {})
                                    cfg = resolve(self.preset, **settings, **arch, trainable=t, seed=s, dataset=dataset,
                                                  norm="none" if t == "all-nobn" else norm,
                                                  random_allocation=alloc if t == "random" else "even")
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


def load_sweep(spec: str, overrides: list[str] | None = None) -> SweepConfig:
    """A sweep from a shipped config name (`quick`, `report`, ...) or a TOML path, then --set overrides."""
    path = Path(spec)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{spec}.toml"
        if not path.exists():
            shipped = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
            raise ConfigError(f"no sweep config {spec!r} (shipped: {shipped}; or give a .toml path)")
    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    table.setdefault("name", path.stem)
    table.update(parse_set(overrides or []))
    return SweepConfig.from_dict(table, source=str(path))


# ---------------------------------------------------------------------------- running
TRAINED_WEIGHTS_PER_STACK = 4_000_000  # ~16 MB of trained weights (plus gradients and momentum)


def stack_limit(cfg: RunConfig, max_group: int = 32) -> int:
    """How many runs like cfg to train as one stack. Stacks that train hidden weights are capped
    so their weights, gradients and momentum stay cache-sized: past that, a bigger stack only adds
    memory traffic (measured: 12 stacked 784x2 `all` models train 0.8x as fast as one at a time)."""
    from .engine import stack_key
    from .models import build
    if not stack_key(cfg)[1]:
        return max_group
    weights = sum(b.op.weight.numel() for b in build(cfg).blocks)
    return max(1, min(max_group, TRAINED_WEIGHTS_PER_STACK // weights))


def plan_groups(cfgs: list[RunConfig], max_group: int = 32) -> list[list[RunConfig]]:
    """Runs that can train as one stack, in grid order, at most `stack_limit` models each."""
    from .engine import stack_key
    groups: dict[tuple, list[RunConfig]] = {}
    for c in cfgs:
        groups.setdefault(stack_key(c), []).append(c)
    out = []
    for g in groups.values():
        n = stack_limit(g[0], max_group)
        out += [g[i:i + n] for i in range(0, len(g), n)]
    return out


def _train_group(group, device, data_dir, hooks=None, threads=0) -> list[dict]:
    """Train one group (inline, in a worker process or in a Ray task) into summary rows. A crash,
    or a run the engine refuses (ConfigError, e.g. an impossible random allocation), is recorded as
    `failed` rows with the error (tried again on re-launch) instead of ending the sweep; a data
    error ends it with its one-line message, since every group would hit it."""
    import torch

    from .data import DataError
    from .engine import train
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return [{**r.summary(), "artefact": r.artefact} for r in train(group, device=device, data_dir=data_dir, hooks=hooks)]
    except DataError:
        raise
    except Exception as e:
        return failed_rows(group, f"{type(e).__name__}: {e}")
    finally:
        torch.set_num_threads(before)


def failed_rows(group, error: str) -> list[dict]:
    return [{"run_id": c.run_id, "status": "failed", "error": error, "config": c.__dict__.copy()} for c in group]


def _pool_job(args):
    return args[0], _train_group(*args[1:])


def describe(row: dict) -> str:
    c = row["config"]
    arch = f"mlp {c['width']}x{c['depth']}" if c["model"] == "mlp" else c["model"]
    if row["status"] == "failed":
        return f"{arch} {c['trainable']} seed {c['seed']}: FAILED ({row['error']})"
    return (f"{arch} {c['trainable']:8s} seed {c['seed']}: test {row['test_accuracy']:.4f} "
            f"({row['epochs_run']} epochs, {row['trainable_params']:,} trained, {row['seconds']:.1f} s, {row['status']})")


class Progress:
    """One bar over the whole sweep, in model-steps. Its total is an upper bound (every run going to
    max_epochs), lowered as models stop early, so the ETA shrinks towards the truth. Executors
    report per batch (inline), per epoch (Ray tasks) or per finished group (process pool)."""

    def __init__(self, groups, steps_per_epoch, quiet: bool):
        from tqdm import tqdm
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


def _inline(groups, device, data_dir, progress, threads):
    """The default executor: one group after another in this process."""
    from .engine import Hooks
    for i, g in enumerate(groups):
        hooks = Hooks(batch=lambda e, b, n, m, i=i: progress.batch(i, m),
                      epoch=lambda e, n, i=i: progress.epoch(i, e, n, counted_batches=True))
        yield i, _train_group(g, device, data_dir, hooks, threads), None


def _pool(groups, device, data_dir, workers, threads):
    """--workers N: groups in N spawned processes; only this process writes the store."""
    import multiprocessing as mp
    import os
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    with mp.get_context("spawn").Pool(workers) as pool:
        jobs = [(i, g, device, data_dir, None, threads) for i, g in enumerate(groups)]
        for i, rows in pool.imap_unordered(_pool_job, jobs):
            yield i, rows, None


EXECUTORS = ("local", "ray")


def run_sweep(sweep: SweepConfig, out_dir: str | Path, device: str = "cpu", workers: int = 1,
              data_dir: str | None = None, quiet: bool = False, group_size: int = 32, threads: int = 0,
              executor: str = "local", address: str | None = None, cpus_per_task: int = 1,
              gpus_per_task: float | None = None) -> dict:
    """Train every run of the grid that the store in out_dir does not hold yet.

    executor "local" trains groups in this process (or in `workers` processes); "ray" sends each
    group to a Ray cluster as one task (see cluster.py). Either way only this process writes the
    store, one transaction per finished group, so resume and skip-finished work the same."""
    from collections import Counter

    from tqdm import tqdm

    from .data import train_size
    from .engine import batches_per_epoch
    from .store import Store

    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    if threads < 0:
        raise ConfigError(f"--threads {threads}: must be >= 0 (0: all cores)")
    if executor == "ray":
        from .cluster import check_options
        check_options(device, workers, threads, cpus_per_task, gpus_per_task, address)  # and the extra is installed
    else:
        given = [f for f, v in (("--address", address), ("--cpus-per-task", cpus_per_task != 1),
                                ("--gpus-per-task", gpus_per_task is not None)) if v]
        if given:
            raise ConfigError(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} for the Ray executor: add --executor ray")
        from .engine import resolve_device
        device = resolve_device(device)  # no GPU for --device cuda: one line, not a store of failed runs
    out_dir = Path(out_dir)
    store = Store(out_dir / "results.sqlite")
    store.set_meta("sweep", sweep.to_dict())
    cfgs = sweep.runs()
    ended = store.ended_ids()
    todo = [c for c in cfgs if c.run_id not in ended]
    groups = plan_groups(todo, group_size)
    log = (lambda *a: None) if quiet else (lambda msg: tqdm.write(msg, file=sys.stderr))
    log(f"sweep {sweep.name}: {len(cfgs)} runs, {len(cfgs) - len(todo)} already in {store.path}, "
        f"{len(todo)} to train in {len(groups)} groups" + (" on Ray" if executor == "ray" else ""))
    t0 = time.perf_counter()
    stats = {"total": len(cfgs), "skipped": len(cfgs) - len(todo), "trained": 0, "failed": 0}
    nodes = Counter()

    def steps_per_epoch(c):
        return batches_per_epoch(train_size(c.dataset, c.val_fraction, c.subset, data_dir), c.batch_size)

    progress = Progress(groups, steps_per_epoch, quiet)
    if executor == "ray":
        from .cluster import ray_groups
        finished = ray_groups(groups, device, data_dir, progress, address=address,
                              cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task)
    elif workers > 1:
        finished = _pool(groups, device, data_dir, workers, threads)
    else:
        finished = _inline(groups, device, data_dir, progress, threads)
    try:
        for i, rows, node in finished:
            progress.done(i)
            store.write(rows)
            if node:
                nodes[node] += 1
            for r in rows:
                stats["trained"] += 1
                stats["failed"] += r["status"] == "failed"
                log(f"[{stats['skipped'] + stats['trained']}/{len(cfgs)}] {describe(r)}")
    finally:
        finished.close()  # stops a remote executor's outstanding work (Ctrl-C, errors)
        progress.close()
    stats["seconds"] = time.perf_counter() - t0
    if nodes:
        stats["nodes"] = dict(nodes)
        log("groups per node: " + ", ".join(f"{n}: {k}" for n, k in nodes.most_common()))
    log(f"sweep {sweep.name}: {stats['trained']} trained ({stats['failed']} failed), "
        f"{stats['skipped']} skipped, {stats['seconds']:.1f} s -> {store.path}")
    return stats

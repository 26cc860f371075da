"""Running a sweep: the grid's runs that the store lacks, planned into groups, claimed, trained by
an executor and written to the store group by group, so that an interrupted sweep resumes where it
stopped. bnonly.sweep() (api.py) is the operation; this is its work.
"""
from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from ..config.grid import SweepConfig
from ..config.options import SweepOptions
from ..engine.device import EngineOptions, describe_device, device_name, resolve_device
from ..engine.loop import batches_per_epoch
from ..errors import ConfigError
from ..registry.data import train_size
from ..store import Store
from ..version import code_version, label
from . import ray
from .executors import Progress, describe, duration, group_threads, inline, pool
from .leases import Leases, group_id
from .plan import estimate_seconds, longest_first, plan_groups


def sweep_device(options: SweepOptions) -> str:
    """The device to train on, every flag checked against the executor (and Ray installed where it is
    asked for); 'auto' stays 'auto' for Ray, whose cluster decides."""
    if options.executor == "ray":
        ray.check_options(options)
        return options.device
    given = [f for f, v in (("--address", options.address), ("--cpus-per-task", options.cpus_per_task != 1),
                            ("--gpus-per-task", options.gpus_per_task is not None)) if v]
    if given:
        raise ConfigError(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} for the Ray executor: "
                          "add --executor ray")
    return resolve_device(options.device)  # no GPU for --device cuda: one line, not a store of failed runs


def environment() -> dict:
    """The BNONLY_* variables in effect: how groups stack and what they cache (engine/device.py), the
    leases' timing (leases.py), the data cache and a declared commit (version.py), recorded in the
    store's meta by every sweep."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("BNONLY_")}


def other_code(store: Store) -> str | None:
    """One line where the store holds runs of another code version than this one's; else None."""
    mine = label(code_version())
    others = Counter(label(r.get("versions")) for r in store.runs())
    others.pop(mine, None)
    if not others:
        return None
    return (f"note: {store.path} holds runs of other code versions (" + "; ".join(
        f"{v}: {n} run{'s' if n != 1 else ''}" for v, n in others.most_common()) + f"); this sweep adds runs of "
        f"{mine}, and the report lists the versions it mixes")


def run(sweep: SweepConfig, out_dir: str | Path, options: SweepOptions, quiet: bool = False) -> dict:
    """Train every run of the grid that the store in out_dir does not hold yet; returns the stats.

    The runs are planned into groups (plan.plan_groups), claimed in the store one group at a time
    (leases.Leases: sweeps may share a store) and trained by the executor the options name: this
    process, `workers` processes, or a Ray cluster (ray.py). Only this process writes the store,
    one transaction per finished group."""
    device = sweep_device(options)
    cfgs = sweep.runs()
    store = Store(Path(out_dir) / "results.sqlite")
    store.set_meta("sweep", sweep.to_dict())
    store.set_meta("environment", environment())
    ended = store.ended_ids()
    todo = [c for c in cfgs if c.run_id not in ended]
    log = (lambda *a: None) if quiet else (lambda msg: tqdm.write(msg, file=sys.stderr))
    threads = options.cpus_per_task if options.executor == "ray" else group_threads(options)
    groups = plan_groups(todo, EngineOptions.for_device("cpu" if device == "auto" else device), options.group_size,
                         threads)
    if options.workers > 1 or options.executor == "ray":  # groups at once: start the long ones first
        groups = longest_first(groups)
    log(f"sweep {sweep.name}: {len(cfgs)} runs, {len(cfgs) - len(todo)} already in {store.path}, "
        f"{len(todo)} to train in {len(groups)} group{'s' if len(groups) != 1 else ''}"
        + (f" on Ray (device {device}: " + ("resolved on the cluster)" if device == "auto" else "every task)")
           if options.executor == "ray" else f"; {describe_device(device, group_threads(options))}"
           + (f" per group, {options.workers} groups at a time" if options.workers > 1 else "")))
    if todo and (note := other_code(store)):
        log(note)
    if environment():
        log("environment (recorded with the sweep): " + ", ".join(f"{k}={v}" for k, v in environment().items()))
    if groups and options.estimate and not quiet and options.executor == "local":
        t0 = time.perf_counter()
        secs, shapes, left_out = estimate_seconds(groups, device, options.data_dir)
        stops = any(c.patience for g in groups for c in g)
        log(f"estimated compute on this machine: about {duration(secs)} if every run goes to its max_epochs ("
            + ("early stopping ends most runs sooner" if stops else "no early stopping here: every run does")
            + f"{f'; --workers {options.workers} share it' if options.workers > 1 else ''}); "
            f"measured on {shapes} group shape{'s' if shapes != 1 else ''} in {time.perf_counter() - t0:.1f} s"
            + (f"; {left_out} group(s) could not be measured (their training will say why)" if left_out else ""))
        store.set_meta("estimate", {"seconds": secs, "runs": len(todo), "device": device,
                                    "machine": device_name(device), "threads": group_threads(options),
                                    "workers": options.workers, "groups_left_out": left_out,
                                    "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def steps_per_epoch(c):
        return batches_per_epoch(train_size(c.dataset, c.val_fraction, c.subset, options.data_dir), c.batch_size)

    progress = Progress(groups, steps_per_epoch, quiet)
    leases = Leases(store)
    work = leases.work(groups, progress)
    if options.executor == "ray":
        finished = ray.ray_groups(work, device, options, progress)
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


def stamped(row: dict) -> dict:
    """A row as the sweep stores it: the machine it ran on (the worker's) and the code of this sweep
    (the driver's: a Ray worker's own copy need not know its commit); a worker whose code differs
    keeps its hash as `worker_code`."""
    mine, got = code_version(), dict(row.get("versions") or {})
    if got.get("code") and got["code"] != mine["code"]:
        got["worker_code"] = got["code"]
    return {**row, "versions": {**got, **mine}}


def _write_results(finished, store: Store, progress: Progress, log, total: int, skipped: int, release) -> dict:
    """Store each group's rows as the executor yields them (one transaction per group); the stats."""
    t0 = time.perf_counter()
    stats = {"total": total, "skipped": skipped, "trained": 0, "failed": 0}
    nodes = Counter()
    try:
        for i, rows, node in finished:
            progress.done(i)
            store.write([stamped(r) for r in rows], release=release(i))
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

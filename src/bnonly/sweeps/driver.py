"""A sweep, top to bottom: the grid's runs that the store lacks, planned into groups, claimed, trained
by an executor and written to the store group by group, so that an interrupted sweep resumes where
it stopped. bnonly.sweep() (api.py) is the operation; run() is its work, in the order it happens.
"""
from __future__ import annotations

import os
import shlex
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from ..config.layers import SweepConfig
from ..config.options import SweepOptions, duration_seconds
from ..engine.checkpoint import SIGNALLED, Checkpoints, runs_of
from ..files import alive
from ..engine.device import EngineOptions, describe_device, device_name, machine, resolve_device
from ..engine.loop import batches_per_epoch, refuse_on_device
from ..errors import ConfigError
from ..registry.data import data_mismatch, expected_train_size
from ..store import ENDED, Store
from ..version import code_version, label
from . import ray
from .executors import STOPPED, Progress, describe, duration, group_threads, inline, pool
from .leases import Leases, seconds_from, timing
from .grouping import estimate_seconds, group_shape, longest_first, plan_groups


def run(sweep: SweepConfig, out_dir: str | Path, options: SweepOptions, quiet: bool = False) -> dict:
    """Train every run of the grid that the store in out_dir does not hold yet; returns the stats.
    Only this process writes the store, one transaction per finished group; sweeps may share a store
    (each claims a group before it trains it)."""
    log = (lambda *a: None) if quiet else (lambda msg: tqdm.write(msg, file=sys.stderr))
    checkpoints = checkpointing(out_dir, options)  # (the --stop-after clock starts here)
    device = sweep_device(options)
    timing()  # the leases' timing from the environment, checked before anything is said or written
    runs = sweep.runs()
    if device != "auto":
        refuse_on_device(runs, device)  # before a store is written or any group fails for it
    for c in {(c.dataset, c.val_fraction, c.subset): c for c in runs}.values():  # a split too small, a subset too large
        expected_train_size(c.dataset, c.val_fraction, c.subset, options.data_dir)  # (DataError before the store)
    store = Store(Path(out_dir) / "results.sqlite")
    env = environment()
    leases = Leases(store)
    todo = leases.missing(runs)
    same_data(store, leases.ended_rows, {c.run_id for c in runs}, options.data_dir)  # before anything is written
    store.set_meta("sweep", sweep.to_dict())
    store.set_meta("environment", env)
    groups = grouped(todo, device, options)
    log(plan_line(sweep, runs, todo, groups, store, device, options))
    for note in notes(store, todo, env):
        log(note)
    if checkpoints is not None and (unused := unplanned(checkpoints, groups, leases.ended)):
        log(f"note: {unused} checkpoint(s) in {checkpoints.directory} hold groups this plan does not make (planned "
            "with other --workers, --threads or --group-size?): they stay, unused, and those runs start from epoch 0")
    timed = None
    if groups and options.estimate and not quiet and options.executor == "local":
        line, timed = estimate(groups, device, options, store)
        log(line)

    progress = Progress(groups, lambda c: batches_per_epoch(expected_train_size(
        c.dataset, c.val_fraction, c.subset, options.data_dir), c.batch_size), quiet, timed,
        max(1, min(options.workers, len(groups))))
    stats = {"total": len(runs), "skipped": len(runs) - len(todo), "trained": 0, "failed": 0, "refused": 0}
    nodes, t0 = Counter(), time.perf_counter()
    stats["stopped"] = 0
    with leases, stop_signals(checkpoints, log):
        work = leases.work(groups, progress, stop=checkpoints.stopping if checkpoints else None)
        finished = executor(options)(work, device, options, progress, checkpoints)
        try:
            for i, rows, node in finished:
                progress.done(i, [epochs_here(r) for r in rows])
                stopped = [r for r in rows if r["status"] == STOPPED]
                rows = [r for r in rows if r["status"] != STOPPED]
                store.write([stamped(r) for r in rows], owner=leases.owner)
                if stopped:
                    store.release(leases.owner, [r["run_id"] for r in stopped])
                    stats["stopped"] += len(stopped)
                elif checkpoints is not None and all(r["status"] in ENDED for r in rows):  # stored: done with
                    checkpoints.path([r["run_id"] for r in rows]).unlink(missing_ok=True)  # (a failed group's stays)
                nodes[node] += bool(node)
                for r in stopped:
                    log(describe(r))
                for r in rows:
                    stats["trained"] += 1
                    stats["failed"] += r["status"] == "failed"
                    stats["refused"] += r["status"] == "failed" and str(r.get("error")).startswith("ConfigError")
                    log(f"[{stats['skipped'] + stats['trained']}/{len(runs)}] {describe(r)}")
                if rows and not quiet and (left := progress.left_text()):
                    log(f"  {left}")
            halted = checkpoints is not None and checkpoints.stopping()  # (a signal's flag is reset on leaving)
        finally:
            finished.close()  # stops a remote executor's outstanding work (Ctrl-C, errors)
            progress.close()
    stats.update(seconds=time.perf_counter() - t0, by_others=leases.by_others)
    if +nodes:
        stats["nodes"] = dict(+nodes)
        log("groups per node: " + ", ".join(f"{n}: {k}" for n, k in (+nodes).most_common()))
    others = f", {leases.by_others} trained by another sweep on this store" if leases.by_others else ""
    log(f"sweep {sweep.name}: {stats['trained']} trained ({stats['failed']} failed), "
        f"{stats['skipped']} skipped{others}, {stats['seconds']:.1f} s -> {store.path}")
    store.append_meta("sweeps", sweep_part(stats, device, options, time.time() - stats["seconds"]))
    if halted:
        left = len(runs) - len({c.run_id for c in runs} & store.ended_ids())
        why = "--stop-after" if checkpoints.deadline and time.time() >= checkpoints.deadline else "a signal"
        stats["left"] = left
        log(f"stopped on time ({why}): {left} of {len(runs)} runs left, {stats['stopped']} of them checkpointed "
            f"mid-training in {checkpoints.directory}; go on with: {go_on()}")
    elif checkpoints is not None:
        clear_checkpoints(checkpoints, store)
    return stats


# ----------------------------------------------------------------------------- its steps
def checkpointing(out_dir, options: SweepOptions) -> Checkpoints | None:
    """Where the local executors keep their groups' checkpoints (OUT/checkpoints, saved at an epoch's
    end at most every BNONLY_CHECKPOINT_SECONDS, 120) and when they stop (--stop-after, a stop file
    that a signal writes). Ray's tasks do not checkpoint (Ray retries them), so it refuses --stop-after."""
    if options.executor == "ray":
        if options.stop_after is not None:
            raise ConfigError("--stop-after is for the local executors (a Ray task is retried by Ray, not resumed)")
        return None
    deadline = None if options.stop_after is None else time.time() + duration_seconds(options.stop_after)
    stop = f".stop-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # (never another sweep's)
    return Checkpoints(Path(out_dir) / "checkpoints", every=seconds_from("BNONLY_CHECKPOINT_SECONDS", 120.0, zero=True),
                       deadline=deadline, stop_file=Path(out_dir) / "checkpoints" / stop)


@contextmanager
def stop_signals(checkpoints: Checkpoints | None, log):
    """While the sweep trains: SIGTERM or a first Ctrl-C make every group in progress save its
    checkpoint at its epoch's end and the sweep stop (exit 0); a second Ctrl-C stops at once (130).
    Without checkpoints (Ray), SIGTERM stops at once as Ctrl-C does. Only in the main thread (where
    Python delivers signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if checkpoints is None:  # Ray: SIGTERM cancels the tasks as Ctrl-C does (not a C-level dump of a killed driver)
        def interrupt(signum, frame):
            raise KeyboardInterrupt
        before = signal.signal(signal.SIGTERM, interrupt)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, before)
        return
    asked = {"n": 0}

    def stop(signum, frame):
        asked["n"] += 1
        if asked["n"] > 1 and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if asked["n"] == 1:
            SIGNALLED["stop"] = True
            try:
                checkpoints.stop_file.parent.mkdir(parents=True, exist_ok=True)
                checkpoints.stop_file.touch()  # the worker processes' signal
            except OSError:  # (they still stop at SIGTERM where it reaches them, or at --stop-after)
                pass
            log("stopping: every group in progress saves its checkpoint at its epoch's end (Ctrl-C again stops at once)")
    before = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        SIGNALLED["stop"] = False
        try:
            checkpoints.stop_file.unlink(missing_ok=True)
        except OSError:
            pass


def sweep_part(stats: dict, device: str, options: SweepOptions, started: float) -> dict:
    """This sweep's part, as the store's meta 'sweeps' records it: a study computed over several
    allocations says when, where, with which code and for how long each part ran."""
    facts = {k: v for k, v in machine(device).items() if k in ("device_name", "cpu_family", "cpu_model", "cpu_capability")}
    return {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)) + "Z",
            "wall_seconds": round(stats["seconds"], 1), "code": label(code_version()), "machine": facts,
            "workers": options.workers, "threads": group_threads(options),
            **{k: stats.get(k, 0) for k in ("trained", "failed", "stopped", "by_others")}}


def go_on() -> str:
    """The command that continues a stopped sweep: this one (the same flags resume where it stopped)."""
    if Path(sys.argv[0]).name in ("bnonly", "__main__.py"):
        return "bnonly " + shlex.join(sys.argv[1:])
    return "the same sweep (bnonly.sweep with the same arguments)"


def unplanned(checkpoints: Checkpoints, groups: list, ended: set) -> int:
    """How many checkpoints of unfinished runs name no group of this plan (so none will resume them)."""
    planned = {checkpoints.path([c.run_id for c in g]).name for g in groups}
    return sum(p.name not in planned and not set(runs_of(p) or []) <= ended
               for p in Path(checkpoints.directory).glob("*.ckpt"))


def clear_checkpoints(checkpoints: Checkpoints, store: Store) -> None:
    """Checkpoints whose runs are all stored (a group planned otherwise by an earlier sweep) removed,
    and the temporary files of saves that a killed process of this machine left (the rows alone say
    which runs are stored: no model is read)."""
    done = {r["run_id"] for r in store.runs(status=ENDED)}
    for path in Path(checkpoints.directory).glob("*.ckpt"):
        runs = runs_of(path)
        if runs is not None and set(runs) <= done:
            path.unlink(missing_ok=True)
    for tmp in Path(checkpoints.directory).glob(".*.ckpt.*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not alive(int(pid)):
            tmp.unlink(missing_ok=True)


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


def same_data(store: Store, ended: list[dict], grid: set[str], data_dir) -> None:
    """A store reused with other data is refused: where the grid's stored runs were trained on other
    images than data_dir's (their fingerprints, registry.data.fingerprint), skipping them would mix
    two data sets under one name; one line naming both."""
    stored = [r for r in ended if r["run_id"] in grid]
    for dataset in sorted({r["dataset"] for r in stored}):
        other = Counter(r["versions"]["data"] for r in stored if r["dataset"] == dataset
                        and data_mismatch(dataset, (r.get("versions") or {}).get("data"), data_dir))
        if other:
            theirs = ", ".join(f"{k} ({n} run{'s' if n != 1 else ''})" for k, n in other.most_common())
            raise ConfigError(f"{store.path}: this grid's {dataset} runs there were trained on "
                              f"{data_mismatch(dataset, theirs, data_dir)}: pass the --data-dir they were trained "
                              "with, or use another --out")


def grouped(todo: list, device: str, options: SweepOptions) -> list[list]:
    """The runs as groups that train as one stack each (grouping.plan_groups); where groups run at once
    (workers, Ray), the long ones first."""
    threads = options.cpus_per_task if options.executor == "ray" else group_threads(options)
    groups = plan_groups(todo, EngineOptions.for_device("cpu" if device == "auto" else device), options.group_size,
                         threads)
    return longest_first(groups) if options.workers > 1 or options.executor == "ray" else groups


def plan_line(sweep, runs, todo, groups, store, device: str, options: SweepOptions) -> str:
    where = (f" on Ray (device {device}: " + ("resolved on the cluster)" if device == "auto" else "every task)")
             if options.executor == "ray" else f"; {describe_device(device, group_threads(options))}"
             + (f" per group, {options.workers} groups at a time" if options.workers > 1 else ""))
    return (f"sweep {sweep.name}: {len(runs)} runs, {len(runs) - len(todo)} already in {store.path}, {len(todo)} to "
            f"train in {len(groups)} group{'s' if len(groups) != 1 else ''}" + where)


def notes(store: Store, todo: list, env: dict) -> list[str]:
    """What the sweep should say before it trains: the runs of other code versions the store holds,
    and the environment (environment()) that changes how it runs."""
    out = []
    if todo and (note := other_code(store)):
        out.append(note)
    if env:
        out.append("environment (recorded with the sweep): " + ", ".join(f"{k}={v}" for k, v in env.items()))
    return out


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


def epochs_here(row: dict) -> int | None:
    """The epochs a group's row trained in this sweep (the time left counts this sweep's pace): its
    epochs less those of earlier parts where it resumed, none where it failed; None where unknown (a
    group that stopped on time)."""
    if row["status"] == "failed":
        return 0
    if row["status"] == STOPPED or not isinstance(row.get("epochs_run"), int):
        return None
    parts = (row.get("versions") or {}).get("parts") or [{"from_epoch": 1}]
    return row["epochs_run"] - parts[-1]["from_epoch"] + 1


def estimate(groups, device: str, options: SweepOptions, store: Store) -> tuple[str, list]:
    """The compute the groups need here if every run goes to its max_epochs, from a few timed steps
    of each group shape not timed before on this machine (grouping.estimate_seconds; the timings are
    kept in the store's meta, so a resumed sweep trains nothing for its estimate): the line that says
    it, and each group's seconds per epoch (None where unmeasured) for the progress's time left."""
    t0 = time.perf_counter()
    here = f"{device_name(device)} ({device}, {group_threads(options)} threads)"
    timings = store.meta().get("timings")
    timings = timings if isinstance(timings, dict) else {}  # (a hand-edited meta is measured again)
    secs, shapes, left_out, timed = estimate_seconds(groups, device, options.data_dir, known=timings.get(here))
    stops = any(c.patience for g in groups for c in g)
    store.set_meta("timings", {**timings, here: timed})
    store.set_meta("estimate", {"seconds": secs, "runs": sum(len(g) for g in groups), "device": device,
                                "machine": device_name(device), "threads": group_threads(options),
                                "workers": options.workers, "groups_left_out": left_out,
                                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return (f"estimated compute on this machine: about {duration(secs)} if every run goes to its max_epochs ("
            + ("early stopping ends most runs sooner" if stops else "no early stopping here: every run does")
            + f"{f'; --workers {options.workers} share it' if options.workers > 1 else ''}); "
            + (f"measured on {shapes} group shape{'s' if shapes != 1 else ''} in {time.perf_counter() - t0:.1f} s"
               if shapes else "from this store's earlier measurement, nothing trained for it")
            + (f"; {left_out} group(s) could not be measured (their training will say why)" if left_out else ""),
            [(timed.get(group_shape(g)) or {}).get("epoch") for g in groups])


def executor(options: SweepOptions):
    """The function that trains claimed groups and yields (index, rows, node) as each finishes: Ray
    tasks, `workers` processes, or this process."""
    if options.executor == "ray":
        return ray.ray_groups
    return pool if options.workers > 1 else inline


def stamped(row: dict) -> dict:
    """A row as the sweep stores it: the machine it ran on (the worker's) and the code of this sweep
    (the driver's: a Ray worker's own copy need not know its commit); a worker whose code differs
    keeps its hash as `worker_code`."""
    mine, got = code_version(), dict(row.get("versions") or {})
    if got.get("code") and got["code"] != mine["code"]:
        got["worker_code"] = got["code"]
    return {**row, "versions": {**got, **mine}}

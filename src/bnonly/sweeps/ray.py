"""The Ray executor: `bnonly sweep CONFIG --executor ray [--address ADDR]`.

Each group that the batched engine trains at once (plan.plan_groups) becomes one Ray task asking
for `cpus_per_task` CPUs, and a GPU fraction when device is cuda, so several groups share a GPU.
Tasks return their rows to the driver, which alone writes the store (driver.py), so resume,
skip-finished and no-duplicate semantics are those of the local executor.

Failures: a task whose worker process or node dies is re-run by Ray elsewhere (up to MAX_RETRIES
times); nothing was written for it, so nothing is lost or duplicated. An error raised by the
training itself is not retried: its runs are recorded as `failed` with the error, like locally.
Ctrl-C cancels the outstanding tasks; the store holds every group that had finished.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading

from ..errors import ConfigError
from ..engine.loop import Hooks
from ..registry.data import DataError
from .executors import failed_rows, train_group

MAX_RETRIES = 3


def import_ray():
    """Ray is an optional extra: imported only when the Ray executor runs."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs the 'ray' extra: pip install 'bnonly[ray]'") from None
    return ray


def bnonly_group(group, device, data_dir, index, tracker, threads):
    """One group, run on a Ray worker: the rows and the id of the node that trained them."""
    import ray
    hooks = Hooks(epoch=lambda epoch, n_active: tracker.put.remote((index, epoch, n_active)))
    rows = train_group(group, device, data_dir, hooks, threads)
    return rows, f"{ray.util.get_node_ip_address()} ({ray.get_runtime_context().get_node_id()[:8]})"


class BnonlyProgress:
    """Collects per-epoch progress from the tasks; the driver takes it about once a second."""

    def __init__(self):
        self.events = []

    def put(self, event):
        self.events.append(event)

    def take(self):
        events, self.events = self.events, []
        return events


def check_options(options):
    """The Ray executor's flags (config/options.py), checked before anything is written; also
    that Ray is installed."""
    if options.workers > 1:
        raise ConfigError("--workers is for the local executor; with --executor ray use --cpus-per-task")
    if options.threads:
        raise ConfigError("--threads is for the local executor; "
                          "with --executor ray a task's threads are --cpus-per-task")
    if options.cpus_per_task < 1:
        raise ConfigError(f"--cpus-per-task {options.cpus_per_task}: must be >= 1")
    if options.gpus_per_task is not None:
        if not 0 < options.gpus_per_task <= 1:
            raise ConfigError(f"--gpus-per-task {options.gpus_per_task:g}: must be in (0, 1]")
        if options.device == "cpu":
            raise ConfigError("--gpus-per-task is for --device cuda (or auto)")
    import_ray()
    if options.address and ":" in options.address and "://" not in options.address:
        _reachable(options.address)


def _reachable(address: str):
    """HOST:PORT must answer within a few seconds (Ray itself keeps retrying for minutes)."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot reach a Ray head at {address} "
                          f"({e.strerror or e if isinstance(e, OSError) else 'expected HOST:PORT'}); "
                          "is `ray start --head` running there?") from None


def _connect(ray, address):
    if ray.is_initialized():  # a caller that connected itself keeps its connection
        return False
    kw = dict(address=address or "local", logging_level=logging.WARNING, log_to_driver=False)
    if address is None:  # a new Ray on this machine (its own CPU count), gone when the sweep ends
        kw.update(include_dashboard=False)
    before = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        ray.init(**kw)
    except (ConnectionError, RuntimeError, ValueError) as e:
        text = str(e).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        where = f"join the Ray cluster at {address}" if address else "start a local Ray"
        hint = (" (every node and this driver need the same RAY_AUTH_MODE, and with 'token' the same token)"
                if "auth" in text.lower() or "token" in text.lower() or "Failed to connect" in text else "")
        raise ConfigError(f"cannot {where}: {first}{hint}") from None
    if before is not None:
        # ray.init replaces SIGTERM's handler (a C-level stack dump, then an exit with status 1): the
        # sweep's own is put back (cancel the tasks, one line, exit 130, as Ctrl-C)
        signal.signal(signal.SIGTERM, before)
    return True


def _alive_resources(ray) -> list[dict]:
    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def _check_resources(ray, cpus_per_task, gpus_per_task):
    """A request no node can meet would leave tasks pending forever: say so instead."""
    nodes = _alive_resources(ray)
    if not any(r.get("CPU", 0) >= cpus_per_task and r.get("GPU", 0) >= gpus_per_task for r in nodes):
        have = ", ".join(f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in nodes)
        raise ConfigError(f"no node of the Ray cluster has {cpus_per_task} CPU and {gpus_per_task:g} GPU "
                          f"for a task (nodes: {have}); lower --cpus-per-task / --gpus-per-task")


def ray_groups(work, device, options, progress, checkpoints=None):
    """Run every group of `work` ((index, group) pairs that this driver has claimed) as a Ray task,
    as the SweepOptions say; yield (index, rows, node id) as each finishes."""
    ray = import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    work = list(work)
    if not work:
        return
    groups = dict(work)
    data_dir, address, cpus_per_task = options.data_dir, options.address, options.cpus_per_task
    if data_dir:  # Ray workers do not run in this directory
        data_dir = os.path.abspath(data_dir)
    connected_here = _connect(ray, address)
    pending = {}
    try:
        if device == "auto":  # the cluster decides: GPUs if any node has one, scheduled as shares
            device = "cuda" if any(r.get("GPU", 0) for r in _alive_resources(ray)) else "cpu"
        gpus = (0.25 if options.gpus_per_task is None else options.gpus_per_task) if device == "cuda" else 0
        _check_resources(ray, cpus_per_task, gpus)
        # a GPU task gets a fresh worker (Ray's own default for GPU tasks): a reused one would keep
        # the GPU it started on and its cached memory
        remote = ray.remote(max_calls=1)(bnonly_group) if gpus else ray.remote(bnonly_group)
        task = remote.options(num_cpus=cpus_per_task, num_gpus=gpus, max_retries=MAX_RETRIES, retry_exceptions=False)
        here = ray.get_runtime_context().get_node_id()  # progress lives and dies with the driver's node
        tracker = ray.remote(BnonlyProgress).options(
            num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()
        for i, g in work:
            pending[task.remote(g, device, data_dir, i, tracker, cpus_per_task)] = i
        while pending:
            done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=1.0, fetch_local=False)
            try:
                events = ray.get(tracker.take.remote()) if tracker else []
            except ray.exceptions.RayError:  # progress is lost, not the sweep
                tracker, events = None, []
            for event in events:
                progress.epoch(*event)
            for ref in done:
                i = pending.pop(ref)
                try:
                    rows, node = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # raised by our code on the worker
                    cause = getattr(e, "cause", None)
                    if isinstance(cause, DataError):
                        raise cause from None
                    rows, node = failed_rows(groups[i], f"{type(cause).__name__}: {cause}"), None
                except ray.exceptions.RayError as e:  # the worker or node died more than MAX_RETRIES times
                    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    rows, node = failed_rows(groups[i], f"{type(e).__name__} after {MAX_RETRIES} retries: {msg}"), None
                yield i, rows, node
    finally:
        try:
            for ref in pending:  # Ctrl-C or an error: nothing more runs for this sweep
                ray.cancel(ref, force=True)
        finally:
            if connected_here:
                ray.shutdown()

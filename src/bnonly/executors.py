"""How a sweep runs: its options, the local executors (this process, or worker processes) and the
progress bar. The Ray executor is cluster.py; sweep.run_sweep picks one.

An executor takes the groups this process has claimed, as (index, group) pairs, and yields
(index, rows, node) as each group finishes; only the sweep's own process writes the store.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import signal
import sys
from dataclasses import dataclass, field, fields

import torch
from tqdm.auto import tqdm  # widgets in a notebook, text in a terminal

from . import cluster
from .config import ConfigError
from .device import DEVICES, resolve_device
from .engine import Hooks
from .groups import train_group
from .models import arch_name

EXECUTORS = ("local", "ray")
RAY = "Ray executor (pip install 'bnonly[ray]')"  # the flags' group in --help


def _option(default, help: str, **more):
    return field(default=default, metadata={"help": help, **more})


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep runs; what it computes does not depend on these. Each field is a flag of `bnonly
    sweep` and `bnonly reproduce` (`--group-size`; `estimate` is `--no-estimate`) and a keyword of
    bnonly.sweep(), checked here before anything is trained or written."""
    device: str = _option("auto", f"where to train: {', '.join(DEVICES)} (auto: the GPU when PyTorch sees one, "
                                  "else the CPU)", choices=DEVICES)
    data_dir: str | None = _option(None, "your data: a directory of IDX files (mnist, fashion-mnist, idx) or "
                                         "cifar-10-batches-py (or its parent) for cifar10")
    workers: int = _option(1, "groups trained at once, in as many processes")
    group_size: int = _option(32, "at most this many runs trained at once as one vectorized model (1: one at a time)")
    threads: int = _option(0, "torch threads per group (0: the cores, divided among the workers)")
    estimate: bool = _option(True, "print the compute estimate, measured on a few steps of each group shape, "
                                   "before training")
    executor: str = _option("local", "local: this machine; ray: each group a Ray task (the store is still "
                                     "written by this process)", choices=EXECUTORS, group=RAY)
    address: str | None = _option(None, "the Ray cluster to join: 'auto' (the cluster of this node) or HOST:PORT "
                                        "(default: start a Ray on this machine)", group=RAY)
    cpus_per_task: int = _option(1, "CPUs (and torch threads) per Ray task", group=RAY)
    gpus_per_task: float | None = _option(None, "GPU share per Ray task with device cuda (default 0.25: four "
                                                "groups per GPU)", group=RAY)

    def __post_init__(self):
        for f in fields(self):
            value, flag, kind = getattr(self, f.name), "--" + f.name.replace("_", "-"), OPTION_TYPES[f.name]
            if value is None and f.default is None:
                continue
            if kind == "path":  # a str or os.PathLike, kept as a str (it travels to worker processes and Ray)
                if not isinstance(value, (str, os.PathLike)) or not os.fspath(value).strip():
                    raise ConfigError(f"{flag} {value!r}: expected a path")
                object.__setattr__(self, f.name, os.fspath(value))
            elif isinstance(value, bool) != (kind is bool) or not isinstance(value, (int, float) if kind is float else kind):
                raise ConfigError(f"{flag} {value!r}: expected {TYPE_WORDS[kind]}")
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise ConfigError(f"{flag} {value!r}: choose one of {', '.join(choices)}")
        for flag, value, least in (("--group-size", self.group_size, 1), ("--workers", self.workers, 1),
                                   ("--threads", self.threads, 0)):
            if not least <= value <= MOST_PROCESSES:  # torch crashes on far more threads than there are cores
                raise ConfigError(f"{flag} {value}: must be in [{least}, {MOST_PROCESSES}]")

    def resolved_device(self) -> str:
        """The device to train on, every flag checked against the executor (and Ray installed where
        it is asked for); 'auto' stays 'auto' for Ray, whose cluster decides."""
        if self.executor == "ray":
            cluster.check_options(self)
            return self.device
        given = [f for f, v in (("--address", self.address), ("--cpus-per-task", self.cpus_per_task != 1),
                                ("--gpus-per-task", self.gpus_per_task is not None)) if v]
        if given:
            raise ConfigError(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} for the Ray executor: "
                              "add --executor ray")
        return resolve_device(self.device)  # no GPU for --device cuda: one line, not a store of failed runs

    def group_threads(self) -> int:
        """Torch threads per group: --threads, or the cores divided among the workers."""
        if self.threads:
            return self.threads
        return torch.get_num_threads() if self.workers <= 1 else max(1, (os.cpu_count() or 1) // self.workers)


MOST_PROCESSES = 1024  # the largest --workers, --threads and --group-size taken

OPTION_TYPES = {"device": str, "data_dir": "path", "workers": int, "group_size": int, "threads": int, "estimate": bool,
                "executor": str, "address": str, "cpus_per_task": int, "gpus_per_task": float}
TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
assert set(OPTION_TYPES) == {f.name for f in fields(SweepOptions)}


def describe(row: dict) -> str:
    """A finished run's line in the sweep's log."""
    c = row["config"]
    arch = arch_name(c)
    if row["status"] == "failed":
        return f"{arch} {c['trainable']} seed {c['seed']}: FAILED ({row['error']})"
    return (f"{arch} {c['trainable']:8s} seed {c['seed']}: test {row['test_accuracy']:.4f} "
            f"({row['epochs_run']} epochs, {row['trainable_params']:,} trained, {row['seconds']:.1f} s, {row['status']})")


def duration(seconds: float) -> str:
    """'45 s', '12 min', '3.4 h'."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


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


def inline(work, device: str, options: SweepOptions, progress: Progress):
    """The default executor: one group after another in this process."""
    for i, g in work:
        hooks = Hooks(batch=lambda e, b, n, m, i=i: progress.batch(i, m),
                      epoch=lambda e, n, i=i: progress.epoch(i, e, n, counted_batches=True))
        yield i, train_group(g, device, options.data_dir, hooks, options.threads), None


def _ignore_sigint():
    """Worker processes leave Ctrl-C to the parent, which stops the pool (no traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pool_job(args):
    return args[0], train_group(*args[1:])


def pool(work, device: str, options: SweepOptions, n_groups: int):
    """--workers N: groups in N spawned processes (no more than there are groups)."""
    threads = options.group_threads()
    with mp.get_context("spawn").Pool(max(1, min(options.workers, n_groups)), initializer=_ignore_sigint) as workers:
        jobs = ((i, g, device, options.data_dir, None, threads) for i, g in work)
        for i, rows in workers.imap_unordered(_pool_job, jobs):
            yield i, rows, None

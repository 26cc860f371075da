"""The local executors (this process, or worker processes), training one group into rows (train_group,
also a Ray task's), the progress bar and the sweep's log lines. The Ray executor is ray.py; driver.py picks one.

An executor takes the groups this process has claimed, as (index, group) pairs, and yields
(index, rows, node) as each group finishes; only the sweep's own process writes the store.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import torch
from tqdm.auto import tqdm  # widgets in a notebook, text in a terminal

from ..config.options import SweepOptions
from ..config.run import RunConfig
from ..engine.checkpoint import Checkpoints, Stopped, stop_on_signals
from ..engine.loop import Hooks, train
from ..registry.data import DataError
from ..registry.models import arch_name


def train_group(group: list[RunConfig], device: str, data_dir, hooks: Hooks | None = None,
                threads: int = 0, checkpoints: Checkpoints | None = None) -> list[dict]:
    """Train one group (inline, in a worker process or in a Ray task) into summary rows. A crash,
    or a run the engine refuses (ConfigError, e.g. an impossible random allocation), is recorded as
    `failed` rows with the error (tried again on re-launch) instead of ending the sweep; a data
    error ends it with its one-line message, since every group would hit it. A group that stopped
    on time (`checkpoints`) gives `stopped` rows, which are not stored: its checkpoint goes on."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return [{**r.summary(), "artefact": r.artefact}
                for r in train(group, device=device, data_dir=data_dir, hooks=hooks, checkpoints=checkpoints)]
    except Stopped as e:
        return [{"run_id": c.run_id, "status": STOPPED, "epoch": e.epoch, "config": c.__dict__.copy()} for c in group]
    except DataError:
        raise
    except Exception as e:
        return failed_rows(group, f"{type(e).__name__}: {e}")
    finally:
        torch.set_num_threads(before)


STOPPED = "stopped"  # a group's rows when it stopped on time: never stored (its checkpoint holds its progress)


def failed_rows(group: list[RunConfig], error: str) -> list[dict]:
    return [{"run_id": c.run_id, "status": "failed", "error": error, "config": c.__dict__.copy()} for c in group]


def group_threads(options: SweepOptions) -> int:
    """Torch threads per group: --threads, or the cores divided among the workers."""
    if options.threads:
        return options.threads
    return torch.get_num_threads() if options.workers <= 1 else max(1, (os.cpu_count() or 1) // options.workers)


def describe(row: dict) -> str:
    """A finished run's line in the sweep's log."""
    c = row["config"]
    arch = arch_name(c)
    if row["status"] == "failed":
        return f"{arch} {c['trainable']} seed {c['seed']}: FAILED ({row['error']})"
    if row["status"] == STOPPED:
        return f"{arch} {c['trainable']} seed {c['seed']}: stopped after epoch {row['epoch']} (checkpointed)"
    return (f"{arch} {c['trainable']:8s} seed {c['seed']}: test {row['test_accuracy']:.4f} "
            f"({row['epochs_run']} epoch{'s' if row['epochs_run'] != 1 else ''}, {row['trainable_params']:,} trained, {row['seconds']:.1f} s, "
            f"{row['status']})")


def duration(seconds: float) -> str:
    """'45 s', '12 min', '3.4 h'."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class Progress:
    """One bar over the whole sweep, in model-steps. Its total is an upper bound (every run going to
    max_epochs), lowered as models stop early, so the ETA shrinks towards the truth. Executors
    report per batch (inline), per epoch (Ray tasks) or per finished group (process pool)."""

    def __init__(self, groups, steps_per_epoch, quiet: bool, epoch_seconds: list | None = None, workers: int = 1):
        self.groups = groups
        self.n_batches = [steps_per_epoch(g[0]) for g in groups]
        self.bound = [sum(c.max_epochs for c in g) * n for g, n in zip(groups, self.n_batches)]
        # what a model-step of each group costs, from the estimate's timing of its shape (seconds per
        # epoch of the group), so that the time left weighs a wide model's steps above a narrow one's
        per_step = [t / (len(g) * n) if t else None for t, g, n in
                    zip(epoch_seconds or [None] * len(groups), groups, self.n_batches)]
        known = [c for c in per_step if c]
        fill = sum(known) / len(known) if known else 1.0  # (an unmeasured group: the mean of the others)
        self.cost = [c or fill for c in per_step]
        self.workers = workers
        self.shown = [0] * len(groups)     # steps counted for group i
        self.lowered = [0] * len(groups)   # steps group i will not take (early stops)
        self.active = [len(g) for g in groups]
        self.last_epoch = [0] * len(groups)
        self.started = time.monotonic()
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

    def done(self, i, epochs: list | None = None):
        """Group i ended; `epochs`: the epochs its runs trained in this sweep, where known (a process
        pool reports no epoch ends), so that the steps its early stops saved, its epochs before a
        resume and a failed or another sweep's group count as not taken here, not as done."""
        if epochs and len(epochs) == len(self.groups[i]) and all(isinstance(e, int) for e in epochs):
            saved = sum(c.max_epochs - e for c, e in zip(self.groups[i], epochs)) * self.n_batches[i]
            extra = max(0, min(saved, self.bound[i] - self.shown[i]) - self.lowered[i])
            self.lowered[i] += extra
            self.bar.total -= extra
        self._advance(i, self.bound[i])
        self.last_epoch[i] = math.inf  # late progress events of a finished group change nothing

    def left_text(self) -> str | None:
        """For a log without the bar (not a terminal: nohup, a batch job): 'about 1.2 h left at most',
        from this sweep's pace so far over its steps left (their upper bound), each step weighed by
        its group's cost; no sooner than the costliest group left could end on one worker. None while
        the bar shows."""
        done = sum(n * c for n, c in zip(self.shown, self.cost))
        if not self.bar.disable or not done:
            return None
        left = [(b - lo - n) * c for b, lo, n, c in zip(self.bound, self.lowered, self.shown, self.cost)]
        if sum(left) <= 0:
            return None
        pace = (time.monotonic() - self.started) / done  # wall seconds per estimated second, all workers together
        return f"about {duration(pace * max(sum(left), max(left) * self.workers))} left at most"

    def close(self):
        self.bar.close()


def inline(work, device: str, options: SweepOptions, progress: Progress, checkpoints: Checkpoints | None = None):
    """The default executor: one group after another in this process."""
    for i, g in work:
        hooks = Hooks(batch=lambda e, b, n, m, i=i: progress.batch(i, m),
                      epoch=lambda e, n, i=i: progress.epoch(i, e, n, counted_batches=True))
        yield i, train_group(g, device, options.data_dir, hooks, options.threads, checkpoints), None


def _worker_signals():
    """Worker processes leave Ctrl-C to the parent, which stops the pool (no traceback per worker);
    SIGTERM (a job's time limit, sent to every process) makes a worker's group checkpoint and stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_on_signals()


def pool(work, device: str, options: SweepOptions, progress: Progress, checkpoints: Checkpoints | None = None):
    """--workers N: groups in N spawned processes (no more than there are groups), claimed one at a
    time as a process comes free. A worker process that dies (the out-of-memory killer, a segfault)
    breaks the pool: its group and those in flight are recorded as failed (tried again on re-launch)
    and the sweep ends instead of waiting for them forever; nothing more is claimed."""
    threads = group_threads(options)
    n = max(1, min(options.workers, len(progress.groups)))
    work = iter(work)
    running: dict = {}  # future -> (index, group)
    broken = None
    executor = ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), initializer=_worker_signals)
    try:
        while True:
            while broken is None and len(running) < n and (job := next(work, None)) is not None:
                try:
                    running[executor.submit(train_group, job[1], device, options.data_dir, None, threads,
                                            checkpoints)] = job
                except BrokenProcessPool as e:  # claimed, then the pool was found broken
                    broken = e
                    yield job[0], failed_rows(job[1], dead_worker(e)), None
            if not running:
                return
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                i, group = running.pop(future)
                try:
                    rows = future.result()
                except BrokenProcessPool as e:
                    broken, rows = e, failed_rows(group, dead_worker(e))
                yield i, rows, None
    finally:
        for child in mp.active_children():  # Ctrl-C or an error: no worker outlives the sweep (SIGKILL: a
            child.kill()                      # worker's SIGTERM means "checkpoint at the epoch's end")
        executor.shutdown(wait=False, cancel_futures=True)


def dead_worker(e: BaseException) -> str:
    return (f"BrokenProcessPool: a worker process died while this group trained or waited ({e}); killed from "
            "outside (out of memory?): run the same command again to retry")

"""Sharing a store: several sweeps may train into one (two terminals, two nodes).

Each sweep claims the runs of a group in the store before it trains them (a lease per run) and keeps
its claims alive with a heartbeat; a run whose claim is older than BNONLY_LEASE_STALE seconds (120)
belongs to a process that died and is taken over, at once where that process ran on this machine
and is gone.
"""
from __future__ import annotations

import math
import os
import socket
import threading
import time
import uuid

from ..config.run import RunConfig
from ..errors import ConfigError
from ..files import alive
from ..store import ENDED, Store


def timing() -> tuple[float, float]:
    """(seconds between renewals of a sweep's claims, seconds of silence before another sweep's claim
    is taken over): BNONLY_LEASE_HEARTBEAT (20) and BNONLY_LEASE_STALE (120)."""
    return seconds_from("BNONLY_LEASE_HEARTBEAT", 20.0), seconds_from("BNONLY_LEASE_STALE", 120.0)


def seconds_from(name: str, default: float, zero: bool = False) -> float:
    """A number of seconds from the environment (BNONLY_LEASE_HEARTBEAT, BNONLY_LEASE_STALE,
    BNONLY_CHECKPOINT_SECONDS), read when a sweep starts; anything but a positive number (or zero,
    where `zero`) is one line naming the variable."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ConfigError(f"{name}={text!r}: expected a {'non-negative' if zero else 'positive'} number of seconds "
                          f"(default {default:g})")
    return value


def owner_gone(owner: str) -> bool:
    """A lease owner is gone at once when it ran on this machine and its process no longer exists
    (a sweep killed here is resumed without waiting for its claims to go stale)."""
    host, pid, _ = owner.split(":")
    return host == socket.gethostname() and pid.isdigit() and not alive(int(pid))


class Leases:
    """This process's claims on groups of a store, kept alive by a background heartbeat while it is
    entered (`with`). Made before the sweep plans: its clock starts, then it reads the ended runs
    once (missing() gives the sweep's work; later rows come by ids_since)."""

    def __init__(self, store: Store):
        self.heartbeat, self.stale = timing()
        self.store = store
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.ended_rows = store.read(status=ENDED, models=True)[0]  # (whose model is whole: a damaged one trains again)
        self.ended = {r["run_id"] for r in self.ended_rows}
        self.by_others = 0
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._run, daemon=True)

    def missing(self, runs: list[RunConfig]) -> list[RunConfig]:
        """The runs a sweep still has to train: all but those ended in the store."""
        return [c for c in runs if c.run_id not in self.ended]

    def _run(self):
        while not self._stop.wait(self.heartbeat):
            try:
                self.store.heartbeat(self.owner)
            except Exception:  # noqa: BLE001 - a missed beat only risks a takeover, never a lost row
                pass

    def work(self, groups: list[list[RunConfig]], progress, stop=None):
        """(index, runs) for the runs of each group that this process claims, lazily. Leases are per
        run: runs of a group that another live process holds are left to it, looked at again later,
        and dropped once written (or claimed as a group of their own if that process dies), so
        grouping, threads and devices never decide who trains a run, and none is trained twice.
        Nothing more is claimed once `stop()` says so."""
        pending = [(i, list(g)) for i, g in enumerate(groups)]
        while pending:
            waiting = []
            for i, group in pending:
                if stop is not None and stop():  # stopping on time: nothing more is claimed
                    return
                done = self._done_ids()
                left = [c for c in group if c.run_id not in done]
                self.by_others += len(group) - len(left)
                if not left:
                    progress.done(i, [0] * len(group))  # another sweep's work: none of it at this sweep's pace
                    continue
                taken = set(self.store.claim([c.run_id for c in left], self.owner, self.stale, gone=owner_gone))
                if taken:
                    done = self._done_ids()  # written between the look and the claim
                    mine = [c for c in left if c.run_id in taken and c.run_id not in done]
                    if len(mine) < len(taken):
                        self.store.release(self.owner, sorted(taken - {c.run_id for c in mine}))
                        self.by_others += len(taken) - len(mine)
                    if mine:
                        yield i, mine
                if rest := [c for c in left if c.run_id not in taken]:
                    waiting.append((i, rest))
            pending = waiting
            if pending:
                time.sleep(min(5.0, self.heartbeat))

    def _done_ids(self) -> set[str]:
        """The runs no group needs to train: ended, or written by another sweep since this one started."""
        return self.ended | self.store.ids_since(self.started)

    def __enter__(self):
        self._beat.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._stop.set()
        try:
            self.store.release(self.owner)
        except Exception:  # noqa: BLE001 - stale claims are taken over anyway
            pass

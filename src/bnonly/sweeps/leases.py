"""Sharing a store: several sweeps may train into one (two terminals, two nodes).

Each sweep claims a group in the store before it trains it and keeps the claim alive with a
heartbeat; a group whose claim is older than BNONLY_LEASE_STALE seconds (120) belongs to a process
that died and is taken over, at once where that process ran on this machine and is gone.
"""
from __future__ import annotations

import hashlib
import math
import os
import socket
import threading
import time
import uuid

from ..config.run import RunConfig
from ..errors import ConfigError
from ..store import Store


def timing() -> tuple[float, float]:
    """(seconds between renewals of a sweep's claims, seconds of silence before another sweep's claim
    is taken over): BNONLY_LEASE_HEARTBEAT (20) and BNONLY_LEASE_STALE (120)."""
    return seconds_from("BNONLY_LEASE_HEARTBEAT", 20.0), seconds_from("BNONLY_LEASE_STALE", 120.0)


def seconds_from(name: str, default: float) -> float:
    """A number of seconds from the environment (BNONLY_LEASE_HEARTBEAT, BNONLY_LEASE_STALE), read when a
    sweep starts; anything but a positive number is one line naming the variable."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}={text!r}: expected a positive number of seconds (default {default:g})")
    return value


def group_id(group: list[RunConfig]) -> str:
    """The name under which a store leases a group: a hash of its runs' ids."""
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
    """This process's claims on groups of a store, kept alive by a background heartbeat while it is
    entered (`with`). Made before the sweep plans: its clock starts, then it reads the ended runs
    once (missing() gives the sweep's work; later rows come by ids_since)."""

    def __init__(self, store: Store):
        self.heartbeat, self.stale = timing()
        self.store = store
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.ended = store.ended_ids()
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

    def work(self, groups: list[list[RunConfig]], progress):
        """(index, group) for every group this process claims, lazily; a group another live process
        holds is looked at again later, and dropped once that process has written its runs."""
        pending = list(range(len(groups)))
        while pending:
            waiting, done = [], self._done_ids()
            for i in pending:
                if all(c.run_id in done for c in groups[i]):
                    self.by_others += len(groups[i])
                    progress.done(i)
                elif self.store.claim(group_id(groups[i]), self.owner, self.stale, gone=owner_gone):
                    if all(c.run_id in self._done_ids() for c in groups[i]):  # written between the look and the claim
                        self.store.release(self.owner, group_id(groups[i]))
                        self.by_others += len(groups[i])
                        progress.done(i)
                    else:
                        yield i, groups[i]
                else:
                    waiting.append(i)
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

"""How a sweep runs (not what it computes): each field a flag of `bnonly sweep` and `bnonly
reproduce` and a keyword of bnonly.sweep(), typed by its annotation and checked before anything is
trained or written.
"""
from __future__ import annotations

import os
import re
import types
from dataclasses import dataclass, field, fields
from typing import get_type_hints

from ..errors import ConfigError
from .layers import is_path

DEVICES = ("auto", "cpu", "cuda")
EXECUTORS = ("local", "ray")
RAY = "Ray executor (pip install 'bnonly[ray]')"  # the flags' group in --help
MOST_PROCESSES = 1024  # the largest --workers, --threads and --group-size taken (torch crashes on far more threads)


def _option(default, help: str, **more):
    return field(default=default, metadata={"help": help, **more})


@dataclass(frozen=True)
class SweepOptions:
    """`estimate` is the flag --no-estimate; `path` marks a path (a str or os.PathLike, kept as a str:
    it travels to worker processes and Ray)."""
    device: str = _option("auto", f"where to train: {', '.join(DEVICES)} (auto: the GPU when PyTorch sees one, "
                                  "else the CPU)", choices=DEVICES)
    data_dir: str | None = _option(None, "your data: a directory of IDX files (mnist, fashion-mnist, idx) or "
                                         "cifar-10-batches-py (or its parent) for cifar10", path=True)
    workers: int = _option(1, "groups trained at once, in as many processes")
    group_size: int = _option(32, "at most this many runs trained at once as one vectorized model (1: one at a time)")
    threads: int = _option(0, "torch threads per group (0: the cores, divided among the workers)")
    estimate: bool = _option(True, "print the compute estimate, measured on a few steps of each group shape, "
                                   "before training")
    stop_after: str | None = _option(None, "stop on time: after this wall time (e.g. 2h40m, 90m, 45s) every group in "
                                           "progress saves its checkpoint at its epoch's end and the sweep exits 0; "
                                           "the same command goes on from there (SIGTERM and a first Ctrl-C do the "
                                           "same)")
    executor: str = _option("local", "local: this machine; ray: each group a Ray task (the store is still "
                                     "written by this process)", choices=EXECUTORS, group=RAY)
    address: str | None = _option(None, "the Ray cluster to join: 'auto' (the cluster of this node) or HOST:PORT "
                                        "(default: start a Ray on this machine)", group=RAY)
    cpus_per_task: int = _option(1, "CPUs (and torch threads) per Ray task", group=RAY)
    gpus_per_task: float | None = _option(None, "GPU share per Ray task with device cuda (default 0.25: four "
                                                "groups per GPU)", group=RAY)

    def __post_init__(self):
        for f in fields(self):
            value, flag, kind = getattr(self, f.name), "--" + f.name.replace("_", "-"), option_type(f.name)
            if value is None and f.default is None:
                continue
            if f.metadata.get("path"):
                if not is_path(value):
                    raise ConfigError(f"{flag} {value!r}: expected a path")
                object.__setattr__(self, f.name, os.fspath(value))
            elif (isinstance(value, bool) != (kind is bool)
                  or not isinstance(value, (int, float) if kind is float else kind)):
                raise ConfigError(f"{flag} {value!r}: expected {TYPE_WORDS[kind]}")
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise ConfigError(f"{flag} {value!r}: choose one of {', '.join(choices)}")
        if self.stop_after is not None:
            duration_seconds(self.stop_after)  # (checked here: one line before anything runs)
        for flag, value, least in (("--group-size", self.group_size, 1), ("--workers", self.workers, 1),
                                   ("--threads", self.threads, 0)):
            if not least <= value <= MOST_PROCESSES:
                raise ConfigError(f"{flag} {value}: must be in [{least}, {MOST_PROCESSES}]")


def duration_seconds(text: str) -> float:
    """'2h40m', '90m', '45s', '1h', '3600' (seconds) as seconds; anything else is one line."""
    m = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or m is None or not any(m.groups()):
        raise ConfigError(f"--stop-after {text!r}: expected a duration such as 2h40m, 90m, 45s or 3600 (seconds)")
    h, mins, secs = (float(g or 0) for g in m.groups())
    return 3600 * h + 60 * mins + secs


def option_type(name: str) -> type:
    """An option's type from its annotation (`str | None` is str)."""
    hint = HINTS[name]
    return next(t for t in hint.__args__ if t is not type(None)) if isinstance(hint, types.UnionType) else hint


HINTS = get_type_hints(SweepOptions)
TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
OPTIONS = tuple(f.name for f in fields(SweepOptions))

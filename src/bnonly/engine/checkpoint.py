"""Checkpoints of groups in training, so that a run resumes mid-training (a sweep stopped on time, by
SIGTERM at a job's time limit, or killed) from its last epoch, bit for bit on the same machine.

A checkpoint holds, per model, only what changes: the trained tensors (gamma/beta, `random`'s
entries, whole weights where they train) now and at their best epoch, BatchNorm's running
statistics, the momentum, the early-stopping state, the history; and the data-order generators and
the epoch. Frozen weights are rebuilt from the seed, so a frozen-weight group's checkpoint is
kilobytes. It is written atomically (a temporary file, fsync, rename) behind a magic line and the
SHA-256 of its payload, and checked when read: a damaged or foreign one is refused in one line and
its group starts again from epoch 0.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config.run import RunConfig
from .stack import Rows

MAGIC = b"bnonly-checkpoint 1\n"
SIGNALLED = {"stop": False}  # set by stop_on_signals' handler in this process


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: damaged, truncated or of another group."""


class Stopped(Exception):
    """A group that stopped on time (a deadline, a stop file or a signal) after saving its checkpoint."""

    def __init__(self, epoch: int):
        super().__init__(f"stopped after epoch {epoch}, checkpointed")
        self.epoch = epoch


def group_key(run_ids: list[str]) -> str:
    """The name of a group's checkpoint: a hash of its runs' ids (the same runs, the same file)."""
    return hashlib.sha256(",".join(sorted(run_ids)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Checkpoints:
    """Where a sweep keeps its groups' checkpoints and when its groups stop: `deadline` (time.time()
    seconds) or `stop_file` existing or a signal this process received (stop_on_signals). A group
    saves at an epoch's end at most every `every` seconds, and always when it stops."""
    directory: Path
    every: float = 60.0
    deadline: float | None = None
    stop_file: Path | None = None

    def path(self, run_ids: list[str]) -> Path:
        return Path(self.directory) / f"{group_key(run_ids)}.ckpt"

    def stopping(self) -> bool:
        return (SIGNALLED["stop"] or (self.deadline is not None and time.time() >= self.deadline)
                or (self.stop_file is not None and Path(self.stop_file).exists()))


def stop_on_signals() -> None:
    """In a worker process: SIGTERM (a job's time limit) makes its group checkpoint at the epoch's end
    and stop, instead of dying with its progress."""
    signal.signal(signal.SIGTERM, lambda *_: SIGNALLED.update(stop=True))


def save(path: Path, state: dict) -> None:
    """Write a checkpoint atomically: a reader sees the previous file or the whole new one."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    runs = json.dumps(state["runs"]).encode()  # (read without the payload: which runs a file holds)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(MAGIC + runs + b"\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load(path: Path, cfgs: list[RunConfig]) -> dict | None:
    """The checkpoint of this group, checked; None where there is none. CheckpointError (one line)
    where the file is damaged or belongs to other runs."""
    try:
        blob = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    if not blob.startswith(MAGIC):
        raise CheckpointError("not a bnonly checkpoint")
    _, _, rest = blob[len(MAGIC):].partition(b"\n")
    digest, _, payload = rest.partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise CheckpointError("its checksum does not match (a torn or damaged file)")
    try:
        state = torch.load(io.BytesIO(payload), weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever a damaged payload raises, it is one line
        raise CheckpointError(f"it does not load ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("runs") != [c.run_id for c in cfgs]:
        raise CheckpointError("it holds other runs")
    return state


def runs_of(path: Path) -> list[str] | None:
    """The run ids a checkpoint file holds, from its header (None where it has no readable one)."""
    try:
        with open(path, "rb") as fh:
            if fh.readline() != MAGIC:
                return None
            runs = json.loads(fh.readline(1 << 20))
    except (OSError, ValueError):
        return None
    return runs if isinstance(runs, list) and all(isinstance(r, str) for r in runs) else None


# ---------------------------------------------------------------- a group's state (engine/loop.py's Training)
def trained(group) -> list[str]:
    """The stack's tensors that some model of the group trains (the rest are rebuilt from the seeds)."""
    return [n for n, p in group.stack.params.items() if p.requires_grad]


def state_of(group, epoch: int, seconds: float, parts: list) -> dict:
    """What a checkpoint keeps of a Training after `epoch`: per model only what changes."""
    names = trained(group)
    return {"runs": [c.run_id for c in group.cfgs], "epoch": epoch, "seconds": seconds, "parts": parts,
            "active": group.active.cpu(),
            "current": {n: t.detach().cpu() for n, t in group.stack.params.items() if n in names},
            "buffers": {n: b.cpu() for n, b in group.stack.buffers.items()},
            "best": {n: group.best[n].cpu() for n in names + list(group.stack.buffers)},
            "momentum": {n: t.cpu() for n, t in group.bufs.items()},
            "best_val": [float(v) for v in group.best_val], "bad": list(group.bad),
            "results": [{"status": r.status, "history": r.history, "best_epoch": r.best_epoch,
                         "epochs_run": r.epochs_run, "val_loss": r.val_loss, "val_accuracy": r.val_accuracy}
                        for r in group.results],
            "generators": {str(s): g.get_state() for s, g in group.gens.items()}}


@torch.no_grad()
def restore(group, state: dict) -> None:
    """A fresh Training as it was when `state` was saved; a state that does not fit it (other tensors
    or shapes) raises CheckpointError."""
    names, device = trained(group), group.device
    if set(state["current"]) != set(names) or set(state["best"]) != set(names) | set(group.stack.buffers):
        raise CheckpointError("it holds other tensors than this group trains")
    active = state["active"].to(device)
    try:
        for n, t in state["best"].items():
            group.best[n].copy_(t)
        for n, t in state["current"].items():
            group.stack.params[n].index_copy_(0, active, t.to(device))
        for n, t in state["buffers"].items():
            group.stack.buffers[n].index_copy_(0, active, t.to(device))
        for s, g in group.gens.items():
            g.set_state(state["generators"][str(s)])
    except (RuntimeError, KeyError, IndexError) as e:
        raise CheckpointError(f"it does not fit this group ({type(e).__name__})") from None
    if len(active) < len(group.results):
        group.stack = group.stack.select(active)
    group.active = active
    group.rows = Rows([group.seed_of[g] for g in active.tolist()], device)
    group.bufs = {n: t.to(device) for n, t in state["momentum"].items()}
    group.best_val, group.bad = list(state["best_val"]), list(state["bad"])
    for r, saved in zip(group.results, state["results"]):
        for k, v in saved.items():
            setattr(r, k, v)


def resumed(group, path, fresh):
    """(the group with its checkpoint's state, that state); a damaged checkpoint, or one that does not
    fit the group, is said in one line and the group starts from epoch 0 (fresh(): a new Training)."""
    try:
        state = load(path, group.cfgs)
        if state is not None:
            restore(group, state)
        return group, state
    except Exception as e:  # noqa: BLE001 - whatever a damaged checkpoint raises, its group starts again
        why = str(e).splitlines()[0] if isinstance(e, CheckpointError) else f"{type(e).__name__}: {e}"
        print(f"bnonly: checkpoint {path}: {why[:200]}; its group starts again from epoch 0", file=sys.stderr)
        return fresh(), None

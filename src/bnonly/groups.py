"""Training one planned group (stacking.plan_groups) into store rows, and estimating what groups cost.

Every executor uses this module: the local ones (executors.py: this process or worker processes)
and the Ray executor (cluster.py, one task per group). Neither imports the other.
"""
from __future__ import annotations

import torch

from .config import RunConfig
from .data import DataError
from .engine import Hooks, measure_seconds, train
from .stacking import stack_key


def train_group(group: list[RunConfig], device: str, data_dir, hooks: Hooks | None = None, threads: int = 0) -> list[dict]:
    """Train one group (inline, in a worker process or in a Ray task) into summary rows. A crash,
    or a run the engine refuses (ConfigError, e.g. an impossible random allocation), is recorded as
    `failed` rows with the error (tried again on re-launch) instead of ending the sweep; a data
    error ends it with its one-line message, since every group would hit it."""
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


def failed_rows(group: list[RunConfig], error: str) -> list[dict]:
    return [{"run_id": c.run_id, "status": "failed", "error": error, "config": c.__dict__.copy()} for c in group]


def estimate_seconds(groups: list[list[RunConfig]], device: str, data_dir=None, batches: int = 3) -> tuple[float, int, int]:
    """The compute of these groups on this machine if every run goes to max_epochs, from a short
    measurement: each distinct group shape (stack key and size) runs a few steps of its real epoch
    loop and an evaluation (engine.measure_seconds). Returns (seconds, shapes measured, groups left
    out): a group that cannot run here (out of memory, an impossible `random_allocation`) is left
    out, and its own training records the error; a data error ends the sweep."""
    timed: dict[tuple, dict | None] = {}
    total, left_out = 0.0, 0
    for g in groups:
        shape = (stack_key(g[0]), len(g))  # a key holds the whole config but the per-model fields: data, budget
        if shape not in timed:
            try:
                timed[shape] = measure_seconds(g, device, data_dir, batches)
            except DataError:
                raise
            except Exception:  # noqa: BLE001 - the group's own training will record the error
                timed[shape] = None
        t = timed[shape]
        if t is None:
            left_out += 1
            continue
        total += g[0].max_epochs * t["epoch"] + t["once"]
    return total, len(timed), left_out

"""A sweep's grouping: which runs train together as one stack (same configuration but for
engine/stack.py's PER_MODEL_FIELDS, and one stack kind: docs/engine.md says what each kind computes),
how many, in what order, and what the groups will cost.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache

import torch

from ..config.run import RunConfig
from ..engine.device import EngineOptions
from ..engine.loop import measure_seconds
from ..engine.stack import shared_config
from ..registry.data import DataError
from ..registry.models import MODELS
from ..registry.nets import structure
from ..registry.sets import SETS


def stack_kind(cfg: RunConfig, options: EngineOptions | None = None) -> str:
    """The work cfg's set needs from a stack (docs/engine.md): `dense` where hidden weights train;
    every other set (their hidden weights stay frozen) in one `frozen` stack where the options allow
    it for this model's size (a small model's step costs its ops, not its arithmetic), else apart:
    `entries` (random's), `affine` (gamma/beta) and `head` (nothing before the head trains)."""
    s = SETS[cfg.trainable]
    if options is not None and hidden_weights(cfg) <= options.one_stack_weights:
        return "frozen"
    if "hidden" in s.parts or (s.random_entries and MODELS[cfg.model].convolutional):
        return "dense"
    limit = None if options is None else options.frozen_stack_weights
    if options is not None and (limit is None or hidden_weights(cfg) <= limit):
        return "frozen"
    if s.random_entries:
        return "entries"
    return "affine" if s.trains_trunk else "head"


def stack_key(cfg: RunConfig, options: EngineOptions | None = None) -> tuple[str, str]:
    """Runs with one key train as one stack in a sweep (up to stack_cap of them)."""
    return shared_config(cfg), stack_kind(cfg, options)


def hidden_weights(cfg: RunConfig) -> int:
    """The weights of cfg's model in its hidden layers (every linear or conv layer but the head)."""
    return _hidden_weights(shared_config(cfg))


@lru_cache(maxsize=None)
def _hidden_weights(shared: str) -> int:
    with torch.device("meta"):  # shapes only: a model too large to build is counted, not allocated
        model = structure(RunConfig(**{**json.loads(shared), "trainable": "all"}))
    return sum(op.weight.numel() for _, op, _ in model.units())


def stack_cap(cfg: RunConfig, options: EngineOptions, max_group: int = 32, threads: int = 1) -> int:
    """How many runs like cfg one stack holds: max_group, or for a dense stack on a CPU as many as
    keep their weights, gradients and momentum cache-sized (options.stack_weights), rounded down to
    a multiple of the group's threads (a batched matmul splits its models over the threads)."""
    if stack_kind(cfg) != "dense" or options.stack_weights is None:
        return max_group
    n = max(1, min(max_group, options.stack_weights // hidden_weights(cfg)))
    return n - n % threads if n > threads else n


def plan_groups(cfgs: list[RunConfig], options: EngineOptions, max_group: int = 32,
                threads: int = 1) -> list[list[RunConfig]]:
    """The runs as groups that train as one stack each, in grid order, at most stack_cap runs each
    (for groups that train on `threads` threads)."""
    by_key: dict[tuple, list[RunConfig]] = {}
    for c in cfgs:
        by_key.setdefault(stack_key(c, options), []).append(c)
    out = []
    for g in by_key.values():
        n = stack_cap(g[0], options, max_group, threads)
        out += [g[i:i + n] for i in range(0, len(g), n)]
    return out


def longest_first(groups: list[list[RunConfig]]) -> list[list[RunConfig]]:
    """The order in which parallel executors (--workers, Ray) start groups: the longest expected
    first, so that no long group starts last while the other workers idle. Stacks with a set that
    trains no hidden weights first (they learn slowest, and early stopping ends them last), then
    each by its weights times runs times epochs."""
    def expected(g: list[RunConfig]):
        return any(stack_kind(c) != "dense" for c in g), hidden_weights(g[0]) * len(g) * g[0].max_epochs
    return sorted(groups, key=expected, reverse=True)


def group_shape(group: list[RunConfig]) -> str:
    """The key of a group's timing: its stack key and size (16 hex digits)."""
    return hashlib.sha256(repr((stack_key(group[0]), len(group))).encode()).hexdigest()[:16]


def estimate_seconds(groups: list[list[RunConfig]], device: str, data_dir=None, batches: int = 3,
                     known: dict | None = None) -> tuple[float, int, int, dict]:
    """The compute of these groups on this machine if every run goes to max_epochs, from a short
    measurement: each distinct group shape (stack key and size) runs a few steps of its real epoch
    loop and an evaluation (engine.measure_seconds), unless `known` ({shape's hash: timing}, what an
    earlier sweep on this machine measured) has it. Returns (seconds, shapes measured now, groups
    left out, every shape's timing): a group that cannot run here (out of memory, an impossible
    `random_allocation`) is left out, and its own training records the error; a data error ends the
    sweep."""
    timed: dict[str, dict | None] = {k: v for k, v in (known or {}).items() if v is None or isinstance(v, dict) and all(
        isinstance(v.get(f), (int, float)) for f in ("epoch", "once"))}  # a hand-edited meta is measured again
    total, left_out, measured = 0.0, 0, 0
    for g in groups:  # a key holds the whole config but the per-model fields: data, budget
        shape = group_shape(g)
        if shape not in timed:
            measured += 1
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
    return total, measured, left_out, timed

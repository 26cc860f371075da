"""Which runs train together as one stack, how many, and in what order: the whole stacking policy.

Runs can share a stack when they differ only in PER_MODEL_FIELDS (seed and trainable set among
them). A sweep also keeps apart runs whose sets need different work, the stack's *kind*, derived
from the set registry:
- `dense`: hidden weights get dense gradients (`all`, `all-nobn`, and `random` in a convolutional
  model, whose conv weights train through masks);
- `entries`: `random`'s entries of an MLP's linear layers, a sparse correction with gathered
  gradients (stack_chain.SparseEntries): no dense weight gradient, the first layer once per seed;
- `affine`: gamma/beta train (`bn`, `bn+out`, `gamma`, `beta`): the first layer once per seed;
- `head`: nothing before the head trains (`out`, `none`): the trunk runs without gradients.
A stack computes for every model what any of its models needs, so mixing kinds would make `bn` pay
for `all`'s weight gradients, or for `random`'s gathers. Results do not depend on the grouping: a
group trains as its runs alone (tests/test_engine.py).
"""
from __future__ import annotations

import dataclasses
import json

from .config import RunConfig
from .device import EngineOptions
from .models import MODELS, build
from .sets import SETS

PER_MODEL_FIELDS = ("seed", "trainable", "random_placement", "random_norm", "random_allocation")
KINDS = ("dense", "entries", "affine", "head")


def shared_config(cfg: RunConfig) -> str:
    """What every run of one stack has in common: the configuration less PER_MODEL_FIELDS, with the
    normalization the model is built with (`all-nobn` has none, whatever `norm` says)."""
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in PER_MODEL_FIELDS}
    return json.dumps({**d, "norm": cfg.effective_norm}, sort_keys=True)


def stack_kind(cfg: RunConfig) -> str:
    """The work cfg's set needs from a stack (KINDS, see the module's docstring)."""
    s = SETS[cfg.trainable]
    if "hidden" in s.parts or (s.random_entries and MODELS[cfg.model].convolutional):
        return "dense"
    if s.random_entries:
        return "entries"
    return "affine" if s.trains_trunk else "head"


def stack_key(cfg: RunConfig) -> tuple[str, str]:
    """Runs with one key train as one stack in a sweep (up to stack_cap of them)."""
    return shared_config(cfg), stack_kind(cfg)


def hidden_weights(cfg: RunConfig) -> int:
    """The weights of cfg's model in its hidden layers (every linear or conv layer but the head)."""
    return sum(op.weight.numel() for _, op, _ in build(cfg).units())


def stack_cap(cfg: RunConfig, options: EngineOptions, max_group: int = 32, threads: int = 1) -> int:
    """How many runs like cfg one stack holds: max_group, or for a dense stack on a CPU as many as
    keep their weights, gradients and momentum cache-sized (options.stack_weights), rounded down to
    a multiple of the group's threads (a batched matmul splits its models over the threads)."""
    if stack_kind(cfg) != "dense" or options.stack_weights is None:
        return max_group
    n = max(1, min(max_group, options.stack_weights // hidden_weights(cfg)))
    return n - n % threads if n > threads else n


def plan_groups(cfgs: list[RunConfig], options: EngineOptions, max_group: int = 32, threads: int = 1) -> list[list[RunConfig]]:
    """The runs as groups that train as one stack each, in grid order, at most stack_cap runs each
    (for groups that train on `threads` threads)."""
    by_key: dict[tuple, list[RunConfig]] = {}
    for c in cfgs:
        by_key.setdefault(stack_key(c), []).append(c)
    out = []
    for g in by_key.values():
        n = stack_cap(g[0], options, max_group, threads)
        out += [g[i:i + n] for i in range(0, len(g), n)]
    return out


def longest_first(groups: list[list[RunConfig]]) -> list[list[RunConfig]]:
    """The order in which parallel executors (--workers, Ray) start groups: the longest expected
    first, so that no long group starts last while the other workers idle. Stacks that train no
    hidden weights first (they learn slowest, and early stopping ends them last), then each kind by
    its weights times runs times epochs."""
    def expected(g: list[RunConfig]):
        return stack_kind(g[0]) != "dense", hidden_weights(g[0]) * len(g) * g[0].max_epochs
    return sorted(groups, key=expected, reverse=True)


def stack_order(cfgs: list[RunConfig]) -> list[int]:
    """The order of cfgs (indices) in their stack: by seed, so that each seed's models sit together."""
    return sorted(range(len(cfgs)), key=lambda i: cfgs[i].seed)

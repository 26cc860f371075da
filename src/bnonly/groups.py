"""Groups: the runs of a sweep that train as one stack, and training one group into store rows.

Both executors use this module: the local one (sweep.py, in this process or in worker processes)
and the Ray executor (cluster.py, one task per group). Neither imports the other.
"""
from __future__ import annotations

import hashlib
import math

import torch

from .config import RunConfig
from .data import DataError
from .engine import Hooks, calibrate, stack_key, train
from .models import arch_name, build

TRAINED_WEIGHTS_PER_STACK = 4_000_000  # ~16 MB of trained weights (plus gradients and momentum)


def stack_limit(cfg: RunConfig, max_group: int = 32, device: str = "cpu") -> int:
    """How many runs like cfg to train as one stack. On a CPU, stacks that train hidden weights are
    capped so their weights, gradients and momentum stay cache-sized: past that, a bigger stack only
    adds memory traffic (measured: 12 stacked 784x2 `all` models train 0.8x as fast as one at a time).
    A GPU step is launch-bound at these sizes (benchmarks/speed.py --device cuda: 12 stacked 784x2
    `bn` models train 17x as fast as the textbook loop), so there every group stacks in full.
    Where this cap binds on a CPU, a sweep plans the size it measures (measured_stack_sizes)."""
    if stack_key(cfg)[1] != "dense" or device == "cuda":
        return max_group
    return max(1, min(max_group, TRAINED_WEIGHTS_PER_STACK // unit_weights(cfg)))


def unit_weights(cfg: RunConfig) -> int:
    """The weights of cfg's model in its hidden units (every linear or conv layer but the head)."""
    return sum(op.weight.numel() for _, op, _ in build(cfg).units())


def plan_groups(cfgs: list[RunConfig], max_group: int = 32, device: str = "cpu",
                sizes: dict[str, dict] | None = None) -> list[list[RunConfig]]:
    """Runs that can train as one stack, in grid order, at most `stack_limit` models each, or as
    many as `sizes` (measured_stack_sizes, for this device) says; never more than max_group."""
    out = []
    for g in by_stack_key(cfgs).values():
        measured = (sizes or {}).get(size_key(g[0], device))
        n = min(max_group, measured["size"]) if measured else stack_limit(g[0], max_group, device)
        out += [g[i:i + n] for i in range(0, len(g), n)]
    return out


def by_stack_key(cfgs: list[RunConfig]) -> dict[tuple, list[RunConfig]]:
    groups: dict[tuple, list[RunConfig]] = {}
    for c in cfgs:
        groups.setdefault(stack_key(c), []).append(c)
    return groups


def size_key(cfg: RunConfig, device: str) -> str:
    """A short, stable name of cfg's stack key on a device, under which a store keeps the stack
    size measured for such runs."""
    return hashlib.sha256("|".join((*stack_key(cfg), device)).encode()).hexdigest()[:16]


MEASURED_SIZES = (1, 2, 3, 4)  # the stack sizes timed where the cache-sized cap allows at most 4
MEASURED_MARGIN = 0.10  # another size replaces the cap only if it is this much faster per model
# Rounds over the sizes, each size once per round, its best kept: a drift of the machine's speed
# (2-3x within minutes on the 2-core CPU this was measured on, benchmarks/speed.py) then falls on
# every size alike instead of deciding for one measured in a slow moment.
MEASURED_ROUNDS = 2


def calibrated(group: list[RunConfig], device: str, data_dir=None) -> dict | None:
    """engine.calibrate, or None where the group cannot run (out of memory, an impossible
    `random_allocation`: its own training records the error); a data error ends the sweep."""
    try:
        return calibrate(group, device, data_dir)
    except DataError:
        raise
    except Exception:  # noqa: BLE001 - the group's own training will record the error
        return None


def measured_stack_sizes(cfgs: list[RunConfig], device: str = "cpu", data_dir=None, max_group: int = 32,
                         threads: int = 0, known: dict[str, dict] | None = None, log=None) -> dict[str, dict]:
    """Stack sizes chosen from measured step times, for the stacks that may lose to the same models
    trained one at a time: on a CPU, those that train hidden weights of models so wide that the
    cache-sized cap (stack_limit) allows at most 4 of them (at width 784: 3 models of depth 2, 1 of
    depth 14; narrower models stack as the cap says: 12 of width 100 train 3-3.5x faster per model
    than one, benchmarks/speed.py), with more than one run. For each such stack key, the real
    epoch loop (engine.calibrate: a few training
    steps and a validation pass) runs at each size of MEASURED_SIZES up to the key's runs and
    max_group, on `threads` threads (those each group will train on), in MEASURED_ROUNDS
    interleaved rounds (the best of each size kept), and the size with the least time per
    model-epoch replaces the cap where it is MEASURED_MARGIN faster than the cap's.
    Measured on 2 threads, a batched matmul splits its batch over the threads, so at 784 x 2 an odd
    size leaves one idle (benchmarks/stack_size.py: M = 1-4 12.8 / 10.2 / 13.4 / 11.8 ms per
    model-step); on one thread the sizes were within 10-21% of each other, in no fixed order, so the
    size is measured rather than ruled by the thread count. Sizes that fail to run are left out;
    where none runs, the cap is kept. known: sizes measured before (a store's), kept as they are.
    Returns {size_key: {"size", "stack", "threads", "seconds_per_model_epoch"}} for known and new
    keys. The numbers do not depend on the size beyond float rounding: a group trains as its runs
    alone (tests/test_engine.py, to 1e-5; for 784 x 2 `all`, bit-identically on this machine's CPU)."""
    sizes = dict(known or {})
    before = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        todo = []
        for g in by_stack_key(cfgs).values():
            key = size_key(g[0], device)
            if key in sizes or min(len(g), max_group) == 1:
                continue
            cap = stack_limit(g[0], 2 ** 30, device)  # the cache's cap, not --group-size's
            if cap <= max(MEASURED_SIZES):
                todo.append((g, key, cap))
        if todo and log:
            log(f"measuring the stack size of {len(todo)} stack(s) of wide models that train weights "
                f"(a few steps at each size up to {max(MEASURED_SIZES)}, in {MEASURED_ROUNDS} rounds)")
        for g, key, cap in todo:
            tried = [m for m in MEASURED_SIZES if m <= min(len(g), max_group)]  # (the cap is one of them)
            per_model, failed = {}, set()
            for _ in range(MEASURED_ROUNDS):
                for m in tried:
                    if m not in failed:
                        t = calibrated(g[:m], device, data_dir)
                        if t is None:
                            failed.add(m)
                        else:
                            per_model[m] = min(per_model.get(m, math.inf), t["epoch"] / m)
            per_model = {m: v for m, v in per_model.items() if m not in failed}
            base = min(cap, max(tried))
            best = min(per_model, key=per_model.get, default=base)
            if base in per_model and per_model[best] > (1 - MEASURED_MARGIN) * per_model[base]:
                best = base
            stack = f"{arch_name(g[0])} {'/'.join(sorted({c.trainable for c in g}))}"
            sizes[key] = {"size": best, "stack": stack, "threads": torch.get_num_threads(),
                          "seconds_per_model_epoch": {str(m): round(v, 3) for m, v in per_model.items()}}
            if log:
                log(f"stack size {best} for {stack} ({len(g)} runs; the cap {base}; seconds per model-epoch at "
                    f"each size, measured on {torch.get_num_threads()} thread(s): "
                    + (", ".join(f"{m}: {v:.2f}" for m, v in per_model.items()) or "none ran") + ")")
    finally:
        torch.set_num_threads(before)
    return sizes


def longest_first(groups: list[list[RunConfig]]) -> list[list[RunConfig]]:
    """The order in which parallel executors (--workers, Ray) start groups: the longest expected
    first, so that no long group starts last while the other workers idle (longest-processing-time
    first). Expected length: BN-like stacks (no dense weight gradients) before those that train
    weights, since they learn slowest and early stopping ends them last (on `quick` the `bn` groups
    ran 43-92 epochs, `all` and `all-nobn` 11-15, and took 56% of the group time), then each kind
    by its weights times models. Results do not depend on the order."""
    def key(g: list[RunConfig]):
        return stack_key(g[0])[1] == "frozen", unit_weights(g[0]) * len(g) * g[0].max_epochs
    return sorted(groups, key=key, reverse=True)


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


def estimate_seconds(groups: list[list[RunConfig]], device: str, data_dir=None) -> tuple[float, int, int]:
    """The compute of these groups on this machine if every run goes to max_epochs, from a short
    calibration: each distinct group shape (architecture, stacking, size) runs a few steps of its
    real epoch loop and an evaluation. Returns (seconds, shapes calibrated, groups left out): a
    group whose calibration fails (out of memory, say) is left out here and fails in training,
    where it is stored as failed."""
    timed: dict[tuple, dict | None] = {}
    total, left_out = 0.0, 0
    for g in groups:
        c = g[0]
        shape = (stack_key(c), len(g))
        if shape not in timed:
            timed[shape] = calibrated(g, device, data_dir)
        t = timed[shape]  # a shape fixes the data and the budget too (stack_key holds the whole config)
        if t is None:
            left_out += 1
            continue
        total += c.max_epochs * t["epoch"] + t["once"]
    return total, len(timed), left_out

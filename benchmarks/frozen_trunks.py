"""Frozen trunks on and off in the engine's training epoch, in adjacent pairs in one process.

`out` and `none` train nothing before the head, so they need no backward pass through their trunk,
even in a stack whose other models do (`bn`, `bn+out`, `random`). The engine puts them last in
their stack (engine.stack_order); with stacked.FROZEN_TRUNKS they run as a part of their own,
trunk without gradients (by default on a CPU where seed blocks are used, layers of at least
stacked.SEED_BLOCK_MIN_WEIGHTS weights). This times a few steps of a real group (the report's
frozen sets bn, bn+out, random and out, 3 seeds: 12 models, 3 of them `out`) with the split off,
on, off again, and reports the median over those triples of mean(off) / on: adjacent runs share
the machine's state, which on this VM drifts by 1.5x over minutes.

    python benchmarks/frozen_trunks.py      # about 1.5 minutes on 2 CPU cores
"""
import statistics
import time

from bnonly import stacked
from bnonly.config import resolve
from bnonly.engine import Group, Hooks, stack_order

SETS = ("bn", "bn+out", "random", "out")
CONFIGS = [(784, 2), (784, 6), (784, 14), (400, 4), (100, 4)]


def off_on_off(group: Group, flag: str, seconds: float = 15) -> tuple[float, float, float, tuple[float, float]]:
    """Training steps of `group` with stacked.<flag> False, True, False in adjacent triples for about
    `seconds` (at least 5 triples) -> (best ms per step off, best on, median of mean(off) / on, its
    quartiles); the flag is put back as it was."""
    default = getattr(stacked, flag)

    def epoch(value: bool) -> float:
        setattr(stacked, flag, value)
        t0 = time.perf_counter()
        group.train_epoch(1, Hooks())
        return (time.perf_counter() - t0) / group.n_batches

    try:
        epoch(False), epoch(True)  # warm-up
        ratios, on, off = [], [], []
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end or len(ratios) < 5:
            a, b, c = epoch(False), epoch(True), epoch(False)
            ratios.append((a + c) / 2 / b)
            on.append(b)
            off.append(min(a, c))
    finally:
        setattr(stacked, flag, default)
    q = statistics.quantiles(ratios, n=4)
    return min(off) * 1e3, min(on) * 1e3, statistics.median(ratios), (q[0], q[2])


def main():
    print("ms per step of 12 models (3 of them `out`), median of off/on over adjacent off-on-off triples")
    print(f"{'width':>5} {'depth':>5} | {'off':>7} {'on':>7} | {'off/on':>6} {'quartiles':>11} | default")
    for width, depth in CONFIGS:
        cfgs = [resolve("report", model="mlp", width=width, depth=depth, trainable=t, seed=s)
                for s in (0, 1, 2) for t in SETS]
        group = Group(sorted(cfgs, key=stack_order), "cpu", None)
        group.n_batches = 2 if depth <= 6 else 1
        off, on, ratio, (q1, q3) = off_on_off(group, "FROZEN_TRUNKS")
        picks = "on" if stacked.splits_frozen_trunks(group.stack.template, "cpu") else "off"
        print(f"{width:>5} {depth:>5} | {off:>7.1f} {on:>7.1f} | {ratio:>5.2f}x {q1:>5.2f}-{q3:.2f} | {picks}", flush=True)


if __name__ == "__main__":
    main()

"""Seed blocks on and off in the engine's step, side by side in one process.

Where no model of a stack trains a layer's weights, the models of one seed share them, and each
seed's models can run as a block of their own: every layer one matmul of their k x 128 rows with
the seed's weight, instead of one batched matmul over k identical copies (stacked.SEED_BLOCKS;
by default on a CPU for layers of at least stacked.SEED_BLOCK_MIN_WEIGHTS weights). This times the
step of 12 models of 3 seeds (as benchmarks/speed.py's (c) stacks them) with the blocks forced on
and forced off, interleaved over 3 rounds, best of each, for widths on both sides of that
threshold; the last column says what the default picks:

    python benchmarks/seed_blocks.py      # about 3 minutes on 2 CPU cores
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import speed  # noqa: E402

from bnonly import stacked  # noqa: E402
from bnonly.config import resolve  # noqa: E402
from bnonly.data import load  # noqa: E402

CONFIGS = [(784, 2, "bn"), (784, 14, "bn"), (784, 2, "random"), (784, 14, "random"), (400, 2, "bn"), (100, 2, "bn")]


def best(fn, budget: float) -> float:
    fn()
    out, t_end = float("inf"), time.perf_counter() + budget
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def main():
    d = load("mnist", 0.2, 0, 0, "cpu")
    default, M = stacked.SEED_BLOCKS, 12
    print(f"ms per model-step, {M} models of 3 seeds, best of 3 interleaved rounds")
    print(f"{'width':>5} {'depth':>5} {'set':>6} | {'blocks off':>10} {'blocks on':>9} | {'on/off':>6} | default")
    for width, depth, tset in CONFIGS:
        cfg = resolve("report", model="mlp", width=width, depth=depth, trainable=tset)
        fn = speed.engine_step(cfg, d, "cpu", M)
        times = {True: float("inf"), False: float("inf")}
        for _ in range(3):
            for forced in (False, True):
                stacked.SEED_BLOCKS = forced
                times[forced] = min(times[forced], best(fn, 2.0 if depth > 2 else 1.0))
        stacked.SEED_BLOCKS = default
        default = "on" if width * width >= stacked.SEED_BLOCK_MIN_WEIGHTS else "off"
        print(f"{width:>5} {depth:>5} {tset:>6} | {times[False] / M * 1e3:>10.3f} {times[True] / M * 1e3:>9.3f} | "
              f"{times[False] / times[True]:>5.2f}x | {default}", flush=True)


if __name__ == "__main__":
    main()

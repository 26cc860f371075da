"""BatchedLinear on and off in the engine's training epoch, in adjacent pairs in one process.

Where a stack's models train their linear weights (`all`), autograd's batched-matmul backward
computes each weight gradient transposed, and the SGD step's foreach ops then read it strided;
stacked.BatchedLinear computes it in the weight's own layout (stacked.BATCHED_LINEAR; by default for
weights of at least stacked.BATCHED_LINEAR_MIN_WEIGHTS entries per model). This times a few steps
of real `all` groups (as many seeds as groups.stack_limit stacks, at most 3) with it off, on, off
again, and reports the median over those triples of mean(off) / on (frozen_trunks.off_on_off). On
this machine's CPU the two trained bit-identically (tests/test_engine.py checks that they train alike).

    python benchmarks/weight_gradients.py      # about 2 minutes on 2 CPU cores
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from frozen_trunks import off_on_off  # noqa: E402

from bnonly import stacked  # noqa: E402
from bnonly.config import resolve  # noqa: E402
from bnonly.engine import Group  # noqa: E402
from bnonly.groups import stack_limit  # noqa: E402

CONFIGS = [(784, 2), (784, 6), (400, 4), (300, 2), (100, 6), (100, 2), (10, 6)]


def main():
    print("ms per step of an `all` group, median of off/on over adjacent off-on-off triples")
    print(f"{'width':>5} {'depth':>5} {'M':>2} | {'off':>7} {'on':>7} | {'off/on':>6} {'quartiles':>11} | default")
    for width, depth in CONFIGS:
        cfg = resolve("report", model="mlp", width=width, depth=depth, trainable="all")
        M = min(3, stack_limit(cfg))
        group = Group([cfg.replace(seed=s) for s in range(M)], "cpu", None)
        group.n_batches = 3 if width >= 300 else 20
        off, on, ratio, (q1, q3) = off_on_off(group, "BATCHED_LINEAR", seconds=12)
        picks = "on" if stacked.uses_batched_linear(group.stack.params["blocks.1.op.weight"]) else "off"
        print(f"{width:>5} {depth:>5} {M:>2} | {off:>7.2f} {on:>7.2f} | {ratio:>5.2f}x {q1:>5.2f}-{q3:.2f} | {picks}",
              flush=True)


if __name__ == "__main__":
    main()

"""How many `all` models to stack on a CPU: ms per model-step against the stack size M, side by side.

A stack of models that train their weights (`all`, `all-nobn`, LeNet-5's `random`) computes every
model's dense weight gradients, momentum and SGD step; once the stack's weights, gradients and
momentum outgrow the caches, a bigger stack only adds memory traffic. groups.stack_limit caps a
CPU stack at groups.TRAINED_WEIGHTS_PER_STACK trained weights; where that cap allows at most 4
models, a sweep measures the size instead (groups.measured_stack_sizes). This times the engine's step
(benchmarks/speed.py's (b)/(c): the engine's own batches and step) for M = 1..4 models of 3 seeds,
in interleaved rounds (median of each), next to the textbook loop, for architectures on both sides
of that cap, and marks the M the cap picks:

    python benchmarks/stack_size.py      # about 3 minutes on 2 CPU cores
"""
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import speed  # noqa: E402

from bnonly.config import resolve  # noqa: E402
from bnonly.data import load  # noqa: E402
from bnonly.groups import stack_limit, unit_weights  # noqa: E402

CONFIGS = [(784, 2), (784, 4), (400, 4), (400, 8), (300, 4), (100, 14)]
SIZES = (1, 2, 3, 4)
ROUNDS = 5


def main():
    d = load("mnist", 0.2, 0, 0, "cpu")
    print(f"ms per model-step of `all`, median of {ROUNDS} interleaved rounds; * = the M groups.stack_limit picks (cap 4 here)")
    print(f"{'width':>5} {'depth':>5} {'weights':>9} | " + " ".join(f"{f'M={m}':>8}" for m in SIZES) + f" | {'textbook':>8} | best")
    for width, depth in CONFIGS:
        cfg = resolve("report", model="mlp", width=width, depth=depth, trainable="all")
        steps = {m: speed.engine_step(cfg, d, "cpu", m) for m in SIZES}
        textbook = speed.textbook(cfg, d, "cpu")
        times = {m: [] for m in (*SIZES, "textbook")}
        for _ in range(ROUNDS):
            for m in SIZES:
                times[m].append(speed.timed(steps[m], "cpu", 1.0) / m * 1e3)
            times["textbook"].append(speed.timed(textbook, "cpu", 1.0) * 1e3)
        med = {m: statistics.median(v) for m, v in times.items()}
        picked = min(4, stack_limit(cfg))
        cells = " ".join(f"{med[m]:>7.2f}{'*' if m == picked else ' '}" for m in SIZES)
        best = min(SIZES, key=med.get)
        print(f"{width:>5} {depth:>5} {unit_weights(cfg):>9,} | {cells} | {med['textbook']:>8.2f} | M={best}", flush=True)


if __name__ == "__main__":
    main()

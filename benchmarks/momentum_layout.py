"""Strided vs contiguous momentum buffers in the engine's SGD step, side by side in one process.

A batched matmul's weight gradient comes out transposed (strided); engine.step creates the momentum
buffers contiguous, so that every later step's foreach ops run on contiguous memory. This times the
engine's step as it is against the same step with the buffers left in the gradient's layout (the
step's source with that one line changed), interleaved over 3 rounds, best of each, next to the
textbook loop of benchmarks/speed.py:

    python benchmarks/momentum_layout.py      # about 2 minutes on 2 CPU cores
"""
import inspect
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import speed  # noqa: E402

from bnonly import engine  # noqa: E402
from bnonly.config import resolve  # noqa: E402
from bnonly.data import load  # noqa: E402

CONTIGUOUS = "moms = [g.contiguous() for g in grads]"


def strided_step():
    src = inspect.getsource(engine.step)
    if CONTIGUOUS not in src:
        raise SystemExit("engine.step no longer has the line this benchmark changes")
    ns = dict(engine.__dict__)
    exec(src.replace(CONTIGUOUS, "moms = grads"), ns)
    return ns["step"]


def main():
    d = load("mnist", 0.2, 0, 0, "cpu")
    variants = {"strided": strided_step(), "contiguous": engine.step}
    for width, depth, tset, m in ((784, 14, "all", 1), (784, 2, "all", 3), (784, 2, "random", 12), (100, 14, "all", 12)):
        cfg = resolve("report", model="mlp", width=width, depth=depth, trainable=tset)
        times = {"strided": [], "contiguous": [], "textbook": []}
        for _ in range(3):
            for name, fn in variants.items():
                engine.step = fn  # what engine.Group.train_step calls
                times[name].append(speed.timed(speed.engine_step(cfg, d, "cpu", m), "cpu", 1.5) / m)
            engine.step = variants["contiguous"]
            times["textbook"].append(speed.timed(speed.textbook(cfg, d, "cpu"), "cpu", 1.5))
        b = {k: min(v) for k, v in times.items()}
        print(f"{width}x{depth} {tset} M={m}: ms per model-step strided {b['strided'] * 1e3:.2f}, contiguous "
              f"{b['contiguous'] * 1e3:.2f}, textbook {b['textbook'] * 1e3:.2f} -> contiguous/strided "
              f"{b['strided'] / b['contiguous']:.2f}x; vs textbook {b['textbook'] / b['strided']:.2f}x -> "
              f"{b['textbook'] / b['contiguous']:.2f}x", flush=True)


if __name__ == "__main__":
    main()

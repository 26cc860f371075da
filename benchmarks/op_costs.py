"""What bounds the narrow MLPs' training steps (the `quick` study's groups): PyTorch's per-op costs.

On one thread (as each of `make reproduce`'s two workers trains), it measures
  - PyTorch's own costs: one small op without autograd, one recorded autograd op (its forward and
    its backward node) and one backward call, each on a tensor of 128 x 3 x 10 floats;
  - the training step of real `quick` groups (3 seeds, the engine's epoch loop) at batch 128, and
    the same group at batch 2, whose step runs the same ops on 64x smaller activations (the
    weights, their gradients and momentum stay as large): what the ops cost nearly whatever the
    data (dispatch, autograd, Python), next to the batch-2 step's own floor (the matmuls' FLOPs
    at this run's one-thread torch.mm peak, or the bytes it must move, weights included, at its
    copy bandwidth: timing.work_per_step), which shows how little of it is arithmetic or
    memory traffic;
  - the batch-128 step's floor the same way: what its arithmetic and traffic cost at the least.
Batch 128 and batch 2 alternate in rounds in one process (timing.interleaved: this machine's speed
drifts by tens of percent within seconds) and the median of each is printed.

    python benchmarks/op_costs.py      # under a minute on 2 CPU cores
"""
import statistics

import torch
from timing import best_time, copy_bandwidth, floor_seconds, interleaved, mm_peak, work_per_step

from bnonly.config.layers import resolve
from bnonly.engine.loop import Training, Hooks

CONFIGS = [(10, 6, "all"), (10, 6, "bn"), (100, 2, "all-nobn"), (100, 6, "all"), (100, 6, "bn")]
ROUNDS, STEPS, SEEDS = 5, 40, 3


def per_call_us(fn, budget: float = 0.5) -> float:
    return best_time(fn, "cpu", budget) * 1e6


def torch_costs() -> dict:
    """Microseconds: an op without autograd, an autograd op (forward + backward, per op of a chain of
    50), a backward call (a chain of one, less its forward)."""
    x = torch.randn(128, 3, 10)
    xg = x.clone().requires_grad_(True)

    def chain(n):
        h = xg
        for _ in range(n):
            h = h * 1.0001
        return h.sum()

    plain = per_call_us(lambda: x * 1.0001)
    one_fwd = per_call_us(lambda: chain(1))
    one = per_call_us(lambda: torch.autograd.grad(chain(1), [xg]))
    fifty = per_call_us(lambda: torch.autograd.grad(chain(50), [xg]))
    return {"op": plain, "autograd_op": (fifty - one) / 49, "backward_call": one - one_fwd}


def group(width: int, depth: int, trainable: str, batch: int) -> Training:
    cfgs = [resolve("report", model="mlp", width=width, depth=depth, trainable=trainable, seed=s, batch_size=batch)
            for s in range(SEEDS)]
    g = Training(cfgs, "cpu", None)
    g.n_batches = STEPS
    return g


def epoch(g: Training):
    """One call: STEPS steps of g's epoch loop."""
    return lambda: g.train_epoch(2, Hooks())


def floor_ms(width: int, depth: int, trainable: str, batch: int, peak: float, bandwidth: float) -> float:
    """The step's floor for SEEDS models (timing.floor_seconds of timing.work_per_step)."""
    cfg = resolve("report", model="mlp", width=width, depth=depth, trainable=trainable)
    return SEEDS * floor_seconds(*work_per_step(cfg, batch), peak, bandwidth) * 1e3


def main():
    torch.set_num_threads(1)
    costs = torch_costs()
    peak, bandwidth = mm_peak("cpu", 0.5), copy_bandwidth("cpu", 0.5)
    print(f"one thread: torch.mm peak {peak:.0f} GFLOP/s, copy bandwidth {bandwidth:.0f} GB/s; an op without autograd "
          f"{costs['op']:.1f} us, an autograd op (forward + backward) {costs['autograd_op']:.1f} us, "
          f"a backward call {costs['backward_call']:.0f} us")
    print(f"ms per step of {SEEDS} models (one per seed), medians of {ROUNDS} alternating rounds; floor: the matmuls at "
          "the mm peak or the bytes at the bandwidth, whichever is longer")
    print(f"{'model':>9} {'set':>8} | {'batch 128':>9} {'floor':>6} {'floor/step':>10} | {'batch 2':>7} {'floor':>6} "
          f"{'floor/step':>10} | {'b2/b128':>7}")
    for width, depth, trainable in CONFIGS:
        runs = interleaved([epoch(group(width, depth, trainable, n)) for n in (128, 2)], "cpu", 0, ROUNDS)
        b, s = (statistics.median(t) * 1e3 / STEPS for t in runs)
        fb, fs = (floor_ms(width, depth, trainable, n, peak, bandwidth) for n in (128, 2))
        print(f"{f'{width}x{depth}':>9} {trainable:>8} | {b:>9.2f} {fb:>6.2f} {fb / b:>10.0%} | {s:>7.2f} {fs:>6.2f} "
              f"{fs / s:>10.0%} | {s / b:>7.0%}", flush=True)


if __name__ == "__main__":
    main()

"""Timing helpers of the benchmarks: timed calls, interleaved rounds, the machine's peaks, a step's floor.

This machine's speed drifts by tens of percent within seconds (2-3x within minutes on the 2-core
CPUs measured): compare variants only side by side, in interleaved rounds (`interleaved`, `ratio`).
"""
from __future__ import annotations

import statistics
import time

import torch

from bnonly.registry.sets import SETS


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, budget: float, min_steps: int = 3, warm: int = 2) -> float:
    """Seconds per call of fn, after `warm` warm-up calls, over at least `budget` seconds."""
    for _ in range(warm):
        fn()
    sync(device)
    n, t0 = 0, time.perf_counter()
    while n < min_steps or time.perf_counter() - t0 < budget:
        fn()
        n += 1
        if device == "cuda" and n % 10 == 0:
            sync(device)
    sync(device)
    return (time.perf_counter() - t0) / n


ROUNDS = 3


def interleaved(fns, device, budget: float, rounds: int = ROUNDS) -> list[list[float]]:
    """Seconds per call of each of fns in each of `rounds` rounds, every round timing each fn in turn
    for budget / rounds (two warm-up calls each first): a drift in the machine's speed, which
    reaches 2-3x within minutes on the 2-core CPU here, then falls on every fn alike, and a ratio
    is taken per round (ratio)."""
    for fn in fns:
        fn(), fn()
    times = [[] for _ in fns]
    for _ in range(rounds):
        for t, fn in zip(times, fns):
            t.append(timed(fn, device, budget / rounds, warm=0))
    return times


def ratio(num: list[float], den: list[float]) -> float:
    """The median over rounds of num / den (two of interleaved()'s lists)."""
    return statistics.median(a / b for a, b in zip(num, den))


def best_time(fn, device, budget: float) -> float:
    """The fastest of repeated calls over `budget` seconds (a machine's limit, not its average)."""
    fn()
    best, t_end = float("inf"), time.perf_counter() + budget
    while time.perf_counter() < t_end:
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def mm_peak(device, budget) -> float:
    n = 4096 if device == "cuda" else 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n ** 3 / best_time(lambda: a @ b, device, 2 * budget) / 1e9


def copy_bandwidth(device, budget) -> float:
    """GB/s of a large tensor copy (read + write)."""
    a = torch.empty(64 * 2 ** 20, device=device)  # 256 MiB
    b = torch.empty_like(a)
    return 2 * a.numel() * 4 / best_time(lambda: b.copy_(a), device, 2 * budget) / 1e9


def work_per_step(cfg, batch=128, in_features=784, classes=10):
    """FLOPs and bytes one training step of one model needs (matmuls; weights, optimizer state,
    activations and the input batch moved once each way). Only the work the set needs: a frozen
    first layer is computed once for the data set, not per step (engine.FirstLayerCache), and
    `random` needs the gradient of its entries only (a gather, not counted)."""
    dims = [in_features] + [cfg.width] * cfg.depth + [classes]
    layers = list(zip(dims[:-1], dims[1:]))
    s = SETS[cfg.trainable]
    trains_w = "hidden" in s.parts  # all, all-nobn
    frozen_first = not trains_w     # random: + a sparse correction
    flops = bytes_ = 0
    for i, (fi, fo) in enumerate(layers):
        head = i == len(layers) - 1
        mm = 2 * batch * fi * fo
        if i == 0 and frozen_first:
            bytes_ += 4 * batch * fo * 3 * 2 + 4 * batch * fo  # its cached output read, BN and ReLU outputs
            continue
        flops += mm                                      # forward
        if i > 0:
            flops += mm                                  # input gradient
        w_trains = trains_w or (head and "head" in s.parts)
        if w_trains:
            flops += mm                                  # weight gradient
            bytes_ += 4 * fi * fo * 5                    # grad write, momentum read+write, weight read+write
        bytes_ += 4 * fi * fo * 2                        # weight read forward and backward
        if not head:
            bytes_ += 4 * batch * fo * 3 * 2             # linear, BN and ReLU outputs: written, read back
        if i == 0:
            bytes_ += 4 * batch * in_features            # the input batch
    return flops, bytes_


def floor_seconds(flops: float, bytes_: float, peak: float, bandwidth: float) -> float:
    """A step's floor: its FLOPs at the mm peak (GFLOP/s) or its bytes at the copy bandwidth (GB/s),
    whichever takes longer (work_per_step's counts)."""
    return max(flops / (peak * 1e9), bytes_ / (bandwidth * 1e9))

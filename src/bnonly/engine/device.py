"""Devices: which one a run uses, what it is called, and the engine's rules for it.

Every rule of the engine that depends on the device is one field of `EngineOptions`, derived from
the device by `EngineOptions.for_device` and passed to the engine, the stacks and the planner; a
test that wants another rule passes other options.
"""
from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

import numpy
import torch

from ..config.options import DEVICES
from ..errors import ConfigError

def resolve_device(device: str = "auto") -> str:
    """'auto' (the default everywhere): cuda when PyTorch sees a GPU, else cpu."""
    if device not in DEVICES:
        raise ConfigError(f"device {device!r}: must be one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but this PyTorch sees no CUDA GPU")
    return device


@functools.lru_cache(maxsize=None)  # read once per process, not once per stored run
def device_name(device: str) -> str:
    """'NVIDIA H100 80GB HBM3' for cuda; the CPU's model name (from /proc/cpuinfo where there is one)."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        name = ""
    return name or platform.processor() or platform.machine()


@functools.lru_cache(maxsize=None)
def cpu_facts() -> dict:
    """What a CPU's float results depend on beyond its name: family, model and stepping (from
    /proc/cpuinfo where there is one) and the vector instructions torch's kernels use
    (torch.backends.cpu.get_cpu_capability(): 'AVX2', 'AVX512', ...), and the MKL build."""
    info = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for ln in fh:
                key, _, value = ln.partition(":")
                if not key.strip():
                    break  # the first processor's block is enough
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    config = torch.__config__.show()
    mkl = next((ln.split("Version", 1)[1].strip(" :") for ln in config.splitlines() if "Math Kernel Library" in ln),
               None)
    return {"cpu_vendor": info.get("vendor_id"), "cpu_family": info.get("cpu family"), "cpu_model": info.get("model"),
            "cpu_stepping": info.get("stepping"), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl": mkl}


def machine(device: str = "cpu") -> dict:
    """What a run's numbers depend on besides its configuration and code: the processor as its
    float order depends on it (name, family, model, stepping, vector capability), the threads a
    matmul splits over (its summation order, hence its last bits), and the libraries."""
    return {"device_name": device_name(device), **cpu_facts(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version()}


def describe_device(device: str, threads: int = 0) -> str:
    """The line printed before training: 'device: cuda (NVIDIA H100 80GB HBM3)', 'device: cpu (AMD
    EPYC, 2 threads)' (threads: per group, default torch's)."""
    n = threads or torch.get_num_threads()
    extra = "" if device == "cuda" else f", {n} thread{'s' if n != 1 else ''}"
    return f"device: {device} ({device_name(device)}{extra})"


@dataclass(frozen=True)
class EngineOptions:
    """How the engine computes on one device (docs/performance.md has the measurements behind each)."""
    grouped_conv: bool              # a stack's convolutions as one grouped convolution, else one per model
    vmap: bool                      # a FunctionalStack's models in one torch.func.vmap call, else one call each
    stack_weights: int | None       # a stack that trains hidden weights holds at most this many (all models'
                                    # together: cache-sized on a CPU); None: no cap
    eval_floats: int                # evaluation runs examples in chunks whose widest activations, all models
                                    # together, hold about this many floats
    first_layer_cache_mb: float     # a frozen first layer's output for the whole data set is kept when it
                                    # fits in this many MiB (0: computed per batch)
    frozen_stack_weights: int | None  # the sets whose hidden weights stay frozen share one stack where the
                                    # model's hidden weights are at most this many (None: always)
    one_stack_weights: int          # every set of an architecture shares that stack where its hidden weights
                                    # are at most this many (a first layer that trains costs little there)

    @classmethod
    def for_device(cls, device: str) -> "EngineOptions":
        """A GPU step is bound by kernel launches: one launch for all models, and no cap. A CPU is
        bound by its caches and by PyTorch's cost per op: a convolution per model, capped stacks
        of trained weights, cache-sized evaluation chunks."""
        cuda = device == "cuda"
        cache = float(os.environ.get("BNONLY_FIRST_LAYER_CACHE_MB", 1024))  # 3 seeds of MNIST at width 784: 0.66 GB
        # Which sets share a stack (docs/performance.md has the measurements): on a CPU every set of a
        # model with at most 20,000 hidden weights (784 x 20 + ...: width 10 shares, width 100 does
        # not pay); on a GPU the frozen sets always (not measured yet: launches, not arithmetic, bound it).
        frozen = os.environ.get("BNONLY_FROZEN_STACK_WEIGHTS")
        one = os.environ.get("BNONLY_ONE_STACK_WEIGHTS")
        return cls(grouped_conv=cuda, vmap=cuda, stack_weights=None if cuda else 4_000_000,
                   eval_floats=2 ** 25 if cuda else 2 ** 19, first_layer_cache_mb=cache,
                   frozen_stack_weights=None if cuda else int(frozen) if frozen is not None else 20_000,
                   one_stack_weights=int(one) if one is not None else 0 if cuda else 20_000)

"""bnonly: train BatchNorm and only BatchNorm, on MLPs, LeNet-5 and CIFAR ResNets / VGG.

The Python API (api.py; the README shows it in use):
    train(**fields) -> Result          sweep(config, out, **grid) -> Sweep
    results(out) -> DataFrame          report(out) -> path of report.html
    load_model(out, run_id) -> nn.Module
Every expected failure raises a BnonlyError with a one-line message, as the command line prints it.
The names below load on first use, so that `import bnonly` (and `bnonly --help`) does not wait for
torch.
"""
from importlib import import_module

from .version import __version__  # noqa: F401

WHERE = {  # name -> the module that defines it
    "train": "api", "sweep": "api", "results": "api", "report": "api", "load_model": "api", "Sweep": "api",
    "RunConfig": "config.run", "resolve": "config.run", "SweepConfig": "config.grid", "load_sweep": "config.layers",
    "MLP": "registry.nets", "LeNet5": "registry.nets", "ResNet": "registry.nets", "VGG": "registry.nets",
    "build": "registry.nets", "BnonlyError": "errors", "ConfigError": "errors", "OutputError": "errors",
    "OutOfMemory": "errors", "DataError": "registry.data", "StoreError": "store",
}
__all__ = ["__version__", *WHERE]


def __getattr__(name: str):
    if name not in WHERE:
        raise AttributeError(f"module 'bnonly' has no attribute {name!r}")
    return getattr(import_module(f".{WHERE[name]}", __name__), name)


def __dir__():
    return __all__

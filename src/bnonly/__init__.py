"""bnonly: train BatchNorm and only BatchNorm, on MLPs, LeNet-5 and CIFAR ResNets / VGG.

The Python API (api.py; the README shows it in use):
    train(**fields) -> Result          sweep(config, out, **grid) -> Sweep
    results(out) -> DataFrame          report(out) -> path of report.html
    load_model(out, run_id) -> nn.Module
Every expected failure raises a BnonlyError with a one-line message, as the command line prints it.
The names below load on first use, so that `import bnonly` (and `bnonly --help`) does not wait for
torch.
"""
from .version import __version__  # noqa: F401

WHERE = {  # name -> the module that defines it
    "train": "api", "sweep": "api", "results": "api", "report": "api", "load_model": "api", "Sweep": "api",
    "RunConfig": "config.run", "resolve": "config.layers", "SweepConfig": "config.layers", "load_sweep": "config.layers",
    "MLP": "registry.nets", "LeNet5": "registry.nets", "ResNet": "registry.nets", "VGG": "registry.nets",
    "build": "registry.nets", "BnonlyError": "errors", "ConfigError": "errors", "OutputError": "errors",
    "OutOfMemory": "errors", "DataError": "registry.data", "StoreError": "store",
}
__all__ = ["__version__", *WHERE]


def _module(where: str):
    """The module WHERE names, imported on first use; every import written out, so that the layout
    test sees it (no dynamic imports in the package)."""
    if where == "api":
        from . import api as module
    elif where == "config.run":
        from .config import run as module
    elif where == "config.layers":
        from .config import layers as module
    elif where == "registry.nets":
        from .registry import nets as module
    elif where == "registry.data":
        from .registry import data as module
    elif where == "store":
        from . import store as module
    else:
        from . import errors as module
    return module


def __getattr__(name: str):
    if name not in WHERE:
        raise AttributeError(f"module 'bnonly' has no attribute {name!r}")
    return getattr(_module(WHERE[name]), name)


def __dir__():
    return __all__

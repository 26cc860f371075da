"""bnonly: train BatchNorm and only BatchNorm, on MLPs, LeNet-5 and CIFAR ResNets / VGG.

The Python API (api.py; the README shows it in use):
    train(**fields) -> Result          sweep(config, out, **grid) -> DataFrame
    results(out) -> DataFrame          report(out) -> path of report.html
    load_model(out, run_id) -> nn.Module
Every expected failure raises a BnonlyError with a one-line message, as the command line prints it.
"""
from .version import __version__  # noqa: F401

from .api import load_model, report, results, sweep, train  # noqa: E402,F401
from .config import ConfigError, RunConfig, resolve  # noqa: E402,F401
from .data import DataError  # noqa: E402,F401
from .errors import BnonlyError, OutOfMemory, OutputError  # noqa: E402,F401
from .models import MLP, VGG, LeNet5, ResNet, build  # noqa: E402,F401
from .store import StoreError  # noqa: E402,F401
from .sweep import SweepConfig, load_sweep  # noqa: E402,F401

__all__ = ["__version__", "train", "sweep", "results", "report", "load_model", "RunConfig", "resolve", "SweepConfig",
           "load_sweep", "MLP", "LeNet5", "ResNet", "VGG", "build", "BnonlyError", "ConfigError", "DataError", "StoreError",
           "OutputError", "OutOfMemory"]

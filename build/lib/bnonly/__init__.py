"""bnonly: train BatchNorm and only BatchNorm, on MLPs and LeNet-5."""
from .version import __version__  # noqa: F401

from .config import RunConfig, resolve  # noqa: E402,F401
from .models import MLP, LeNet5, build  # noqa: E402,F401

"""Normalization kinds: the layer after each hidden linear/conv. One entry per kind.

Whatever the kind, the layer's `weight` is gamma and its `bias` beta (None when the preset has no
hidden beta). The batched engine (engine/fused.py) asks `kind_of(layer)` how to compute a layer and
raises for a layer this table does not know, rather than computing something else.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable


@dataclass(frozen=True)
class NormKind:
    name: str
    help: str
    build: Callable | None        # build(features, conv, momentum, eps) -> nn.Module; None: no layer
    classes: tuple = ()           # the names of this kind's module classes (kind_of matches them exactly)
    batch_statistics: bool = False  # normalizes over the batch, keeps running statistics
    per_example: bool = False       # normalizes each example over its features

    @property
    def normalizes(self) -> bool:
        return self.batch_statistics or self.per_example


# (torch is imported when a layer is built: the registry's names load without it, for `bnonly --help`)
def _batchnorm(features, conv, momentum, eps):
    from torch import nn
    return (nn.BatchNorm2d if conv else nn.BatchNorm1d)(features, eps=eps, momentum=momentum)


def _layernorm(features, conv, momentum, eps):
    from torch import nn
    return nn.GroupNorm(1, features, eps=eps) if conv else nn.LayerNorm(features, eps=eps)


@lru_cache(maxsize=None)
def affine_class():
    """The `affine` kind's module: a per-feature scale and shift with no normalization (no
    statistics). Defined on first use, once per process, so that this registry loads without torch."""
    import torch
    from torch import nn

    class Affine(nn.Module):
        def __init__(self, features: int, conv: bool = False):
            super().__init__()
            self.conv = conv
            self.weight = nn.Parameter(torch.ones(features))
            self.bias = nn.Parameter(torch.zeros(features))

        def forward(self, x):
            shape = (1, -1, 1, 1) if self.conv else (1, -1)
            return x * self.weight.view(shape) + (0 if self.bias is None else self.bias.view(shape))
    return Affine


def _affine(features, conv, momentum, eps):
    return affine_class()(features, conv)


NORMS: dict[str, NormKind] = {k.name: k for k in (
    NormKind("batchnorm", "BatchNorm: batch statistics in training, running statistics in inference",
             _batchnorm, ("BatchNorm1d", "BatchNorm2d"), batch_statistics=True),
    NormKind("layernorm", "each example normalized over its features (on conv layers over channels and "
             "pixels, i.e. GroupNorm with one group), per-feature gamma/beta", _layernorm,
             ("LayerNorm", "GroupNorm"), per_example=True),
    NormKind("affine", "a per-feature scale and shift, no normalization, no statistics", _affine, ("Affine",)),
    NormKind("none", "no layer (hidden linear/conv layers get a bias instead)", None),
)}


def norm_layer(kind: str, features: int, conv: bool, hidden_beta: bool, momentum: float, eps: float):
    """The layer of `kind` after a hidden layer of `features` outputs (None for 'none')."""
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r} (known: {', '.join(NORMS)})")
    if NORMS[kind].build is None:
        return None
    layer = NORMS[kind].build(features, conv, momentum, eps)
    if not hidden_beta:  # "beta deactivated": the layer scales but does not shift
        layer.register_parameter("bias", None)
    return layer


def kind_of(layer) -> NormKind:
    """The registry entry of a normalization layer (None is 'none'); an unknown layer raises."""
    if layer is None:
        return NORMS["none"]
    for kind in NORMS.values():
        if type(layer).__name__ in kind.classes:
            return kind
    raise TypeError(f"{type(layer).__name__} is not a normalization kind bnonly knows "
                    f"({', '.join(NORMS)}); add it to registry/norms.py")


def batch_norm_layers(model) -> list:
    """The layers of a model (an nn.Module) that normalize over the batch (their kind has batch_statistics)."""
    names = {c for k in NORMS.values() if k.batch_statistics for c in k.classes}
    return [m for m in model.modules() if type(m).__name__ in names]

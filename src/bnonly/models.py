"""The study's models as plain `torch.nn` modules.

Both are a sequence of `Block`s (linear or conv -> normalization -> ReLU [-> max-pool]) and a
`head` (Linear with bias). The batched engine (`stacked.py`) reads this same structure.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import RunConfig


class Block(nn.Module):
    """op (Linear/Conv2d; bias only when there is no normalization) -> norm -> ReLU -> optional 2x2 max-pool."""

    def __init__(self, op: nn.Module, norm: nn.Module | None, pool: bool = False):
        super().__init__()
        self.op, self.norm, self.pool = op, norm, pool

    def forward(self, x):
        if isinstance(self.op, nn.Linear):
            x = x.flatten(1)
        x = self.op(x)
        if self.norm is not None:
            x = self.norm(x)
        x = torch.relu(x)
        return nn.functional.max_pool2d(x, 2) if self.pool else x


class Affine(nn.Module):
    """A per-feature scale and shift with no normalization (no statistics)."""

    def __init__(self, features: int, conv: bool = False):
        super().__init__()
        self.conv = conv
        self.weight = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))

    def forward(self, x):
        shape = (1, -1, 1, 1) if self.conv else (1, -1)
        return x * self.weight.view(shape) + (0 if self.bias is None else self.bias.view(shape))


def _norm_layer(norm: str, features: int, conv: bool, hidden_beta: bool, momentum: float, eps: float):
    """The layer after each hidden linear/conv. Its `weight` is gamma and its `bias` beta, whatever the kind.
    layernorm normalizes each example over its features (for conv layers: over channels and pixels,
    i.e. GroupNorm with one group), with per-feature (per-channel) gamma and beta."""
    if norm == "none":
        return None
    if norm == "batchnorm":
        layer = (nn.BatchNorm2d if conv else nn.BatchNorm1d)(features, eps=eps, momentum=momentum)
    elif norm == "layernorm":
        layer = nn.GroupNorm(1, features, eps=eps) if conv else nn.LayerNorm(features, eps=eps)
    elif norm == "affine":
        layer = Affine(features, conv)
    else:
        raise ValueError(f"unknown norm {norm!r}")
    if not hidden_beta:  # "beta deactivated": the layer scales but does not shift
        layer.register_parameter("bias", None)
    return layer


class Net(nn.Module):
    """Blocks then a linear head. `MLP` and `LeNet5` build one."""

    def __init__(self, blocks: list[Block], head: nn.Linear):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(x.flatten(1))


def MLP(width: int, depth: int, in_features: int = 784, num_classes: int = 10, norm: str = "batchnorm",
        hidden_beta: bool = True, bn_momentum: float = 0.1, bn_eps: float = 1e-5) -> Net:
    """input -> depth x [Linear(no bias) -> BatchNorm -> ReLU] -> Linear(width, classes)."""
    blocks = [Block(nn.Linear(in_features if i == 0 else width, width, bias=norm == "none"),
                    _norm_layer(norm, width, False, hidden_beta, bn_momentum, bn_eps)) for i in range(depth)]
    return Net(blocks, nn.Linear(width, num_classes))


def LeNet5(in_channels: int = 1, image_size: int = 28, num_classes: int = 10, norm: str = "batchnorm",
           hidden_beta: bool = True, bn_momentum: float = 0.1, bn_eps: float = 1e-5) -> Net:
    """Classic LeNet-5 layout with BatchNorm after every conv/linear layer and ReLU + max-pool:
    conv 5x5 (6, padding 2 on 28x28) -> pool -> conv 5x5 (16) -> pool -> 120 -> 84 -> classes."""
    pad = 2 if image_size == 28 else 0
    side = ((image_size + 2 * pad - 4) // 2 - 4) // 2
    def nl(f, conv):
        return _norm_layer(norm, f, conv, hidden_beta, bn_momentum, bn_eps)
    bias = norm == "none"
    blocks = [Block(nn.Conv2d(in_channels, 6, 5, padding=pad, bias=bias), nl(6, True), pool=True),
              Block(nn.Conv2d(6, 16, 5, bias=bias), nl(16, True), pool=True),
              Block(nn.Linear(16 * side * side, 120, bias=bias), nl(120, False)),
              Block(nn.Linear(120, 84, bias=bias), nl(84, False))]
    return Net(blocks, nn.Linear(84, num_classes))


@torch.no_grad()
def init_weights(model: Net, gamma_init: str, generator: torch.Generator) -> Net:
    """He-normal weights, zero biases and beta, gamma from `gamma_init`; in a fixed order so a seed
    gives the same random features whatever trains (and with or without BatchNorm)."""
    for b in model.blocks:
        nn.init.kaiming_normal_(b.op.weight, nonlinearity="relu", generator=generator)
    nn.init.kaiming_normal_(model.head.weight, nonlinearity="relu", generator=generator)
    for b in model.blocks:
        if b.norm is not None:
            g = b.norm.weight
            if gamma_init == "ones":
                g.fill_(1.0)
            elif gamma_init == "uniform(-1,1)":
                nn.init.uniform_(g, -1.0, 1.0, generator=generator)
            elif gamma_init == "uniform(0,1)":
                nn.init.uniform_(g, 0.0, 1.0, generator=generator)
            elif gamma_init == "normal(0,1)":
                nn.init.normal_(g, 0.0, 1.0, generator=generator)
            else:
                raise ValueError(f"unknown gamma_init {gamma_init!r}")
            if b.norm.bias is not None:
                b.norm.bias.zero_()
        if b.op.bias is not None:
            b.op.bias.zero_()
    model.head.bias.zero_()
    return model


def build(cfg: RunConfig, input_shape=(1, 28, 28), num_classes: int = 10) -> Net:
    """The model of a run, initialised from its seed (same seed -> same random network)."""
    kw = dict(num_classes=num_classes, norm=cfg.effective_norm, hidden_beta=cfg.hidden_beta,
              bn_momentum=cfg.bn_momentum, bn_eps=cfg.bn_eps)
    c, h, w = input_shape
    if cfg.model == "mlp":
        model = MLP(cfg.width, cfg.depth, in_features=c * h * w, **kw)
    elif cfg.model == "lenet5":
        model = LeNet5(in_channels=c, image_size=h, **kw)
    else:
        raise ValueError(f"unknown model {cfg.model!r}")
    return init_weights(model, cfg.gamma_init, torch.Generator().manual_seed(cfg.seed))

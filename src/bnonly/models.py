"""The study's models as plain `torch.nn` modules, and the registry that names them.

Both are a sequence of `Block`s (linear or conv -> normalization -> ReLU [-> max-pool]) and a
`head` (Linear with bias). The batched engine (`stacked.py`) reads this same structure.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from .norms import norm_layer

if TYPE_CHECKING:  # build() reads a RunConfig's fields; config.py imports this module's registries
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
                    norm_layer(norm, width, False, hidden_beta, bn_momentum, bn_eps)) for i in range(depth)]
    return Net(blocks, nn.Linear(width, num_classes))


def LeNet5(in_channels: int = 1, image_size: int = 28, num_classes: int = 10, norm: str = "batchnorm",
           hidden_beta: bool = True, bn_momentum: float = 0.1, bn_eps: float = 1e-5) -> Net:
    """Classic LeNet-5 layout with BatchNorm after every conv/linear layer and ReLU + max-pool:
    conv 5x5 (6, padding 2 on 28x28) -> pool -> conv 5x5 (16) -> pool -> 120 -> 84 -> classes."""
    pad = 2 if image_size == 28 else 0
    side = ((image_size + 2 * pad - 4) // 2 - 4) // 2
    def nl(f, conv):
        return norm_layer(norm, f, conv, hidden_beta, bn_momentum, bn_eps)
    bias = norm == "none"
    blocks = [Block(nn.Conv2d(in_channels, 6, 5, padding=pad, bias=bias), nl(6, True), pool=True),
              Block(nn.Conv2d(6, 16, 5, bias=bias), nl(16, True), pool=True),
              Block(nn.Linear(16 * side * side, 120, bias=bias), nl(120, False)),
              Block(nn.Linear(120, 84, bias=bias), nl(84, False))]
    return Net(blocks, nn.Linear(84, num_classes))


# ---------------------------------------------------------------- the registry of models
@dataclass(frozen=True)
class Architecture:
    name: str
    help: str
    build: Callable  # build(cfg, input_shape (C, H, W), num_classes, **norm keywords) -> Net
    sized: bool      # takes width and depth from the config (else they do not apply)
    convolutional: bool = False  # has conv layers (the stack gives `random` gathered gradients in linear layers only)


MODELS: dict[str, Architecture] = {a.name: a for a in (
    Architecture("mlp", "input -> depth x [Linear(no bias) -> norm -> ReLU] -> Linear(width, 10)",
                 lambda cfg, shape, classes, **kw: MLP(cfg.width, cfg.depth, in_features=shape[0] * shape[1] * shape[2],
                                                       num_classes=classes, **kw), sized=True),
    Architecture("lenet5", "classic LeNet-5 (6-16 conv, 120-84 linear) with a norm layer after each",
                 lambda cfg, shape, classes, **kw: LeNet5(in_channels=shape[0], image_size=shape[1],
                                                          num_classes=classes, **kw), sized=False, convolutional=True),
)}


def arch_name(c) -> str:
    """The one name of an architecture, in labels, tables and file names: 'mlp_w100_d2', 'lenet5'.
    `c` is a RunConfig, a config dict or a store row (model, width and depth are read from it)."""
    get = c.get if isinstance(c, dict) else (lambda k: getattr(c, k))
    model = get("model")
    if model in MODELS and MODELS[model].sized:
        return f"{model}_w{get('width')}_d{get('depth')}"
    return str(model)


# ---------------------------------------------------------------- initialisation
GAMMA_INITS: dict[str, Callable] = {
    "ones": lambda g, gen: g.fill_(1.0),
    "uniform(-1,1)": lambda g, gen: nn.init.uniform_(g, -1.0, 1.0, generator=gen),
    "uniform(0,1)": lambda g, gen: nn.init.uniform_(g, 0.0, 1.0, generator=gen),
    "normal(0,1)": lambda g, gen: nn.init.normal_(g, 0.0, 1.0, generator=gen),
}


@torch.no_grad()
def init_weights(model: Net, gamma_init: str, generator: torch.Generator) -> Net:
    """He-normal weights, zero biases and beta, gamma from `gamma_init`; in a fixed order so a seed
    gives the same random features whatever trains (and with or without BatchNorm)."""
    if gamma_init not in GAMMA_INITS:
        raise ValueError(f"unknown gamma_init {gamma_init!r}")
    for b in model.blocks:
        nn.init.kaiming_normal_(b.op.weight, nonlinearity="relu", generator=generator)
    nn.init.kaiming_normal_(model.head.weight, nonlinearity="relu", generator=generator)
    for b in model.blocks:
        if b.norm is not None:
            GAMMA_INITS[gamma_init](b.norm.weight, generator)
            if b.norm.bias is not None:
                b.norm.bias.zero_()
        if b.op.bias is not None:
            b.op.bias.zero_()
    model.head.bias.zero_()
    return model


def build(cfg: RunConfig, input_shape=(1, 28, 28), num_classes: int = 10) -> Net:
    """The model of a run, initialised from its seed (same seed -> same random network)."""
    if cfg.model not in MODELS:
        raise ValueError(f"unknown model {cfg.model!r}")
    model = MODELS[cfg.model].build(cfg, tuple(input_shape), num_classes, norm=cfg.effective_norm,
                                    hidden_beta=cfg.hidden_beta, bn_momentum=cfg.bn_momentum, bn_eps=cfg.bn_eps)
    return init_weights(model, cfg.gamma_init, torch.Generator().manual_seed(cfg.seed))

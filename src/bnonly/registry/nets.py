"""The study's models as plain `torch.nn` modules (registry/models.py names them), and build().

The MLP, LeNet-5 and VGG are a chain of `Block`s (linear or conv -> normalization -> ReLU [->
max-pool]) and a `head` (Linear with bias); the fused stack (engine/fused.py) computes such a chain
directly. The CIFAR residual networks run their own forward (engine/functional.py trains them).
Every model lists its `units()`: each hidden linear/conv layer with the normalization layer after
it, the pairs the trainable sets, the random baseline and the gamma analysis read.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

import sys

from .models import GAMMA_INITS, MODELS, VGG_PLANS
from .norms import norm_layer


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

    def units(self) -> list[tuple[str, nn.Module, nn.Module | None]]:
        """(name, linear/conv layer, its normalization layer or None) for every hidden layer."""
        return [(f"blocks.{i}.op", b.op, b.norm) for i, b in enumerate(self.blocks)]


def MLP(width: int, depth: int, in_features: int = 784, num_classes: int = 10, norm: str = "batchnorm",
        hidden_beta: bool = True, bn_momentum: float = 0.1, bn_eps: float = 1e-5, hidden_bias: bool = True) -> Net:
    """input -> depth x [Linear(no bias) -> BatchNorm -> ReLU] -> Linear(width, classes). Without
    normalization (norm 'none') the hidden layers get a bias where hidden_bias says so."""
    blocks = [Block(nn.Linear(in_features if i == 0 else width, width, bias=norm == "none" and hidden_bias),
                    norm_layer(norm, width, False, hidden_beta, bn_momentum, bn_eps)) for i in range(depth)]
    return Net(blocks, nn.Linear(width, num_classes))


def LeNet5(in_channels: int = 1, image_size: int = 28, num_classes: int = 10, norm: str = "batchnorm",
           hidden_beta: bool = True, bn_momentum: float = 0.1, bn_eps: float = 1e-5, hidden_bias: bool = True) -> Net:
    """Classic LeNet-5 layout with BatchNorm after every conv/linear layer and ReLU + max-pool:
    conv 5x5 (6, padding 2 on 28x28) -> pool -> conv 5x5 (16) -> pool -> 120 -> 84 -> classes."""
    pad = 2 if image_size == 28 else 0
    side = ((image_size + 2 * pad - 4) // 2 - 4) // 2
    def nl(f, conv):
        return norm_layer(norm, f, conv, hidden_beta, bn_momentum, bn_eps)
    bias = norm == "none" and hidden_bias
    blocks = [Block(nn.Conv2d(in_channels, 6, 5, padding=pad, bias=bias), nl(6, True), pool=True),
              Block(nn.Conv2d(6, 16, 5, bias=bias), nl(16, True), pool=True),
              Block(nn.Linear(16 * side * side, 120, bias=bias), nl(120, False)),
              Block(nn.Linear(120, 84, bias=bias), nl(84, False))]
    return Net(blocks, nn.Linear(84, num_classes))


# ---------------------------------------------------------------- CIFAR residual networks and VGG
def conv3x3(c_in: int, c_out: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


class ResidualBlock(nn.Module):
    """conv3x3 -> norm -> ReLU -> conv3x3 -> norm, plus the shortcut (identity, or a strided 1x1
    conv -> norm where the shape changes), then ReLU (OpenLTH's cifar_resnet.Model.Block)."""

    def __init__(self, c_in: int, c_out: int, downsample: bool, nl: Callable, bias: bool):
        super().__init__()
        self.conv1, self.norm1 = conv3x3(c_in, c_out, 2 if downsample else 1, bias), nl(c_out)
        self.conv2, self.norm2 = conv3x3(c_out, c_out, 1, bias), nl(c_out)
        self.shortcut = None
        if downsample or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=2 if downsample else 1, bias=bias)
            self.shortcut_norm = nl(c_out)

    @staticmethod
    def _norm(norm, x):
        return x if norm is None else norm(x)

    def forward(self, x):
        h = torch.relu(self._norm(self.norm1, self.conv1(x)))
        h = self._norm(self.norm2, self.conv2(h))
        s = x if self.shortcut is None else self._norm(self.shortcut_norm, self.shortcut(x))
        return torch.relu(h + s)

    def units(self, prefix: str):
        out = [(f"{prefix}.conv1", self.conv1, self.norm1), (f"{prefix}.conv2", self.conv2, self.norm2)]
        if self.shortcut is not None:
            out.append((f"{prefix}.shortcut", self.shortcut, self.shortcut_norm))
        return out


class ResNet(nn.Module):
    """The CIFAR ResNet-N, N = 6k + 2 (He et al. 2016, section 4.2; OpenLTH's cifar_resnet_N[_W]):
    conv3x3 (W channels) -> norm -> ReLU, three stages of k residual blocks with W, 2W and 4W
    channels (the first block of stages 2 and 3 halves the resolution, its shortcut a 1x1 conv ->
    norm), global average pooling, a linear head. W = 16 is the standard width; Frankle et al. also
    train W = 32 and 64 (`resnetNx2`, `resnetNx4`)."""

    def __init__(self, depth: int, width: int = 16, in_channels: int = 3, num_classes: int = 10,
                 norm: str = "batchnorm", hidden_beta: bool = True, bn_momentum: float = 0.1, bn_eps: float = 1e-5,
                 hidden_bias: bool = True):
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"a CIFAR ResNet has depth 6k + 2 (k >= 1), not {depth}")
        k = (depth - 2) // 6
        def nl(c):
            return norm_layer(norm, c, True, hidden_beta, bn_momentum, bn_eps)
        # convolutions get a bias only without normalization, as in MLP and LeNet5
        bias = norm == "none" and hidden_bias
        self.stem = conv3x3(in_channels, width, bias=bias)
        self.stem_norm = nl(width)
        blocks, c_in = [], width
        for stage in range(3):
            c_out = width * 2 ** stage
            for i in range(k):
                blocks.append(ResidualBlock(c_in, c_out, downsample=stage > 0 and i == 0, nl=nl, bias=bias))
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x):
        h = self.stem(x)
        h = torch.relu(h if self.stem_norm is None else self.stem_norm(h))
        for b in self.blocks:
            h = b(h)
        return self.head(h.mean((2, 3)))

    def units(self):
        return [("stem", self.stem, self.stem_norm)] + [u for i, b in enumerate(self.blocks)
                                                        for u in b.units(f"blocks.{i}")]


class VGG(nn.Module):
    """VGG-11/16 for CIFAR with a norm layer after every conv (OpenLTH's cifar_vgg_N): conv3x3 ->
    norm -> ReLU, max-pools as in VGG_PLANS, a final 2x2 average pool, a linear head."""

    def __init__(self, depth: int, in_channels: int = 3, image_size: int = 32, num_classes: int = 10,
                 norm: str = "batchnorm", hidden_beta: bool = True, bn_momentum: float = 0.1, bn_eps: float = 1e-5,
                 hidden_bias: bool = True):
        super().__init__()
        if depth not in VGG_PLANS:
            raise ValueError(f"VGG depth {depth}: one of {', '.join(map(str, VGG_PLANS))}")
        blocks, c_in, side = [], in_channels, image_size
        for i, c in enumerate(VGG_PLANS[depth]):
            if c == "M":
                continue
            nl = norm_layer(norm, c, True, hidden_beta, bn_momentum, bn_eps)
            pool = i + 1 < len(VGG_PLANS[depth]) and VGG_PLANS[depth][i + 1] == "M"
            blocks.append(Block(conv3x3(c_in, c, bias=nl is None and hidden_bias), nl, pool=pool))
            side //= 2 if pool else 1
            c_in = c
        self.blocks = nn.ModuleList(blocks)
        self.side = side
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(nn.functional.avg_pool2d(x, 2).flatten(1) if self.side == 2 else x.mean((2, 3)))

    def units(self):
        return [(f"blocks.{i}.op", b.op, b.norm) for i, b in enumerate(self.blocks)]


def is_chain(model: nn.Module) -> bool:
    """Whether a model is a chain of `Block`s (MLP, LeNet-5, VGG): each unit's own ReLU output exists
    (in a residual block a unit's output is added to the shortcut before its ReLU)."""
    return all(isinstance(b, Block) for b in getattr(model, "blocks", [None]))


@torch.no_grad()
def init_weights(model: nn.Module, gamma_init: str, generator: torch.Generator) -> nn.Module:
    """He-normal weights, zero biases and beta, gamma from `gamma_init`; in a fixed order so a seed
    gives the same random features whatever trains (and with or without BatchNorm)."""
    if gamma_init not in GAMMA_INITS:
        raise ValueError(f"unknown gamma_init {gamma_init!r}")
    units = model.units()
    for _, op, _ in units:
        nn.init.kaiming_normal_(op.weight, nonlinearity="relu", generator=generator)
    nn.init.kaiming_normal_(model.head.weight, nonlinearity="relu", generator=generator)
    for _, op, norm in units:
        if norm is not None:
            GAMMA_INITS[gamma_init](norm.weight, generator)
            if norm.bias is not None:
                norm.bias.zero_()
        if op.bias is not None:
            op.bias.zero_()
    model.head.bias.zero_()
    return model


def structure(cfg, input_shape=(1, 28, 28), num_classes: int = 10) -> nn.Module:
    """The model of a run (a config.RunConfig, read by field) as PyTorch initialises it; under
    `torch.device("meta")` its shapes alone, allocating nothing."""
    if cfg.model not in MODELS:
        raise ValueError(f"unknown model {cfg.model!r}")
    return MODELS[cfg.model].build(sys.modules[__name__], cfg, tuple(input_shape), num_classes,
                                   norm=cfg.effective_norm, hidden_beta=cfg.hidden_beta, bn_momentum=cfg.bn_momentum,
                                   bn_eps=cfg.bn_eps, hidden_bias=cfg.hidden_bias)


def build(cfg, input_shape=(1, 28, 28), num_classes: int = 10) -> nn.Module:
    """The model of a run, initialised from its seed: the same seed gives the same random network."""
    return init_weights(structure(cfg, input_shape, num_classes), cfg.gamma_init,
                        torch.Generator().manual_seed(cfg.seed))

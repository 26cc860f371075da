"""The study's models as plain `torch.nn` modules, and the registry that names them.

The MLP and LeNet-5 are a chain of `Block`s (linear or conv -> normalization -> ReLU [-> max-pool])
and a `head` (Linear with bias); the batched engine (`stack_chain.ChainStack`) computes that chain directly.
The CIFAR residual networks and VGGs (Frankle et al.'s own models, laid out as OpenLTH's
`cifar_resnet` and `cifar_vgg`) run their own forward; `stack_module.ModuleStack` trains them.

Every model lists its `units()`: each hidden linear/conv layer with the normalization layer after it
(the pairs the trainable sets, the random baseline and the gamma analysis read), and has a `head`.
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
        bias = norm == "none" and hidden_bias  # convolutions get a bias only without normalization, as in MLP and LeNet5
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
        return [("stem", self.stem, self.stem_norm)] + [u for i, b in enumerate(self.blocks) for u in b.units(f"blocks.{i}")]


VGG_PLANS = {  # OpenLTH's cifar_vgg plans: channels of each conv3x3, "M" a 2x2 max-pool
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
}


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


RESNET_DEPTHS = (14, 20, 32, 56, 110, 218, 434, 866)
RESNET_WIDTHS = {1: "", 2: "x2", 4: "x4"}  # multiples of 16 channels -> the name's suffix


# ---------------------------------------------------------------- the registry of models
@dataclass(frozen=True)
class Architecture:
    name: str
    help: str
    build: Callable  # build(cfg, input_shape (C, H, W), num_classes, **norm keywords) -> Net
    sized: bool      # takes width and depth from the config (else they do not apply)
    convolutional: bool = False  # has conv layers (the stack gives `random` gathered gradients in linear layers only)
    family: str = "mnist"        # "cifar": Frankle et al.'s models; `--preset frankle` adds their training setup
    layers: int = 0              # the N of ResNet-N and VGG-N (the depth the paper's figures order by)
    widen: int = 1               # channels as a multiple of the standard width (ResNet-Nx2: 2)


MODELS: dict[str, Architecture] = {a.name: a for a in (
    Architecture("mlp", "input -> depth x [Linear(no bias) -> norm -> ReLU] -> Linear(width, 10)",
                 lambda cfg, shape, classes, **kw: MLP(cfg.width, cfg.depth, in_features=shape[0] * shape[1] * shape[2],
                                                       num_classes=classes, **kw), sized=True),
    Architecture("lenet5", "classic LeNet-5 (6-16 conv, 120-84 linear) with a norm layer after each",
                 lambda cfg, shape, classes, **kw: LeNet5(in_channels=shape[0], image_size=shape[1],
                                                          num_classes=classes, **kw), sized=False, convolutional=True),
    *(Architecture(f"resnet{n}{suffix}", f"CIFAR ResNet-{n}, {16 * w}/{32 * w}/{64 * w} channels, a norm layer after "
                   "every conv, 1x1 conv shortcuts where the shape changes (Frankle et al.)",
                   lambda cfg, shape, classes, n=n, w=w, **kw: ResNet(n, 16 * w, shape[0], classes, **kw),
                   sized=False, convolutional=True, family="cifar", layers=n, widen=w)
      for n in RESNET_DEPTHS for w, suffix in RESNET_WIDTHS.items()),
    *(Architecture(f"vgg{n}", f"VGG-{n} for CIFAR with a norm layer after every conv (OpenLTH's cifar_vgg_{n})",
                   lambda cfg, shape, classes, n=n, **kw: VGG(n, shape[0], shape[1], classes, **kw),
                   sized=False, convolutional=True, family="cifar", layers=n)
      for n in VGG_PLANS),
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
def init_weights(model: nn.Module, gamma_init: str, generator: torch.Generator) -> Net:
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


def build(cfg: RunConfig, input_shape=(1, 28, 28), num_classes: int = 10) -> nn.Module:
    """The model of a run, initialised from its seed (same seed -> same random network)."""
    if cfg.model not in MODELS:
        raise ValueError(f"unknown model {cfg.model!r}")
    model = MODELS[cfg.model].build(cfg, tuple(input_shape), num_classes, norm=cfg.effective_norm,
                                    hidden_beta=cfg.hidden_beta, bn_momentum=cfg.bn_momentum, bn_eps=cfg.bn_eps,
                                    hidden_bias=cfg.hidden_bias)
    return init_weights(model, cfg.gamma_init, torch.Generator().manual_seed(cfg.seed))

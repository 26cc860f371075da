"""The registry of models: one entry per architecture, which every other module reads (config
validation, the sweep's grid, the stacks, the report's labels). The modules themselves, and
build(), are in registry/nets.py, so that the registry's names load without torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

RESNET_DEPTHS = (14, 20, 32, 56, 110, 218, 434, 866)
RESNET_WIDTHS = {1: "", 2: "x2", 4: "x4"}  # multiples of 16 channels -> the name's suffix
VGG_PLANS = {  # OpenLTH's cifar_vgg plans: channels of each conv3x3, "M" a 2x2 max-pool
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
}


@dataclass(frozen=True)
class Architecture:
    name: str
    help: str
    build: Callable  # build(nets, cfg, input_shape (C, H, W), num_classes, **norm keywords) -> nn.Module,
                     # nets: registry/nets.py, which builds models (nets.build) and passes itself
    sized: bool      # takes width and depth from the config (else they do not apply)
    convolutional: bool = False  # has conv layers (the stack gives `random` gathered gradients in linear layers only)
    family: str = "mnist"        # "cifar": Frankle et al.'s models; `--preset frankle` adds their training setup
    layers: int = 0              # the N of ResNet-N and VGG-N (the depth the paper's figures order by)
    widen: int = 1               # channels as a multiple of the standard width (ResNet-Nx2: 2)


MODELS: dict[str, Architecture] = {a.name: a for a in (
    Architecture("mlp", "input -> depth x [Linear(no bias) -> norm -> ReLU] -> Linear(width, 10)",
                 lambda nets, cfg, shape, classes, **kw: nets.MLP(cfg.width, cfg.depth,
                                                       in_features=shape[0] * shape[1] * shape[2],
                                                       num_classes=classes, **kw), sized=True),
    Architecture("lenet5", "classic LeNet-5 (6-16 conv, 120-84 linear) with a norm layer after each",
                 lambda nets, cfg, shape, classes, **kw: nets.LeNet5(in_channels=shape[0], image_size=shape[1],
                                                          num_classes=classes, **kw), sized=False, convolutional=True),
    *(Architecture(f"resnet{n}{suffix}", f"CIFAR ResNet-{n}, {16 * w}/{32 * w}/{64 * w} channels, a norm layer after "
                   "every conv, 1x1 conv shortcuts where the shape changes (Frankle et al.)",
                   lambda nets, cfg, shape, classes, n=n, w=w, **kw: nets.ResNet(n, 16 * w, shape[0], classes, **kw),
                   sized=False, convolutional=True, family="cifar", layers=n, widen=w)
      for n in RESNET_DEPTHS for w, suffix in RESNET_WIDTHS.items()),
    *(Architecture(f"vgg{n}", f"VGG-{n} for CIFAR with a norm layer after every conv (OpenLTH's cifar_vgg_{n})",
                   lambda nets, cfg, shape, classes, n=n, **kw: nets.VGG(n, shape[0], shape[1], classes, **kw),
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


# How gamma starts (tensor methods under no_grad: the same numbers as torch.nn.init's).
GAMMA_INITS: dict[str, Callable] = {
    "ones": lambda g, gen: g.fill_(1.0),
    "uniform(-1,1)": lambda g, gen: g.uniform_(-1.0, 1.0, generator=gen),
    "uniform(0,1)": lambda g, gen: g.uniform_(0.0, 1.0, generator=gen),
    "normal(0,1)": lambda g, gen: g.normal_(0.0, 1.0, generator=gen),
}

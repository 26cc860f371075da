"""A data set resident on one device, and the augmentation of its training batches."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..registry.data import NORMALIZE, DataError, raw, split_indices


@dataclass
class Tensors:
    """A data set resident on one device, pixels in [0, 1]."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    fill: torch.Tensor   # [C]: a black pixel (0) as the model sees it, the padding of `augment`

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])


@lru_cache(maxsize=4)
def load(dataset: str, val_fraction: float, data_seed: int, subset: int, device: str = "cpu",
         data_dir: str | None = None, normalize: bool = False) -> Tensors:
    """The data set on `device`, pixels in [0, 1], or normalised per channel (NORMALIZE) with `normalize`."""
    data = raw(dataset, data_dir)
    tr, va = split_indices(len(data.y_train), val_fraction, data_seed, subset)
    channels = data.x_train.shape[1]
    stats = NORMALIZE.get(dataset) if normalize else None
    if normalize and stats is None:
        raise DataError(f"normalize=true: no per-channel statistics for {dataset!r} (known: {', '.join(NORMALIZE)})")
    mean, std = (torch.tensor(v, device=device).view(-1, 1, 1) for v in (stats or ((0.0,), (1.0,))))
    def t(x):
        x = torch.from_numpy(np.ascontiguousarray(x)).to(device=device, dtype=torch.float32).div_(255.0)
        return x.sub_(mean).div_(std)
    def lab(y):
        return torch.from_numpy(np.ascontiguousarray(y)).to(device)
    return Tensors(t(data.x_train[tr]), lab(data.y_train[tr]), t(data.x_train[va]), lab(data.y_train[va]),
                   t(data.x_test), lab(data.y_test), (-mean / std).view(-1).expand(channels).clone())


def augment(x: torch.Tensor, fill: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """CIFAR's standard augmentation of a batch x [B, C, H, W] on its device: a random crop of the
    image padded by `pad` pixels of `fill` [C] (torchvision's RandomCrop(32, padding=4)), then a
    horizontal flip with probability 1/2 (RandomHorizontalFlip). The draws come from `generator`
    (on the CPU), so a seed's runs see the same augmented batches wherever they train."""
    B, C, H, W = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, B), generator=generator).to(x.device)
    flips = (torch.rand(B, generator=generator) < 0.5).to(x.device)
    f = fill.view(1, C, 1, 1)
    xp = torch.nn.functional.pad(x - f, (pad, pad, pad, pad)) + f   # padded with `fill`
    rows = (offsets[0].view(B, 1) + torch.arange(H, device=x.device)).view(B, 1, H, 1).expand(B, C, H, W + 2 * pad)
    cols = (offsets[1].view(B, 1) + torch.arange(W, device=x.device)).view(B, 1, 1, W).expand(B, C, H, W)
    out = xp.gather(2, rows).gather(3, cols)
    return torch.where(flips.view(B, 1, 1, 1), out.flip(3), out)


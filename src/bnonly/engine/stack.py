"""M models of one architecture as one vectorized model: what every stack holds, and what it is fed.

A stack keeps every parameter and buffer of its M models stacked along a new leading dimension,
with the trainable masks. Two classes compute it: `FusedStack` (fused.py) for a chain of blocks
(registry/nets.py's `Net`: the MLP, LeNet-5) with hand-fused batched ops, and `FunctionalStack`
(functional.py) for any other module through torch.func (the CIFAR ResNets and VGGs). Both take a
`Batch` and return logits [M, B, classes]. Runs share a stack when they differ only in
PER_MODEL_FIELDS.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config.run import RunConfig
from .device import EngineOptions
from .masks import Plan

PER_MODEL_FIELDS = ("seed", "trainable", "random_placement", "random_norm", "random_allocation")


def shared_config(cfg: RunConfig) -> str:
    """What every run of one stack has in common: the configuration less PER_MODEL_FIELDS, with the
    normalization the model is built with (`all-nobn` has none, whatever `norm` says)."""
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in PER_MODEL_FIELDS}
    return json.dumps({**d, "norm": cfg.effective_norm}, sort_keys=True)


def stack_order(cfgs: list[RunConfig]) -> list[int]:
    """The order of cfgs (indices) in their stack: by seed, so that each seed's models sit together."""
    return sorted(range(len(cfgs)), key=lambda i: cfgs[i].seed)


ENTRIES = ":entries"  # suffix of the parameter that holds a weight's trainable entries (fused.SparseEntries)


class Rows:
    """Which input row each model of a stack reads. Rows(positions): model m reads the row of
    positions[m] (its seed's place in the group); the rows are the distinct positions, sorted.
    Models that read one row are one seed's: they share its examples, gathered (and augmented) once,
    and its first layer, which FusedStack computes once per row where no model trains it."""

    def __init__(self, positions, device="cpu"):
        positions = list(positions)
        self.positions = sorted(set(positions))             # row r holds the examples of seed position positions[r]
        self.of_model = [self.positions.index(p) for p in positions]
        self.index = (None if self.of_model == list(range(len(self.of_model)))  # model m reads row m: no copy
                      else torch.tensor(self.of_model, device=device))
        self.first_model = [self.of_model.index(r) for r in range(len(self.positions))]  # a model reading row r

    def __len__(self) -> int:
        return len(self.positions)


@dataclass
class Batch:
    """What a training step or an evaluation gives a stack: each row's examples once, and which row
    each model reads (`rows`). x: images [R, B, C, H, W] (None where no model needs them); y: labels
    [R, B]; first: the first layer's output on the images [R, B, ...] where it was computed ahead
    (engine.FirstLayerCache), else None."""
    x: torch.Tensor | None
    y: torch.Tensor | None
    rows: Rows
    first: torch.Tensor | None = None

    def per_model(self, t: torch.Tensor) -> torch.Tensor:
        """t [R, B, ...] -> [M, B, ...]: each model's row (a copy only where a row serves several)."""
        return t if self.rows.index is None else t.index_select(0, self.rows.index)

    @functools.cached_property
    def labels(self) -> torch.Tensor:
        """Each model's labels [M, B]."""
        return self.per_model(self.y)

    def examples(self, start: int, end: int) -> "Batch":
        """Examples start..end of every row (evaluation in chunks)."""
        def cut(t):
            return None if t is None else t[:, start:end]
        return Batch(cut(self.x), cut(self.y), self.rows, cut(self.first))


class Stack:
    """The M models' parameters and buffers stacked along a new leading dimension, the trainable
    masks, and which models run BatchNorm in inference mode (`random_norm = inference`)."""

    def __init__(self, template: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                 masks: dict[str, torch.Tensor | None], inference_norm: torch.Tensor,
                 entries: dict[str, torch.Tensor], options: EngineOptions):
        self.template = template
        self.params = params        # name -> [M, *shape]; requires_grad where any model trains it
        self.buffers = buffers      # BN running statistics, name -> [M, C]
        self.masks = masks          # name -> None (all train) or float 0/1, broadcastable to params[name]
        self.inference_norm = inference_norm  # [M] bool: BN runs in inference mode for this model
        self.any_inference = bool(inference_norm.any())
        self.entries = entries      # weight name -> [M, K] flat indices of its trainable entries (FusedStack)
        self.options = options

    @property
    def size(self) -> int:
        return self.inference_norm.shape[0]

    @property
    def shares_first_layer(self) -> bool:
        """Whether every model's first layer keeps its seed's initial weight, so that its output
        depends on the input and the seed alone (computed once per seed: engine.FirstLayerCache)."""
        return False

    @staticmethod
    def gathered(template: nn.Module) -> set[str]:
        """Weights whose trainable entries get gathered gradients (SparseEntries) rather than masks."""
        return set()

    @classmethod
    def from_models(cls, models: list[nn.Module], plans: list[Plan], device="cpu",
                    options: EngineOptions | None = None):
        template = models[0]
        params, masks, entries = {}, {}, {}
        linear = cls.gathered(template)
        by_model = [dict(m.named_parameters()) for m in models]
        for name, _ in template.named_parameters():
            p = torch.stack([named[name].detach() for named in by_model]).to(device)
            ms = [pl.masks[name] for pl in plans]
            if name in linear and any(isinstance(m, torch.Tensor) for m in ms) and not any(m is True for m in ms):
                # entries of a linear weight train (random), nothing trains it whole: gathered gradients
                idx, emask = cls._entry_index(ms, p.shape[1:])
                entries[name] = idx.to(device)
                params[name + ENTRIES] = p.view(len(ms), -1).gather(1, entries[name]).clone().requires_grad_(True)
                masks[name + ENTRIES] = emask.to(device)
                masks[name] = torch.zeros(len(ms), 1, 1, device=device)
                params[name] = p.clone()
                continue
            if all(m is True for m in ms):
                masks[name] = None
            elif all(not isinstance(m, torch.Tensor) for m in ms):  # whole tensors, per model
                masks[name] = torch.tensor([float(m) for m in ms], device=device).view(-1, *[1] * (p.dim() - 1))
            else:
                masks[name] = torch.stack([m.float() if isinstance(m, torch.Tensor)
                                           else torch.full(p.shape[1:], float(m))
                                           for m in ms]).to(device)
            trains = masks[name] is None or bool(masks[name].any())
            params[name] = p.clone().requires_grad_(trains)
        buffers_of = [dict(m.named_buffers()) for m in models]
        buffers = {name: torch.stack([named[name] for named in buffers_of]).to(device).clone()
                   for name, _ in template.named_buffers() if not name.endswith("num_batches_tracked")}
        inference = torch.tensor([pl.norm_mode == "inference" for pl in plans], device=device)
        return cls(template, params, buffers, masks, inference, entries,
                   options or EngineOptions.for_device(torch.device(device).type))

    @staticmethod
    def _entry_index(masks: list, shape) -> tuple[torch.Tensor, torch.Tensor]:
        """Per model, the flat indices of its trainable entries, padded to a common K with distinct
        entries it does not train (their mask 0: they are written back unchanged); and that mask."""
        total = shape.numel()
        flat = [m.reshape(-1) if isinstance(m, torch.Tensor) else torch.full((total,), bool(m)) for m in masks]
        K = max(int(f.sum()) for f in flat)
        idx, emask = [], []
        for f in flat:
            chosen = f.nonzero().view(-1)
            pad = (~f).nonzero().view(-1)[: K - len(chosen)]
            idx.append(torch.cat([chosen, pad]))
            emask.append(torch.cat([torch.ones(len(chosen)), torch.zeros(len(pad))]))
        return torch.stack(idx), torch.stack(emask)

    def select(self, keep: torch.Tensor):
        """The sub-stack of models `keep` (indices), sharing nothing with this one."""
        def sel(t):
            return None if t is None else (t.index_select(0, keep) if t.shape[0] == self.size else t)
        params = {n: p.detach().index_select(0, keep).requires_grad_(p.requires_grad) for n, p in self.params.items()}
        return type(self)(self.template, params, {n: b.index_select(0, keep) for n, b in self.buffers.items()},
                          {n: sel(m) for n, m in self.masks.items()}, self.inference_norm.index_select(0, keep),
                          {n: i.index_select(0, keep) for n, i in self.entries.items()}, self.options)

    def state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Model i's state, loadable into its module with load_state_dict."""
        sd = {n: p[i].detach().cpu().clone() for n, p in self.params.items() if not n.endswith(ENTRIES)}
        sd.update({n: b[i].cpu().clone() for n, b in self.buffers.items()})
        for name, _ in self.template.named_buffers():
            if name.endswith("num_batches_tracked"):
                sd[name] = torch.tensor(0)
        return sd

    def example_floats(self, example_shape) -> int:
        """The widest layer's outputs per example and model: its features, times the input's H x W
        for a convolution (an upper bound: strides and pooling shrink the maps)."""
        pixels = math.prod(example_shape[1:]) if len(example_shape) == 3 else 1
        return max(op.weight.shape[0] * (pixels if isinstance(op, nn.Conv2d) else 1)
                   for _, op, _ in self.template.units())

    def chunk_size(self, n: int, example_shape) -> int:
        """How many of n examples evaluation runs at once: activations of about options.eval_floats
        floats for all models together, and at least 256 examples."""
        return max(256, min(n, self.options.eval_floats // max(1, self.size * self.example_floats(example_shape))))

    def forward(self, batch: Batch, training: bool) -> torch.Tensor:
        raise NotImplementedError

    def momentum_holders(self) -> list:
        """What holds each BatchNorm layer's momentum (reestimate_statistics)."""
        raise NotImplementedError

    @torch.no_grad()
    def reestimate_statistics(self, batches, rows: Rows) -> None:
        """BatchNorm running statistics re-estimated from scratch as the plain average over `batches`
        (each [B, C, H, W], the same batches for every model, read as `rows` says: Rows([0] * M) for
        copies of one model), as nn.BatchNorm does with momentum=None; parameters are untouched.
        Used after changing gamma/beta (an ablation), when the statistics of the intact network no
        longer describe the next layers' inputs."""
        for n, b in self.buffers.items():
            if n.endswith("running_mean"):
                b.zero_()
            elif n.endswith("running_var"):
                b.fill_(1.0)
        holders = self.momentum_holders()
        saved = [h.momentum for h in holders]
        try:
            for k, xb in enumerate(batches, 1):
                for h in holders:  # a cumulative average: batch k weighs 1/k
                    h.momentum = 1.0 / k
                self.forward(Batch(xb.unsqueeze(0).expand(len(rows), *xb.shape), None, rows), training=True)
        finally:
            for h, m in zip(holders, saved):
                h.momentum = m

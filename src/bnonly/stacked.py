"""M models of one architecture as one vectorized model.

Every parameter and buffer of the M `Net`s is stacked along a new leading dimension; linear layers
run as one batched matmul (`torch.baddbmm`), conv layers as one grouped convolution, BatchNorm
keeps per-model statistics; where the models of one seed share a frozen weight, one product with
that weight serves them all. A `Stack` of one model computes exactly what its `Net` computes.

Activations are laid out [B, k, ...]: batch, then the k models of a block, then features.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .models import Net
from .norms import NormKind, batch_norm_layers, kind_of
from .trainable import Plan


# How conv layers run: None picks one grouped convolution on CUDA and a convolution per model on
# CPU (2-4x faster there); True/False forces one (the tests check on CPU that both agree).
GROUPED_CONV: bool | None = None


# Where no model trains a layer's weights, the models of one seed share them: whether each seed's
# models then run as a block of their own, every layer one matmul of their k*B rows with the seed's
# weight (Stack.seed_runs). None (the default): on a CPU, for stacks with a later layer of at least
# SEED_BLOCK_MIN_WEIGHTS weights (a 784x784 layer has 614,656). Measured on 2 CPU cores: the step
# alone within 0.94-1.07x at width 784 (benchmarks/seed_blocks.py), the calibrated estimate of the
# claims study's 784-wide groups 8.9 h -> 8.1 h (two interleaved rounds each), and 0.67-0.71x at
# width 100, where a block per seed multiplies the small ops that bound the step; a GPU step is
# bound by kernel launches, which blocks multiply too. True/False force them on/off (the tests check
# that both give the same numbers).
SEED_BLOCKS: bool | None = None
SEED_BLOCK_MIN_WEIGHTS = 2 ** 19

# Models that train nothing before the head (`out`, `none`) need no backward pass through their
# trunk, even in a stack whose other models do (`bn`): whether the stack's last such models run
# their trunk as a part of their own without gradients (Stack.frozen_from; the engine sorts them
# last where splits_frozen_trunks says so). None (the default): on a CPU for a chain of blocks with
# a later layer of at least SEED_BLOCK_MIN_WEIGHTS weights (the rule of seed blocks; measured
# 1.16-1.19x at width 784, 1.01x at 400 and 0.89x at 100, benchmarks/frozen_trunks.py: a second
# part's extra forward ops cost more than the saved backward where small ops bound the step).
FROZEN_TRUNKS: bool | None = None

# Linear layers whose weights train (`all`; not the head, and not narrow layers fed by wide ones,
# which run as W @ h^T) as BatchedLinear, whose weight gradient comes out in the weight's own
# layout: None (the default) on a CPU where each model's weight has at least
# BATCHED_LINEAR_MIN_WEIGHTS entries (not measured on a GPU); True/False force it on/off (the tests
# check both agree).
# Autograd's batched-matmul backward gives it transposed, and the SGD step's foreach ops on a
# transposed gradient are slow on a CPU. Measured on 2 cores, off/on per step of `all` groups
# (benchmarks/weight_gradients.py): 1.04-1.06x at widths 300-784 (1.07-1.11x in a first, shorter
# comparison), 1.02-1.04x at width 100, 0.92x at width 10 (where a Python autograd.Function's
# overhead outweighs the strided reads of a 10x10 gradient: the default leaves it off there).
BATCHED_LINEAR: bool | None = None
BATCHED_LINEAR_MIN_WEIGHTS = 2 ** 13

# evaluate() on a CPU passes examples in chunks whose widest activations (all models) hold about this
# many floats: cache-sized. Measured on 2 cores, one thread, 3 models, 12,000 validation images,
# against the whole set at once: MLP 100x6 233 -> 82 ms, 784x2 1209 -> 685 ms, LeNet-5 5.3 -> 2.3 s.
EVAL_FLOATS_CPU = 2 ** 19

ENTRIES = ":entries"  # suffix of the parameter that holds a weight's trainable entries (see SparseEntries)
FIRST = "blocks.0.op.weight"


def widest_later(template: nn.Module) -> int:
    """The weights of the widest layer after the first in a chain of blocks (`Net`); else 0."""
    return max((b.op.weight.numel() for b in template.blocks[1:]), default=0) if isinstance(template, Net) else 0


def wide_cpu(flag: bool | None, widest: int, cpu: bool) -> bool:
    """flag, or where it is None: on a CPU, with a later layer of at least SEED_BLOCK_MIN_WEIGHTS
    weights (where SEED_BLOCKS and FROZEN_TRUNKS pay)."""
    return (cpu and widest >= SEED_BLOCK_MIN_WEIGHTS) if flag is None else flag


def splits_frozen_trunks(template: nn.Module, device) -> bool:
    """Whether a stack of such models on `device` runs `out` and `none` as a part of their own."""
    return isinstance(template, Net) and wide_cpu(FROZEN_TRUNKS, widest_later(template), torch.device(device).type == "cpu")


def _models(t: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """t[a:b], models a..b of a stacked tensor; t itself where that is all of them (a slice of a
    parameter would add a backward step that copies its whole gradient)."""
    return t if a == 0 and b == len(t) else t[a:b]


def _product(h: torch.Tensor, w: torch.Tensor, transpose: bool = True, bias: torch.Tensor | None = None) -> torch.Tensor:
    """h [B, k, n] times w^T (transpose) or w, plus bias: one matmul for a weight w [out, in] (bias
    [out]) that the k models share, a batched one for w [k, out, in] (bias [k, out]), one each ->
    [B, k, ...]."""
    B, k = h.shape[:2]
    if w.dim() == 2:
        x, wt = h.reshape(B * k, -1), w.t() if transpose else w
        return (x @ wt if bias is None else torch.addmm(bias, x, wt)).view(B, k, -1)
    if transpose and uses_batched_linear(w):
        return BatchedLinear.apply(h, w, bias)
    return _batched_product(h, w, transpose, bias)


def _batched_product(h: torch.Tensor, w: torch.Tensor, transpose: bool, bias: torch.Tensor | None) -> torch.Tensor:
    """h [B, k, n] times each model's w [k, out, in] (transposed where `transpose`), plus bias [k, out]."""
    hm, wt = h.transpose(0, 1), w.transpose(1, 2) if transpose else w
    return (torch.bmm(hm, wt) if bias is None else torch.baddbmm(bias.unsqueeze(1), hm, wt)).transpose(0, 1)


def uses_batched_linear(w: torch.Tensor) -> bool:
    """Whether _product multiplies by the stacked weight w [k, out, in] through BatchedLinear (BATCHED_LINEAR)."""
    if not w.requires_grad:
        return False
    return not w.is_cuda and w[0].numel() >= BATCHED_LINEAR_MIN_WEIGHTS if BATCHED_LINEAR is None else BATCHED_LINEAR


class BatchedLinear(torch.autograd.Function):
    """k models' linear layers as one batched matmul: h [B, k, in], w [k, out, in], bias [k, out] or
    None -> [B, k, out], as _product computes it, with the weight's gradient computed as
    delta^T h per model: [k, out, in], the weight's own layout (autograd's bmm backward computes
    h^T delta and hands it on transposed, and every SGD step then reads it strided: see BATCHED_LINEAR)."""

    @staticmethod
    def forward(ctx, h, w, bias):
        ctx.save_for_backward(h, w)
        ctx.has_bias = bias is not None
        return _batched_product(h, w, True, bias)

    @staticmethod
    def backward(ctx, g):
        h, w = ctx.saved_tensors
        h, w = h.to(g.dtype), w.to(g.dtype)  # under autocast, the forward multiplied their bf16 copies
        gm = g.transpose(0, 1)  # [k, B, out]
        grad_h = torch.bmm(gm, w).transpose(0, 1) if ctx.needs_input_grad[0] else None
        grad_w = torch.bmm(gm.transpose(1, 2), h.transpose(0, 1)) if ctx.needs_input_grad[1] else None
        grad_b = gm.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_h, grad_w, grad_b


class SparseEntries(torch.autograd.Function):
    """A frozen linear layer whose trained entries (the `random` baseline) act as a sparse
    correction: out[:, m] = h[:, m] @ w_m^T + sum over model m's entries e = (i, j) of
    (v - v0)[m, e] * h[:, m, j] at output i. h [B, k, in]; w [out, in] shared by the k models (one
    matmul) or [k, out, in], one each; v, v0 [k, K] the entries' trained and initial values; rows,
    cols [1, k, K] their (i, j). The entries' gradient is gathered, sum over the batch of
    delta[b, m, i] * h[b, m, j] for the chosen (i, j) only, never the dense [out, in] weight gradient
    (784 of 614,656 weights of a 784x784 layer train); the corrections are added in place."""

    @staticmethod
    def forward(ctx, h, v, w, v0, rows, cols):
        h = h.float()  # in fp32 also under bf16 autocast (the gathered gradient needs h and delta alike)
        with torch.autocast(h.device.type, enabled=False):
            B = h.shape[0]
            delta = v - v0
            out = _product(h, w)
            hj = h.gather(2, cols.expand(B, -1, -1))  # [B, k, K]: the input at each entry's input
            out.scatter_add_(2, rows.expand(B, -1, -1), hj * delta)
        ctx.save_for_backward(hj, w, delta, rows, cols)
        return out

    @staticmethod
    def backward(ctx, g):
        hj, w, delta, rows, cols = ctx.saved_tensors
        B = g.shape[0]
        gi = g.gather(2, rows.expand(B, -1, -1))  # [B, k, K]: delta at each entry's output
        grad_h = None
        if ctx.needs_input_grad[0]:
            grad_h = _product(g, w, transpose=False)
            grad_h.scatter_add_(2, cols.expand(B, -1, -1), gi * delta)
        return grad_h, (gi * hj).sum(0), None, None, None, None  # (a product and a sum: 4x an einsum's speed here)


@dataclass
class LayerSpec:
    conv: bool
    norm: NormKind     # the registry entry of the block's normalization layer
    pool: bool
    padding: int = 0
    momentum: float = 0.1
    eps: float = 1e-5


class StackBase:
    """What every stack holds: the M models' parameters and buffers stacked along a new leading
    dimension, the trainable masks, and which models run BatchNorm in inference mode."""

    def __init__(self, template: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                 masks: dict[str, torch.Tensor | None], inference_norm: torch.Tensor,
                 entries: dict[str, torch.Tensor] | None = None):
        self.template = template
        self.params = params        # name -> [M, *shape]; requires_grad where any model trains it
        self.buffers = buffers      # BN running statistics, name -> [M, C]
        self.masks = masks          # name -> None (all train) or float 0/1, broadcastable to params[name]
        self.inference_norm = inference_norm  # [M] bool: BN runs in inference mode for this model
        self.any_inference = bool(inference_norm.any())
        # weight name -> [M, K] flat indices of its trainable entries (SparseEntries; Stack only)
        self.entries = entries or {}

    @property
    def size(self) -> int:
        return self.inference_norm.shape[0]

    @property
    def first_has_entries(self) -> bool:
        return FIRST in self.entries

    @property
    def first_layer_frozen(self) -> bool:
        """Whether the first layer's output can be computed ahead (engine.FirstLayerCache)."""
        return False

    @staticmethod
    def gathered(template: nn.Module) -> set[str]:
        """Weights whose trainable entries get gathered gradients (SparseEntries) rather than masks."""
        return set()

    @classmethod
    def from_models(cls, models: list[nn.Module], plans: list[Plan], device="cpu"):
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
                masks[name] = torch.stack([m.float() if isinstance(m, torch.Tensor) else torch.full(p.shape[1:], float(m))
                                           for m in ms]).to(device)
            trains = masks[name] is None or bool(masks[name].any())
            params[name] = p.clone().requires_grad_(trains)
        buffers_of = [dict(m.named_buffers()) for m in models]
        buffers = {name: torch.stack([named[name] for named in buffers_of]).to(device).clone()
                   for name, _ in template.named_buffers() if not name.endswith("num_batches_tracked")}
        inference = torch.tensor([pl.norm_mode == "inference" for pl in plans], device=device)
        return cls(template, params, buffers, masks, inference, entries)

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
                          {n: i.index_select(0, keep) for n, i in self.entries.items()})

    def state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Model i's state, loadable into its module with load_state_dict."""
        sd = {n: p[i].detach().cpu().clone() for n, p in self.params.items() if not n.endswith(ENTRIES)}
        sd.update({n: b[i].cpu().clone() for n, b in self.buffers.items()})
        for name, _ in self.template.named_buffers():
            if name.endswith("num_batches_tracked"):
                sd[name] = torch.tensor(0)
        return sd

    @staticmethod
    def _per_model(x: torch.Tensor, shared) -> torch.Tensor:
        """x [S, B, ...] -> [M, B, ...]: each model's row (a copy only where a row serves several)."""
        rows = [row for row, a, b in shared for _ in range(a, b)]
        return x if rows == list(range(len(x))) else x.index_select(0, torch.tensor(rows, device=x.device))

    def eval_chunk(self, n: int, example_shape=()) -> int:
        """How many of n examples (each of example_shape, e.g. (1, 28, 28)) evaluate() passes at
        once: activations of about 2**25 floats, counting a layer's features per example."""
        width = max(p.shape[1] for p in self.params.values() if p.dim() >= 3)
        return max(256, min(n, int(2 ** 25 // max(1, self.size * width))))

    @torch.no_grad()
    def reestimate_statistics(self, batches) -> None:
        """BatchNorm running statistics re-estimated from scratch as the plain average over `batches`
        (each [B, C, H, W], the same batches for every model), as nn.BatchNorm does with
        momentum=None; parameters are untouched. Used after changing gamma/beta (an ablation), when
        the statistics of the intact network no longer describe the next layers' inputs."""
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
                self.forward(xb.unsqueeze(0), training=True, shared=[(0, 0, self.size)])
        finally:
            for h, m in zip(holders, saved):
                h.momentum = m


class Stack(StackBase):
    """A chain of blocks (`Net`: the MLP, LeNet-5) computed directly, with activations laid out
    [B, k, ...] (batch, model, features) for a block of k models:
    - a stack whose models train their layers' weights runs as one block: linear layers as one
      batched matmul over the models' weights, conv layers as one grouped convolution;
    - where no model trains a layer's weights whole (the BN-like sets and an MLP's `random`),
      every weight stays as initialised, and the models of one seed share it (runs of one seed
      share their random weights); `random`'s trained entries are a sparse correction
      (`SparseEntries`) whose gradients are gathered, never a dense weight gradient. Where
      SEED_BLOCKS asks for it, each seed's models then run as a block of their own, in which every
      layer is one matmul (or convolution) of all k models' activations ([B*k, in] rows) with the
      seed's single weight, its first layer once for the seed."""

    def __init__(self, template: Net, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                 masks: dict[str, torch.Tensor | None], inference_norm: torch.Tensor,
                 entries: dict[str, torch.Tensor] | None = None):
        super().__init__(template, params, buffers, masks, inference_norm, entries)
        self.specs = [LayerSpec(conv=isinstance(b.op, nn.Conv2d), norm=kind_of(b.norm), pool=b.pool,
                                padding=b.op.padding[0] if isinstance(b.op, nn.Conv2d) else 0,
                                momentum=getattr(b.norm, "momentum", 0.1), eps=getattr(b.norm, "eps", 1e-5))
                      for b in template.blocks]
        self._owners: dict[tuple, list[int]] = {}  # see owners
        # The values of entries[name] are params[name + ENTRIES], trained; params[name] keeps its
        # initial value (the seed's, shared with the seed's other models), and the entries act as a
        # sparse correction to it (SparseEntries, _first_entries). `base` holds their initial
        # values (a stack may be empty).
        self._rows_cols = {n: (i // params[n].shape[2], i % params[n].shape[2]) for n, i in self.entries.items()}
        self.base = {n: params[n].flatten(1).gather(1, i) for n, i in self.entries.items()}
        self._widest_later, self._cpu = widest_later(template), not params[FIRST].is_cuda  # (wide_cpu)
        self._op_names = tuple(n for i in range(len(self.specs)) for n in (f"blocks.{i}.op.weight", f"blocks.{i}.op.bias")
                               if n in params)
        # models frozen_from.. train nothing before the head (the engine sorts such models last)
        frozen = torch.ones(self.size, dtype=torch.bool)
        for n, m in masks.items():
            if not n.startswith("head.") and params[n].requires_grad:
                frozen &= torch.zeros(self.size, dtype=torch.bool) if m is None else ~m.flatten(1).ne(0).any(1).cpu()
        trains = (~frozen).nonzero()
        self.frozen_from = int(trains[-1]) + 1 if len(trains) else 0

    @staticmethod
    def gathered(template: Net) -> set[str]:
        return {f"blocks.{i}.op.weight" for i, b in enumerate(template.blocks) if isinstance(b.op, nn.Linear)}

    def eval_chunk(self, n: int, example_shape=()) -> int:
        """On a CPU, cache-sized chunks: the widest layer's activations of all models about
        EVAL_FLOATS_CPU floats, and at least 256 examples. On a GPU, where a step is bound by kernel
        launches, the larger chunks of StackBase.eval_chunk."""
        if self.params[FIRST].is_cuda:
            return super().eval_chunk(n, example_shape)
        return max(256, min(n, EVAL_FLOATS_CPU // max(1, self.size * self.example_floats(example_shape))))

    def example_floats(self, example_shape) -> int:
        """A layer's outputs per example and model: its features, times the input's H x W for a conv
        layer (an upper bound: pooling and unpadded kernels shrink the maps)."""
        pixels = math.prod(example_shape[1:]) if len(example_shape) == 3 else 1
        return max(self.params[f"blocks.{i}.op.weight"].shape[1] * (pixels if spec.conv else 1)
                   for i, spec in enumerate(self.specs))

    @property
    def first_layer_frozen(self) -> bool:
        """No model trains the first layer's weight whole: its dense part depends on the input alone
        (entries, where some model trains them, are added by _first_entries)."""
        return not self.params[FIRST].requires_grad

    @property
    def weights_frozen(self) -> bool:
        """No model trains any layer's weight or bias whole: they never change (entries aside)."""
        return not any(self.params[n].requires_grad for n in self._op_names)

    def owners(self, names: tuple[str, ...]) -> list[int]:
        """Per model, the first model of the stack whose tensors `names` are all identical to its
        own (computed once per stack: only asked of tensors that no model trains)."""
        if names not in self._owners:
            ts = [self.params[n] for n in names if n in self.params]
            reps, owners = [], []
            for m in range(self.size):
                o = next((r for r in reps if all(torch.equal(t[r], t[m]) for t in ts)), None)
                if o is None:
                    reps.append(m)
                owners.append(m if o is None else o)
            self._owners[names] = owners
        return self._owners[names]

    def first_layer_owners(self) -> list[int]:
        """Per model, the first model of the stack with identical first-layer weights and bias. Runs
        of one seed share their random weights, so a frozen first layer has one owner per seed: its
        output is computed once per seed and shared (only valid while no model trains that layer)."""
        return self.owners((FIRST, "blocks.0.op.bias"))

    def seed_runs(self, shared) -> list[tuple[int, int, int]] | None:
        """The blocks of a stack whose weights are all frozen: per (row, a, b) of `shared`, the
        runs of models that share every layer's weights (one per seed), as (row, a, b); None where
        no two models would share a block (nothing to gain over one block of per-model weights)."""
        if not wide_cpu(SEED_BLOCKS, self._widest_later, self._cpu) or not self.weights_frozen or not self.size:
            return None
        own = self.owners(self._op_names)
        runs = []
        for row, a, b in shared:
            s = a
            for m in range(a + 1, b):
                if own[m] != own[s]:
                    runs.append((row, s, m))
                    s = m
            runs.append((row, s, b))
        return runs if runs and max(b - a for _, a, b in runs) > 1 else None

    def state_dict(self, i: int) -> dict[str, torch.Tensor]:
        sd = super().state_dict(i)
        for n, idx in self.entries.items():  # the weight kept its initial value: its trained entries go in here
            sd[n].view(-1)[idx[i].cpu()] = self.params[n + ENTRIES][i].detach().cpu()
        return sd

    def momentum_holders(self) -> list:
        """What holds each BatchNorm layer's momentum (reestimate_statistics): the layer specs."""
        return self.specs

    # ------------------------------------------------------------------ compute
    def _first_entries(self, out: torch.Tensor, h: torch.Tensor, a: int, b: int) -> torch.Tensor:
        """out [B, k, out], the first layer's output with its initial weights for models a..b (from
        FirstLayerCache or computed once per seed), corrected for their trained entries:
        out[:, m, i] += (v - v0) * h[:, m, j] for each entry (i, j) of model m; h [B, k, in] is the
        input. A gather and a scatter-add of B x k x K values, not a dense product; autograd gives v
        its gradient (sum over the batch of delta[b, i] * h[b, j]), as SparseEntries does for the
        later layers."""
        rows, cols = self._rows_cols[FIRST]
        B, k = h.shape[:2]
        hg = h.reshape(B, k, -1).gather(2, _models(cols, a, b).unsqueeze(0).expand(B, -1, -1))  # [B, k, K]
        delta = _models(self.params[FIRST + ENTRIES], a, b) - _models(self.base[FIRST], a, b)  # [k, K]
        return out.scatter_add(2, _models(rows, a, b).unsqueeze(0).expand(B, -1, -1), (hg * delta).to(out.dtype))

    def _affine(self, h, i: int, a: int, b: int, normalize: bool):
        """A per-example norm (layernorm: each example over its features, per model) or none, then
        gamma/beta; normalize=False is the scale and shift alone (also ending BatchNorm's mixed-mode path)."""
        spec, k = self.specs[i], b - a
        if normalize:
            h = (F.group_norm(h.flatten(1, 2), k, eps=spec.eps).view(h.shape) if spec.conv
                 else F.layer_norm(h, h.shape[-1:], eps=spec.eps))
        shape = (k, -1, 1, 1) if spec.conv else (k, -1)
        h = h * _models(self.params[f"blocks.{i}.norm.weight"], a, b).reshape(shape)
        beta = self.params.get(f"blocks.{i}.norm.bias")
        return h if beta is None else h + _models(beta, a, b).reshape(shape)

    def _norm(self, h, i: int, a: int, b: int, training: bool):
        """BatchNorm with per-model statistics: the k*C channels of models a..b as one F.batch_norm."""
        spec = self.specs[i]
        if not spec.norm.batch_statistics:
            return self._affine(h, i, a, b, normalize=spec.norm.per_example)
        if training and self.any_inference:
            return self._norm_mixed(h, i, a, b)
        rm, rv = self.buffers[f"blocks.{i}.norm.running_mean"], self.buffers[f"blocks.{i}.norm.running_var"]
        gamma, beta = self.params[f"blocks.{i}.norm.weight"], self.params.get(f"blocks.{i}.norm.bias")
        y = F.batch_norm(h.flatten(1, 2), _models(rm, a, b).view(-1), _models(rv, a, b).view(-1),
                         _models(gamma, a, b).reshape(-1), None if beta is None else _models(beta, a, b).reshape(-1),
                         training, spec.momentum, spec.eps)
        return y.view(h.shape)

    def _norm_mixed(self, h, i: int, a: int, b: int):
        """Training with some models' BN in inference mode (running statistics, left unchanged)."""
        spec, k = self.specs[i], b - a
        rm = _models(self.buffers[f"blocks.{i}.norm.running_mean"], a, b)
        rv = _models(self.buffers[f"blocks.{i}.norm.running_var"], a, b)
        var, mean = torch.var_mean(h, dim=(0, 3, 4) if spec.conv else (0,), keepdim=True, correction=0)
        inf = _models(self.inference_norm, a, b).view(k, 1)
        with torch.no_grad():
            n = h.numel() // (k * rm.shape[1])
            rm.copy_(torch.where(inf, rm, torch.lerp(rm, mean.reshape(k, -1), spec.momentum)))
            rv.copy_(torch.where(inf, rv, torch.lerp(rv, var.reshape(k, -1) * (n / max(n - 1, 1)), spec.momentum)))
        mean = torch.where(inf, rm, mean.reshape(k, -1)).reshape(mean.shape)
        var = torch.where(inf, rv, var.reshape(k, -1)).reshape(var.shape)
        return self._affine((h - mean) * torch.rsqrt(var + spec.eps), i, a, b, normalize=False)

    @torch.no_grad()
    def first_layer(self, x: torch.Tensor, model: int) -> torch.Tensor:
        """Model `model`'s first layer (before its normalization) on x [N, C, H, W]: [N, out] or [N, C', H', W']."""
        spec = self.specs[0]
        w, bias = self.params[FIRST][model], self.params.get("blocks.0.op.bias")
        b = None if bias is None else bias[model]
        if spec.conv:
            return F.conv2d(x, w, b, padding=spec.padding)
        x = x.reshape(len(x), -1)
        return x @ w.t() if b is None else torch.addmm(b, x, w.t())

    def _shared_first_layer(self, x: torch.Tensor, shared) -> torch.Tensor:
        """The frozen first layer for one block of all models, where models share input batches:
        models [a, b) all read x[row]. Each distinct first layer among them (one per seed, see
        first_layer_owners) runs once, all of them stacked as one matmul (or one convolution), and
        models that share one share its output: [B, M, ...]."""
        spec = self.specs[0]
        w, bias = self.params[FIRST], self.params.get("blocks.0.op.bias")
        owners = self.first_layer_owners()
        outs = []
        for row, a, b in shared:
            reps = sorted(set(owners[a:b]))
            if reps == list(range(a, b)):  # all distinct: a view of the stacked weights
                wk, bk = w[a:b], None if bias is None else bias[a:b]
            else:
                sel = torch.tensor(reps, device=w.device)
                wk, bk = w.index_select(0, sel), None if bias is None else bias.index_select(0, sel)
            wk, bk = wk.reshape(-1, *w.shape[2:]), None if bk is None else bk.reshape(-1)  # [R*out, ...]
            if spec.conv:
                h = F.conv2d(x[row], wk, bk, padding=spec.padding)  # [B, R*C, H, W]
            else:
                xr = x[row].reshape(x.shape[1], -1)
                h = xr @ wk.t() if bk is None else torch.addmm(bk, xr, wk.t())  # [B, R*out]
            h = h.view(h.shape[0], len(reps), -1, *h.shape[2:])  # [B, R, out] or [B, R, C, H, W]
            if len(reps) < b - a:  # models that share a first layer share its output
                h = h.index_select(1, torch.tensor([reps.index(owners[m]) for m in range(a, b)], device=h.device))
            outs.append(h)
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    def _op(self, h, i: int, a: int, b: int, shared_weights: bool):
        """Block i's conv or linear layer for models a..b (h [B, k, ...]): with the weights of model a
        for all of them where they share it, else with each model's own."""
        spec = self.specs[i]
        name = f"blocks.{i}.op.weight"
        w, bias = self.params[name], self.params.get(f"blocks.{i}.op.bias")
        B, k = h.shape[:2]
        if spec.conv:
            if shared_weights:  # one convolution of all k models' maps
                out = F.conv2d(h.flatten(0, 1), w[a], None if bias is None else bias[a], padding=spec.padding)
                return out.view(B, k, *out.shape[1:])
            if h.is_cuda if GROUPED_CONV is None else GROUPED_CONV:  # one grouped convolution
                out = F.conv2d(h.flatten(1, 2), _models(w, a, b).reshape(-1, *w.shape[2:]),
                               None if bias is None else _models(bias, a, b).reshape(-1), padding=spec.padding, groups=k)
                return out.view(B, k, -1, *out.shape[2:])
            # on CPU a convolution per model is 2-4x faster than the grouped kernel
            return torch.stack([F.conv2d(h[:, m], w[a + m], None if bias is None else bias[a + m], padding=spec.padding)
                                for m in range(k)], dim=1)
        h = h.reshape(B, k, -1)  # a conv layer's maps flattened per model
        if shared_weights:
            wk, bk = w[a], None if bias is None else bias[a]
        else:
            wk, bk = _models(w, a, b), None if bias is None else _models(bias, a, b)
        if name in self.entries:  # trainable entries only: a sparse correction, their gradients gathered
            rows, cols = self._rows_cols[name]
            out = SparseEntries.apply(h, _models(self.params[name + ENTRIES], a, b), wk, _models(self.base[name], a, b),
                                      _models(rows, a, b).unsqueeze(0), _models(cols, a, b).unsqueeze(0))
            return out if bk is None else out + bk
        if not shared_weights and w.shape[1] < 64 <= w.shape[2]:  # few outputs of many inputs: W @ h^T is ~3x faster on CPU
            out = torch.bmm(wk, h.permute(1, 2, 0)).permute(2, 0, 1)
            return out if bk is None else out + bk
        return _product(h, wk, bias=bk)  # shared: one matmul of all k models' rows with their one weight

    def _layers(self, h, start: int, a: int, b: int, shared_weights: bool, training: bool, grad: bool) -> torch.Tensor:
        """Blocks start.. and the head for models a..b on h [B, k, ...] -> logits [k, B, classes];
        the head with gradients where `grad` (the blocks as the caller's grad mode says)."""
        for i in range(len(self.specs)):
            spec = self.specs[i]
            if i >= start:
                h = self._op(h, i, a, b, shared_weights)
            if spec.norm.build is not None:
                h = self._norm(h, i, a, b, training)
            if spec.pool:  # max-pool and ReLU commute; pooling first makes the ReLU 4x smaller
                h = F.max_pool2d(h.flatten(1, 2), 2).view(*h.shape[:3], h.shape[3] // 2, h.shape[4] // 2)
            h = torch.relu(h)
        with torch.set_grad_enabled(grad):
            hm = h.reshape(h.shape[0], b - a, -1).transpose(0, 1)  # [k, B, F]
            head_w, head_b = _models(self.params["head.weight"], a, b), _models(self.params["head.bias"], a, b)
            return torch.baddbmm(head_b.unsqueeze(1), hm, head_w.transpose(1, 2))

    def forward(self, x: torch.Tensor, training: bool, shared=None, first_done: bool = False,
                raw: torch.Tensor | None = None) -> torch.Tensor:
        """x: [M, B, C, H, W] (one input batch per model) -> logits [M, B, classes].

        shared: models that see the same batch, as (row, a, b) triples covering 0..M: models a..b-1
        read x[row], x being [S, B, C, H, W]. Where no model trains the first layer's weights, each
        batch then goes through each distinct first layer once (one per seed) for all its models;
        otherwise each model gets its own copy of its batch. first_done: x [S, B, ...] is already
        the first layer's output of each row (a frozen first layer computed ahead), and raw, where
        the first layer has trained entries, the input batches it was computed from. Where no model
        trains any layer's weights, each seed's models run as a block of their own (seed_runs).
        Where FROZEN_TRUNKS asks for it, models frozen_from.. (which train nothing before the head)
        run as a part of their own whose trunk has no backward pass."""
        F_, M = self.frozen_from, self.size
        if not 0 < F_ < M or not torch.is_grad_enabled() or not wide_cpu(FROZEN_TRUNKS, self._widest_later, self._cpu):
            return self._part(x, training, shared, first_done, raw, True)
        if shared is None:  # a batch per model (x [M, B, ...]): each part reads its models' rows
            shared = [(m, m, m + 1) for m in range(M)]
        head = [(row, a, min(b, F_)) for row, a, b in shared if a < F_]
        tail = [(row, max(a, F_), b) for row, a, b in shared if b > F_]
        return torch.cat([self._part(x, training, head, first_done, raw, True),
                          self._part(x, training, tail, first_done, raw, False)])

    def _part(self, x: torch.Tensor, training: bool, shared, first_done: bool, raw, trunk_grad: bool) -> torch.Tensor:
        """Models a..b, the models `shared` covers (all M where it is None), as forward() says;
        without trunk_grad, everything before the head runs without gradients."""
        grad = torch.is_grad_enabled()
        a, b = (0, self.size) if not shared else (shared[0][1], shared[-1][2])
        runs = None if shared is None or (training and self.any_inference) else self.seed_runs(shared)
        if runs is not None:
            with torch.set_grad_enabled(grad and trunk_grad):
                blocks = [self._seed_block(x, row, a, b, training, first_done, raw, grad) for row, a, b in runs]
            return torch.cat(blocks)  # (the blocks' heads have gradients: so has their concatenation)
        with torch.set_grad_enabled(grad and trunk_grad):
            if first_done:  # [B, M, ...]: each model its row's
                h, start = self._per_model(x, shared).transpose(0, 1), 1
            elif shared is None:
                h, start = x.transpose(0, 1), 0
            elif self.first_layer_frozen:
                h, start = self._shared_first_layer(x, shared), 1
            else:
                parts = [x[row].expand(b - a, *x.shape[1:]) for row, a, b in shared]  # [M, B, ...], then [B, M, ...]
                h, start = (parts[0] if len(parts) == 1 else torch.cat(parts)).transpose(0, 1), 0
            if start and self.first_has_entries:  # the first layer's input, per model
                h = self._first_entries(h, self._per_model(raw if first_done else x, shared).transpose(0, 1), a, b)
            return self._layers(h, start, a, b, False, training, grad)

    def _seed_block(self, x, row: int, a: int, b: int, training: bool, first_done: bool, raw, grad: bool) -> torch.Tensor:
        """Models a..b, which read x[row] and share every layer's weights: the first layer once
        (or its output x[row], computed ahead), then every layer as one product with the shared
        weight -> logits [b - a, B, classes]."""
        h = x[row] if first_done else self.first_layer(x[row], a)  # [B, ...]: the first layer, once
        h = h.unsqueeze(1).expand(-1, b - a, *h.shape[1:])
        if self.first_has_entries:
            inputs = (raw if first_done else x)[row]
            h = self._first_entries(h, inputs.reshape(len(inputs), 1, -1).expand(-1, b - a, -1), a, b)
        return self._layers(h, 1, a, b, True, training, grad)


class ModuleStack(StackBase):
    """M models of an architecture that is not a chain of blocks (the CIFAR ResNets and VGGs): each
    model runs the template's own forward with its slice of the stacked parameters and buffers
    (torch.func.functional_call), so residual additions and pooling are the module's, not a copy.
    On CUDA the M models run as one call under torch.func.vmap, where every convolution becomes one
    grouped convolution; on the CPU (and where some models run BatchNorm in inference mode) one call
    per model, which measured faster there (as for LeNet-5's convolutions, see GROUPED_CONV).
    The stacked SGD step, masks and per-model early stopping are the engine's, as for `Stack`."""

    VMAP: bool | None = None  # None: vmap on CUDA, a call per model on CPU; True/False force one (tests)

    def _call(self, params, buffers, x):
        # num_batches_tracked is not stacked: the template's own counts (unused: BN momentum is set)
        return torch.func.functional_call(self.template, (params, buffers), (x,))

    def forward(self, x: torch.Tensor, training: bool, shared=None, first_done: bool = False,
                raw: torch.Tensor | None = None) -> torch.Tensor:
        """x [M, B, C, H, W], one batch per model; or [S, B, C, H, W] read by models as `shared`
        says (Stack.forward) -> logits [M, B, classes]."""
        M = self.size
        xs = x if shared is None else self._per_model(x, shared)
        self.template.train(training)
        vmap = xs.is_cuda if self.VMAP is None else self.VMAP
        if vmap and not (training and self.any_inference):
            return torch.func.vmap(self._call, randomness="error")(self.params, self.buffers, xs)
        out = []
        mixed = batch_norm_layers(self.template) if training and self.any_inference else []
        for m in range(M):
            for mod in mixed:  # this model's BatchNorm layers in inference mode where its plan says so
                mod.train(not bool(self.inference_norm[m]))
            out.append(self._call({n: p[m] for n, p in self.params.items()},
                                  {n: b[m] for n, b in self.buffers.items()}, xs[m]))
        self.template.train(training)
        return torch.stack(out)

    def eval_chunk(self, n: int, example_shape=()) -> int:
        """Convolutional activations are [C, H, W] per example: about 2**25 floats, counting every
        example as a 32 x 32 map of the widest convolution's channels (an upper bound)."""
        width = max(p.shape[1] for p in self.params.values() if p.dim() == 5)
        return max(64, min(n, 2 ** 25 // (max(1, self.size) * width * 1024)))

    def momentum_holders(self) -> list:
        """What holds each BatchNorm layer's momentum (reestimate_statistics): the template's layers."""
        return batch_norm_layers(self.template)

def stack_of(models: list[nn.Module], plans: list[Plan], device="cpu") -> StackBase:
    """The stack that trains these models: `Stack` for a chain of blocks (`Net`), else `ModuleStack`."""
    return (Stack if isinstance(models[0], Net) else ModuleStack).from_models(models, plans, device)

"""M models of one architecture as one vectorized model.

Every parameter and buffer of the M `Net`s is stacked along a new leading dimension; linear layers
run as one batched matmul (`torch.baddbmm`), conv layers as one grouped convolution, BatchNorm
keeps per-model statistics. A `Stack` of one model computes exactly what its `Net` computes.

Activations are laid out [M, B, F] for linear layers and [B, M*C, H, W] for conv layers.
"""
from __future__ import annotations

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


ENTRIES = ":entries"  # suffix of the parameter that holds a weight's trainable entries (see EntryLinear)
FIRST = "blocks.0.op.weight"


class EntryLinear(torch.autograd.Function):
    """h [M, B, in] @ W^T for weights W [M, out, in] of which only the entries idx [M, K] (flat
    indices into out*in) train; `v` [M, K] is those entries, kept equal to W's (Stack.sync_entries).
    The gradient of v is gathered: dL/dW[i, j] = sum over the batch of delta[b, i] * h[b, j], for the
    K chosen (i, j) only, never the dense [out, in] weight gradient (the `random` baseline trains
    784 of 614,656 weights of a 784x784 layer)."""

    @staticmethod
    def forward(ctx, h, v, w, rows, cols):
        h = h.float()  # in fp32 also under bf16 autocast (the gathered gradient needs h and delta alike)
        ctx.save_for_backward(h, w, rows, cols)
        with torch.autocast(h.device.type, enabled=False):
            return torch.bmm(h, w.transpose(1, 2))

    @staticmethod
    def backward(ctx, g):
        h, w, rows, cols = ctx.saved_tensors
        grad_h = torch.bmm(g, w) if ctx.needs_input_grad[0] else None
        B = g.shape[1]
        gi = g.gather(2, rows.unsqueeze(1).expand(-1, B, -1))   # [M, B, K]: delta at each entry's output
        hj = h.gather(2, cols.unsqueeze(1).expand(-1, B, -1))   # [M, B, K]: input at each entry's input
        return grad_h, torch.einsum("mbk,mbk->mk", gi, hj), None, None, None


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
        # weight name -> [M, K] flat indices of its trainable entries (EntryLinear; Stack only)
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

    def sync_entries(self) -> None:
        """Write trained entries back into their weights after an optimizer step (Stack only)."""

    @staticmethod
    def gathered(template: nn.Module) -> set[str]:
        """Weights whose trainable entries get gathered gradients (EntryLinear) rather than masks."""
        return set()

    @classmethod
    def from_models(cls, models: list[nn.Module], plans: list[Plan], device="cpu"):
        template = models[0]
        params, masks, entries = {}, {}, {}
        linear = cls.gathered(template)
        for name, _ in template.named_parameters():
            p = torch.stack([dict(m.named_parameters())[name].detach() for m in models]).to(device)
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
        buffers = {name: torch.stack([dict(m.named_buffers())[name] for m in models]).to(device).clone()
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
        if FIRST in self.entries:  # the first layer keeps its initial weight: its trained entries go in here
            sd[FIRST].view(-1)[self.entries[FIRST][i].cpu()] = self.params[FIRST + ENTRIES][i].detach().cpu()
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

    def eval_chunk(self, n: int) -> int:
        """How many examples evaluate() passes at once: activations of about 2**25 floats."""
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
    """A chain of blocks (`Net`: the MLP, LeNet-5) computed directly: linear layers as one batched
    matmul, conv layers as one grouped convolution, a frozen first layer once per seed, `random`'s
    entries with gathered gradients."""

    def __init__(self, template: Net, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                 masks: dict[str, torch.Tensor | None], inference_norm: torch.Tensor,
                 entries: dict[str, torch.Tensor] | None = None):
        super().__init__(template, params, buffers, masks, inference_norm, entries)
        self.specs = [LayerSpec(conv=isinstance(b.op, nn.Conv2d), norm=kind_of(b.norm), pool=b.pool,
                                padding=b.op.padding[0] if isinstance(b.op, nn.Conv2d) else 0,
                                momentum=getattr(b.norm, "momentum", 0.1), eps=getattr(b.norm, "eps", 1e-5))
                      for b in template.blocks]
        self._owners: list[int] | None = None  # see first_layer_owners
        # The values of entries[name] are params[name + ENTRIES], trained, and mirrored into
        # params[name], frozen. The first layer is the exception: its weight stays as initialised
        # (the seed's, shared with the seed's other models) and its entries act as a sparse
        # correction (first_entries), so that its dense part can still be computed once per seed
        # (engine.FirstLayerCache).
        self._rows_cols = {n: (i // params[n].shape[2], i % params[n].shape[2]) for n, i in self.entries.items()}
        self.first_base = (params[FIRST].flatten(1).gather(1, self.entries[FIRST])  # (a stack may be empty)
                           if FIRST in self.entries else None)  # the initial values of those entries

    @staticmethod
    def gathered(template: Net) -> set[str]:
        return {f"blocks.{i}.op.weight" for i, b in enumerate(template.blocks) if isinstance(b.op, nn.Linear)}

    @property
    def first_layer_frozen(self) -> bool:
        """No model trains the first layer's weight whole: its dense part depends on the input alone
        (entries, where some model trains them, are added by first_entries)."""
        return not self.params[FIRST].requires_grad

    @torch.no_grad()
    def sync_entries(self) -> None:
        """Write the trained entries back into their weights (after each optimizer step), except
        the first layer's (see __init__)."""
        for n, idx in self.entries.items():
            if n != FIRST:
                w = self.params[n]
                w.flatten(1).scatter_(1, idx, self.params[n + ENTRIES].detach())  # a view: w is contiguous

    def first_entries(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """h [M, B, out], the first layer's output with its initial weights, corrected for the
        trained entries: out[b, i] += (v - v0) * x[b, j] for each entry (i, j); x [M, B, in] is each
        model's input. A gather and a scatter-add of B x K values, not a dense product; autograd
        gives v its gradient (sum over b of delta[b, i] * x[b, j])."""
        rows, cols = self._rows_cols[FIRST]
        B = x.shape[1]
        xg = x.reshape(x.shape[0], B, -1).gather(2, cols.unsqueeze(1).expand(-1, B, -1))  # [M, B, K]
        delta = (self.params[FIRST + ENTRIES] - self.first_base).unsqueeze(1)           # [M, 1, K]
        return h.scatter_add(2, rows.unsqueeze(1).expand(-1, B, -1), (xg * delta).to(h.dtype))  # bf16 under autocast

    def momentum_holders(self) -> list:
        """What holds each BatchNorm layer's momentum (reestimate_statistics): the layer specs."""
        return self.specs

    # ------------------------------------------------------------------ compute
    def _affine(self, h, i: int, conv: bool, normalize: bool):
        """A per-example norm (layernorm: each example over its features, per model) or none, then gamma/beta;
        normalize=False is the scale and shift alone (also ending BatchNorm's mixed-mode path)."""
        M = self.size
        if normalize:
            h = F.group_norm(h, M, eps=self.specs[i].eps) if conv else F.layer_norm(h, h.shape[-1:], eps=self.specs[i].eps)
        shape = (1, -1, 1, 1) if conv else (M, 1, -1)
        h = h * self.params[f"blocks.{i}.norm.weight"].reshape(shape)
        beta = self.params.get(f"blocks.{i}.norm.bias")
        return h if beta is None else h + beta.reshape(shape)

    def _norm(self, h, i: int, training: bool, conv: bool):
        """BatchNorm with per-model statistics: the M*C channels of all models as one F.batch_norm."""
        spec = self.specs[i]
        M = self.size
        if not spec.norm.batch_statistics:
            return self._affine(h, i, conv, normalize=spec.norm.per_example)
        rm, rv = self.buffers[f"blocks.{i}.norm.running_mean"], self.buffers[f"blocks.{i}.norm.running_var"]
        gamma = self.params[f"blocks.{i}.norm.weight"]
        beta = self.params.get(f"blocks.{i}.norm.bias")
        if training and self.any_inference:
            return self._norm_mixed(h, i, conv)
        x = h if conv else h.transpose(0, 1).reshape(h.shape[1], -1)  # [M, B, C] -> [B, M*C]
        y = F.batch_norm(x, rm.view(-1), rv.view(-1), gamma.reshape(-1), None if beta is None else beta.reshape(-1),
                         training, spec.momentum, spec.eps)
        return y if conv else y.view(h.shape[1], M, -1).transpose(0, 1)

    def _norm_mixed(self, h, i: int, conv: bool):
        """Training with some models' BN in inference mode (running statistics, left unchanged)."""
        spec = self.specs[i]
        M = self.size
        shape = (1, -1, 1, 1) if conv else (M, 1, -1)
        rm, rv = self.buffers[f"blocks.{i}.norm.running_mean"], self.buffers[f"blocks.{i}.norm.running_var"]
        var, mean = torch.var_mean(h, dim=(0, 2, 3) if conv else (1,), keepdim=True, correction=0)
        inf = self.inference_norm.view(M, 1)
        with torch.no_grad():
            n = h.numel() // (M * rm.shape[1])
            rm.copy_(torch.where(inf, rm, torch.lerp(rm, mean.reshape(M, -1), spec.momentum)))
            rv.copy_(torch.where(inf, rv, torch.lerp(rv, var.reshape(M, -1) * (n / max(n - 1, 1)), spec.momentum)))
        mean = torch.where(inf, rm, mean.reshape(M, -1)).reshape(shape)
        var = torch.where(inf, rv, var.reshape(M, -1)).reshape(shape)
        return self._affine((h - mean) * torch.rsqrt(var + spec.eps), i, conv, normalize=False)

    def first_layer_owners(self) -> list[int]:
        """Per model, the first model of the stack whose first-layer weights and bias are identical
        to its own. Runs of one seed share their random weights, so a frozen first layer has one
        owner per seed: its output is computed once per seed and shared (only valid while no model
        trains that layer; the stack's first layer is then never updated)."""
        if self._owners is None:
            w, bias = self.params[FIRST], self.params.get("blocks.0.op.bias")
            reps, owners = [], []
            for m in range(self.size):
                same = (r for r in reps if torch.equal(w[r], w[m]) and (bias is None or torch.equal(bias[r], bias[m])))
                o = next(same, None)
                if o is None:
                    reps.append(m)
                owners.append(m if o is None else o)
            self._owners = owners
        return self._owners

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

    def _shared_first_layer(self, x: torch.Tensor, shared, spec: LayerSpec) -> torch.Tensor:
        """The frozen first layer when models share input batches: models [a, b) all read x[row].
        Each distinct first layer among them (one per seed, see first_layer_owners) runs once, all of
        them stacked as one matmul (or one convolution), and models that share one share its output."""
        w, bias = self.params["blocks.0.op.weight"], self.params.get("blocks.0.op.bias")
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
                idx = [reps.index(owners[m]) for m in range(a, b)]
                h = h.index_select(1, torch.tensor(idx, device=h.device))
            outs.append(h.flatten(1, 2) if spec.conv else h.transpose(0, 1))  # [B, (b-a)*C, H, W] / [b-a, B, out]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1 if spec.conv else 0)

    def _from_first(self, x: torch.Tensor, shared) -> torch.Tensor:
        """x [S, B, ...]: the first layer's output for each row (seed) of `shared`, computed before
        (engine.FirstLayerCache); each model takes its row's."""
        h = self._per_model(x, shared)
        return h.transpose(0, 1).flatten(1, 2) if self.specs[0].conv else h  # [B, M*C, H, W] / [M, B, out]

    def _op(self, h, i: int, spec: LayerSpec, conv_layout: bool, M: int, B: int):
        """Block i's conv or linear layer for all M models; returns h and whether it is in conv layout."""
        w, bias = self.params[f"blocks.{i}.op.weight"], self.params.get(f"blocks.{i}.op.bias")
        if spec.conv:
            if h.is_cuda if GROUPED_CONV is None else GROUPED_CONV:  # one grouped convolution: [B, M*C, H, W]
                if not conv_layout:
                    h = h.transpose(0, 1).reshape(B, -1, *h.shape[-2:])
                return F.conv2d(h, w.reshape(-1, *w.shape[2:]), None if bias is None else bias.reshape(-1),
                                padding=spec.padding, groups=M), True
            # on CPU a convolution per model is 2-4x faster than the grouped kernel
            parts = h.view(B, M, -1, *h.shape[-2:]).unbind(1) if conv_layout else h.unbind(0)
            return torch.cat([F.conv2d(part, w[m], None if bias is None else bias[m], padding=spec.padding)
                              for m, part in enumerate(parts)], dim=1), True
        if conv_layout:  # [B, M*C, H, W] -> [M, B, C*H*W]
            h = h.reshape(B, M, -1).transpose(0, 1)
        h = h.reshape(M, B, -1)
        name = f"blocks.{i}.op.weight"
        if name == FIRST and name in self.entries:  # initial weights, then the trained entries' correction
            return self.first_entries(torch.bmm(h, w.transpose(1, 2)), h), False
        if name in self.entries:  # trainable entries only: their gradients gathered, no dense weight gradient
            rows, cols = self._rows_cols[name]
            h = EntryLinear.apply(h, self.params[name + ENTRIES], w, rows, cols)
            return (h if bias is None else h + bias.unsqueeze(1)), False
        if w.shape[1] < 64 <= w.shape[2]:  # few outputs of many inputs: W @ h^T is ~3x faster on CPU
            h = torch.bmm(w, h.transpose(1, 2)).transpose(1, 2)
            return (h if bias is None else h + bias.unsqueeze(1)), False
        return (torch.bmm(h, w.transpose(1, 2)) if bias is None
                else torch.baddbmm(bias.unsqueeze(1), h, w.transpose(1, 2))), False

    def forward(self, x: torch.Tensor, training: bool, shared=None, first_done: bool = False,
                raw: torch.Tensor | None = None) -> torch.Tensor:
        """x: [M, B, C, H, W] (one input batch per model) -> logits [M, B, classes].

        shared: models that see the same batch, as (row, a, b) triples covering 0..M: models a..b-1
        read x[row], x being [S, B, C, H, W]. Where no model trains the first layer's weights, each
        batch then goes through each distinct first layer once (one per seed) for all its models;
        otherwise each model gets its own copy of its batch. first_done: x [S, B, ...] is already
        the first layer's output of each row (a frozen first layer computed ahead), and raw, where
        the first layer has trained entries, the input batches it was computed from."""
        P = self.params
        M, B = self.size, x.shape[1]
        conv_layout = False
        start = 0
        if first_done:
            h = self._from_first(x, shared)
            conv_layout, start = self.specs[0].conv, 1
            if self.first_has_entries:
                h = self.first_entries(h, self._per_model(raw, shared))
        elif shared is None:
            h = x
        elif self.first_layer_frozen:
            h = self._shared_first_layer(x, shared, self.specs[0])
            conv_layout = self.specs[0].conv
            start = 1
            if self.first_has_entries:
                h = self.first_entries(h, self._per_model(x, shared))
        else:
            h = torch.cat([x[row].expand(b - a, *x.shape[1:]) for row, a, b in shared]) if len(shared) > 1 \
                else x[shared[0][0]].expand(M, *x.shape[1:])
        for i, spec in enumerate(self.specs):
            if i >= start:
                h, conv_layout = self._op(h, i, spec, conv_layout, M, B)
            if spec.norm.build is not None:
                h = self._norm(h, i, training, spec.conv)
            if spec.pool:  # max-pool and ReLU commute; pooling first makes the ReLU 4x smaller
                h = F.max_pool2d(h, 2)
            h = torch.relu(h)
        if conv_layout:
            h = h.reshape(B, M, -1).transpose(0, 1)
        h = h.reshape(M, B, -1)
        return torch.baddbmm(P["head.bias"].unsqueeze(1), h, P["head.weight"].transpose(1, 2))


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

    def eval_chunk(self, n: int) -> int:
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

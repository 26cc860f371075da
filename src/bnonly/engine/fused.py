"""A stack of chains of blocks (registry/nets.py's `Net`: the MLP and LeNet-5), computed directly.

Activations are laid out [B, M, ...] (batch, model, features). Linear layers run as one batched
matmul over the models' weights, convolutions as one grouped convolution (or one per model, as
EngineOptions.grouped_conv says), BatchNorm as one F.batch_norm over the M x C channels (so each
model keeps its own statistics). Where no model trains the first layer's weight whole, every model
of a seed has that seed's first layer: it runs once per seed (Batch.rows), or not at all where its
output was computed ahead (Batch.first). `random`'s trained entries of a frozen linear weight are a
sparse correction whose gradients are gathered (SparseEntries), never a dense weight gradient:
that is what lets `random` share a stack, and the first layer, with `bn`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..registry.nets import Net
from ..registry.norms import NormKind, kind_of
from .stack import ENTRIES, Batch, Stack

FIRST = "blocks.0.op.weight"
# a layer with fewer outputs than this, fed by at least this many inputs, runs as W @ h^T: a CPU's faster way round
NARROW = 64


def batched_product(h: torch.Tensor, w: torch.Tensor, transpose: bool = True,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """h [B, M, n] times each model's w [M, out, in] (transposed where `transpose`), plus bias [M, out]."""
    hm, wt = h.transpose(0, 1), w.transpose(1, 2) if transpose else w
    return (torch.bmm(hm, wt) if bias is None else torch.baddbmm(bias.unsqueeze(1), hm, wt)).transpose(0, 1)


class SparseEntries(torch.autograd.Function):
    """A frozen linear layer whose trained entries (the `random` baseline) act as a sparse
    correction: out[:, m] = h[:, m] @ w_m^T + sum over model m's entries e = (i, j) of
    (v - v0)[m, e] * h[:, m, j] at output i. h [B, M, in]; w [M, out, in]; v, v0 [M, K] the
    entries' trained and initial values; rows, cols [1, M, K] their (i, j). The entries' gradient is
    gathered, sum over the batch of delta[b, m, i] * h[b, m, j] for the chosen (i, j) only, never the
    dense [out, in] weight gradient (784 of 614,656 weights of a 784x784 layer train)."""

    @staticmethod
    def forward(ctx, h, v, w, v0, rows, cols):
        h = h.float()  # in fp32 also under bf16 autocast (the gathered gradient needs h and delta alike)
        with torch.autocast(h.device.type, enabled=False):
            B = h.shape[0]
            delta = v - v0
            out = batched_product(h, w)
            hj = h.gather(2, cols.expand(B, -1, -1))  # [B, M, K]: the input at each entry's input
            out.scatter_add_(2, rows.expand(B, -1, -1), hj * delta)
        ctx.save_for_backward(hj, w, delta, rows, cols)
        return out

    @staticmethod
    def backward(ctx, g):
        hj, w, delta, rows, cols = ctx.saved_tensors
        B = g.shape[0]
        gi = g.gather(2, rows.expand(B, -1, -1))  # [B, M, K]: delta at each entry's output
        grad_h = None
        if ctx.needs_input_grad[0]:
            grad_h = batched_product(g, w, transpose=False)
            grad_h.scatter_add_(2, cols.expand(B, -1, -1), gi * delta)
        return grad_h, (gi * hj).sum(0), None, None, None, None  # a product and a sum: faster than an einsum


@dataclass
class LayerSpec:
    conv: bool
    norm: NormKind     # the registry entry of the block's normalization layer
    pool: bool
    padding: int = 0
    momentum: float = 0.1
    eps: float = 1e-5


class FusedStack(Stack):
    """M `Net`s as one: see the module's docstring."""

    def __init__(self, template: Net, *args):
        super().__init__(template, *args)
        self.specs = [LayerSpec(conv=isinstance(b.op, nn.Conv2d), norm=kind_of(b.norm), pool=b.pool,
                                padding=b.op.padding[0] if isinstance(b.op, nn.Conv2d) else 0,
                                momentum=getattr(b.norm, "momentum", 0.1), eps=getattr(b.norm, "eps", 1e-5))
                      for b in template.blocks]
        # The values of entries[name] are params[name + ENTRIES], trained; params[name] keeps its
        # initial value, and the entries act as a sparse correction to it (SparseEntries,
        # _first_entries): `initial` holds their initial values, `where` their (row, column).
        self.where = {n: (i // self.params[n].shape[2], i % self.params[n].shape[2]) for n, i in self.entries.items()}
        self.initial = {n: self.params[n].flatten(1).gather(1, i) for n, i in self.entries.items()}
        # per model, the first model with the same first layer (weight and bias): the models that read
        # one row of a Batch must share it, since it runs once per row
        self.first_owner = []
        if self.shares_first_layer:
            first = [self.params[n] for n in (FIRST, "blocks.0.op.bias") if n in self.params]
            for m in range(self.size):
                self.first_owner.append(next((o for o in dict.fromkeys(self.first_owner)
                                              if all(torch.equal(t[o], t[m]) for t in first)), m))

    @staticmethod
    def gathered(template: Net) -> set[str]:
        return {f"blocks.{i}.op.weight" for i, b in enumerate(template.blocks) if isinstance(b.op, nn.Linear)}

    @property
    def shares_first_layer(self) -> bool:
        """No model trains the first layer's weight whole (its trained entries, where some model has
        them, are added by _first_entries)."""
        return not self.params[FIRST].requires_grad

    def state_dict(self, i: int) -> dict[str, torch.Tensor]:
        sd = super().state_dict(i)
        for n, idx in self.entries.items():  # the weight kept its initial value: its trained entries go in here
            sd[n].view(-1)[idx[i].cpu()] = self.params[n + ENTRIES][i].detach().cpu()
        return sd

    def momentum_holders(self) -> list:
        return self.specs

    # ------------------------------------------------------------------ compute
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

    def forward(self, batch: Batch, training: bool) -> torch.Tensor:
        """Logits [M, B, classes] of every model on its row of the batch."""
        if not self.shares_first_layer:
            return self._layers(batch.per_model(batch.x).transpose(0, 1), 0, training)
        owner = [self.first_owner[m] for m in batch.rows.first_model]
        if any(self.first_owner[m] != owner[r] for m, r in enumerate(batch.rows.of_model)):
            raise ValueError("the models that read one row of a Batch must share their first layer (be one seed's)")
        first = batch.first
        if first is None:  # once per row, with the weights of a model that reads it (its seed's)
            first = torch.stack([self.first_layer(batch.x[r], m) for r, m in enumerate(batch.rows.first_model)])
        h = batch.per_model(first).transpose(0, 1)  # [B, M, ...]
        if FIRST in self.entries:
            h = self._first_entries(h, batch.per_model(batch.x).transpose(0, 1))
        return self._layers(h, 1, training)

    def _first_entries(self, out: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """out [B, M, out], the first layer's output with its initial weights, corrected for the
        models' trained entries: out[:, m, i] += (v - v0) * h[:, m, j] for each entry (i, j) of model
        m; h [B, M, ...] is the input. A gather and a scatter-add of B x M x K values, not a dense
        product; autograd gives v its gradient, as SparseEntries does for the later layers."""
        rows, cols = self.where[FIRST]
        B, M = h.shape[:2]
        hg = h.reshape(B, M, -1).gather(2, cols.unsqueeze(0).expand(B, -1, -1))  # [B, M, K]
        delta = self.params[FIRST + ENTRIES] - self.initial[FIRST]  # [M, K]
        return out.scatter_add(2, rows.unsqueeze(0).expand(B, -1, -1), (hg * delta).to(out.dtype))

    def _op(self, h, i: int):
        """Block i's conv or linear layer on h [B, M, ...]."""
        spec = self.specs[i]
        name = f"blocks.{i}.op.weight"
        w, bias = self.params[name], self.params.get(f"blocks.{i}.op.bias")
        B, M = h.shape[:2]
        if spec.conv:
            if self.options.grouped_conv:
                out = F.conv2d(h.flatten(1, 2), w.reshape(-1, *w.shape[2:]), None if bias is None else bias.reshape(-1),
                               padding=spec.padding, groups=M)
                return out.view(B, M, -1, *out.shape[2:])
            return torch.stack([F.conv2d(h[:, m], w[m], None if bias is None else bias[m], padding=spec.padding)
                                for m in range(M)], dim=1)
        h = h.reshape(B, M, -1)  # a conv layer's maps flattened per model
        if name in self.entries:  # trainable entries only: a sparse correction, their gradients gathered
            rows, cols = self.where[name]
            out = SparseEntries.apply(h, self.params[name + ENTRIES], w, self.initial[name],
                                      rows.unsqueeze(0), cols.unsqueeze(0))
            return out if bias is None else out + bias
        if w.shape[1] < NARROW <= w.shape[2]:
            out = torch.bmm(w, h.permute(1, 2, 0)).permute(2, 0, 1)
            return out if bias is None else out + bias
        return batched_product(h, w, bias=bias)

    def _affine(self, h, i: int, normalize: bool):
        """A per-example norm (layernorm: each example over its features, per model) or none, then
        gamma/beta; normalize=False is the scale and shift alone (also ending BatchNorm's mixed-mode path)."""
        spec, M = self.specs[i], h.shape[1]
        if normalize:
            h = (F.group_norm(h.flatten(1, 2), M, eps=spec.eps).view(h.shape) if spec.conv
                 else F.layer_norm(h, h.shape[-1:], eps=spec.eps))
        shape = (M, -1, 1, 1) if spec.conv else (M, -1)
        h = h * self.params[f"blocks.{i}.norm.weight"].reshape(shape)
        beta = self.params.get(f"blocks.{i}.norm.bias")
        return h if beta is None else h + beta.reshape(shape)

    def _norm(self, h, i: int, training: bool):
        """BatchNorm with per-model statistics: the M*C channels as one F.batch_norm."""
        spec = self.specs[i]
        if not spec.norm.batch_statistics:
            return self._affine(h, i, normalize=spec.norm.per_example)
        if training and self.any_inference:
            return self._norm_mixed(h, i)
        rm, rv = self.buffers[f"blocks.{i}.norm.running_mean"], self.buffers[f"blocks.{i}.norm.running_var"]
        gamma, beta = self.params[f"blocks.{i}.norm.weight"], self.params.get(f"blocks.{i}.norm.bias")
        y = F.batch_norm(h.flatten(1, 2), rm.view(-1), rv.view(-1), gamma.reshape(-1),
                         None if beta is None else beta.reshape(-1), training, spec.momentum, spec.eps)
        return y.view(h.shape)

    def _norm_mixed(self, h, i: int):
        """Training with some models' BN in inference mode (running statistics, left unchanged)."""
        spec, M = self.specs[i], h.shape[1]
        rm, rv = self.buffers[f"blocks.{i}.norm.running_mean"], self.buffers[f"blocks.{i}.norm.running_var"]
        var, mean = torch.var_mean(h, dim=(0, 3, 4) if spec.conv else (0,), keepdim=True, correction=0)
        inference = self.inference_norm.view(M, 1)
        with torch.no_grad():
            n = h.numel() // (M * rm.shape[1])
            rm.copy_(torch.where(inference, rm, torch.lerp(rm, mean.reshape(M, -1), spec.momentum)))
            rv.copy_(torch.where(inference, rv,
                                 torch.lerp(rv, var.reshape(M, -1) * (n / max(n - 1, 1)), spec.momentum)))
        mean = torch.where(inference, rm, mean.reshape(M, -1)).reshape(mean.shape)
        var = torch.where(inference, rv, var.reshape(M, -1)).reshape(var.shape)
        return self._affine((h - mean) * torch.rsqrt(var + spec.eps), i, normalize=False)

    def _layers(self, h, start: int, training: bool) -> torch.Tensor:
        """Blocks start.. and the head on h [B, M, ...] -> logits [M, B, classes]."""
        for i, spec in enumerate(self.specs):
            if i >= start:
                h = self._op(h, i)
            if spec.norm.build is not None:
                h = self._norm(h, i, training)
            if spec.pool:  # max-pool and ReLU commute; pooling first leaves the ReLU a quarter of the elements
                h = F.max_pool2d(h.flatten(1, 2), 2).view(*h.shape[:3], h.shape[3] // 2, h.shape[4] // 2)
            h = torch.relu(h)
        hm = h.reshape(h.shape[0], h.shape[1], -1).transpose(0, 1)  # [M, B, F]
        return torch.baddbmm(self.params["head.bias"].unsqueeze(1), hm, self.params["head.weight"].transpose(1, 2))

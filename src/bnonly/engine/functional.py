"""A stack of any module (the CIFAR ResNets and VGGs): each model runs the template's own forward.

Each model runs with its slice of the stacked parameters and buffers (torch.func.functional_call),
so residual additions and pooling are the module's, not a copy. With EngineOptions.vmap the M
models run as one call under torch.func.vmap, where every convolution becomes one grouped
convolution; otherwise (and where some models run BatchNorm in inference mode) one call per model.
The stacked SGD step, masks and per-model early stopping are the engine's, as for FusedStack.
"""
from __future__ import annotations

import torch

from ..registry.norms import batch_norm_layers
from .stack import Batch, Stack


class FunctionalStack(Stack):

    def _call(self, params, buffers, x):
        # num_batches_tracked is not stacked: the template's own counts (unused: BN momentum is set)
        return torch.func.functional_call(self.template, (params, buffers), (x,))

    def forward(self, batch: Batch, training: bool) -> torch.Tensor:
        """Logits [M, B, classes] of every model on its row of the batch."""
        xs = batch.per_model(batch.x)
        self.template.train(training)
        if self.options.vmap and not (training and self.any_inference):
            return torch.func.vmap(self._call, randomness="error")(self.params, self.buffers, xs)
        out = []
        mixed = batch_norm_layers(self.template) if training and self.any_inference else []
        for m in range(self.size):
            for mod in mixed:  # this model's BatchNorm layers in inference mode where its plan says so
                mod.train(not bool(self.inference_norm[m]))
            out.append(self._call({n: p[m] for n, p in self.params.items()},
                                  {n: b[m] for n, b in self.buffers.items()}, xs[m]))
        self.template.train(training)
        return torch.stack(out)

    def momentum_holders(self) -> list:
        return batch_norm_layers(self.template)

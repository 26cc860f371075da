"""What trains: one policy, applied to any `Net`, that marks parameters and (for `random`) entries.

`plan(model, cfg)` returns a `Plan`: for every parameter name either True (trains), False (frozen)
or a bool tensor of its shape (only the True entries train). The engine multiplies gradients,
momentum and weight decay by these masks, so anything outside the set is bit-identical after
training. BatchNorm running statistics are buffers, not parameters: they still update in training
mode (except where `random_norm='inference'` runs BN in inference mode).
"""
from __future__ import annotations

import io
import warnings
import zlib
from dataclasses import dataclass

import torch
from torch import nn

from ..config.run import RunConfig
from ..errors import BnonlyError, ConfigError
from ..registry.nets import Net, build
from ..registry.norms import NORMS
from ..registry.sets import SETS


class ArtefactError(BnonlyError, RuntimeError):
    """A stored model (a run's artefact) that does not load; the caller names the run and the store."""


@dataclass
class Plan:
    masks: dict[str, bool | torch.Tensor]  # parameter name -> True / False / bool tensor
    norm_mode: str = "batch"                # 'batch' (batch statistics in training) or 'inference'

    def count(self, model: Net) -> int:
        return sum(self.by_layer(model).values())

    def by_layer(self, model: Net) -> dict[str, int]:
        """Trainable entries per module ('blocks.0.op', 'blocks.0.norm', ..., 'head')."""
        out: dict[str, int] = {}
        for name, p in model.named_parameters():
            m = self.masks[name]
            n = int(m.sum()) if isinstance(m, torch.Tensor) else (p.numel() if m else 0)
            layer = name.rsplit(".", 1)[0]
            out[layer] = out.get(layer, 0) + n
        return out


def parts(model: nn.Module) -> dict[str, str]:
    """Which part (sets.PARTS) each parameter of a model belongs to: `head` (the output layer),
    `gamma` / `beta` (weight / bias of the normalization layers its units() name), `hidden` (the rest)."""
    names = {id(m): n for n, m in model.named_modules()}
    norm_params = {}
    for _, _, norm in model.units():
        if norm is not None:
            norm_params[f"{names[id(norm)]}.weight"] = "gamma"
            norm_params[f"{names[id(norm)]}.bias"] = "beta"
    return {n: "head" if n.startswith("head.") else norm_params.get(n, "hidden") for n, _ in model.named_parameters()}


def random_mask(weight_shape, k: int, placement: str, generator: torch.Generator) -> torch.Tensor:
    """k entries of a weight [out, in, ...] chosen at random: scattered over the whole tensor,
    exactly k/out per output unit (`per-unit`), whole output units (`neuron`), or as the report's
    notebook chose them (`report-code`): whole units where the layer's fan-in equals its width (its
    CustomDenseRandomLayer), scattered entries elsewhere."""
    out_units = weight_shape[0]
    fan_in = 1
    for s in weight_shape[1:]:
        fan_in *= s
    if placement == "report-code":
        placement = "neuron" if fan_in == out_units else "scattered"
    total = out_units * fan_in
    if k > total:
        raise ConfigError(f"random set asks for {k} entries of a layer that has only {total}")
    mask = torch.zeros(total, dtype=torch.bool)
    if placement == "scattered":
        mask[torch.randperm(total, generator=generator)[:k]] = True
    elif placement == "per-unit":
        if k % out_units:
            raise ConfigError(f"random_placement='per-unit' needs a multiple of {out_units} entries, got {k}")
        m2 = mask.view(out_units, fan_in)
        for u in range(out_units):
            m2[u, torch.randperm(fan_in, generator=generator)[: k // out_units]] = True
    elif placement == "neuron":
        units = torch.randperm(out_units, generator=generator)
        m2 = mask.view(out_units, fan_in)
        full, rest = divmod(k, fan_in)
        m2[units[:full]] = True
        if rest:  # the remainder goes to one more unit, at random inputs
            m2[units[full], torch.randperm(fan_in, generator=generator)[:rest]] = True
    else:
        raise ConfigError(f"unknown random_placement {placement!r}")
    return mask.view(weight_shape)


@torch.no_grad()
def plan(model: Net, cfg: RunConfig) -> Plan:
    """The trainable set `cfg.trainable` on `model` (may reset gamma/beta for `random`)."""
    s = SETS[cfg.trainable]
    if s.random_entries:
        return _random_plan(model, cfg)
    return Plan({n: part in s.parts for n, part in parts(model).items()})


def allocate(k_total: int, sizes: list[int], norm_counts: list[int], allocation: str) -> list[int]:
    """How many of the k_total random entries each hidden layer gets: as its normalization layer has
    parameters (`even`: the report's choice, equal for equal widths), in proportion to the layer's
    weight count (`proportional`, largest remainders), all in the first or all in the last layer."""
    n = len(sizes)
    if allocation == "even":
        counts = list(norm_counts)
    elif allocation == "first":
        counts = [k_total] + [0] * (n - 1)
    elif allocation == "last":
        counts = [0] * (n - 1) + [k_total]
    elif allocation == "proportional":
        shares = [k_total * s / sum(sizes) for s in sizes]
        counts = [int(x) for x in shares]
        for i in sorted(range(n), key=lambda i: counts[i] - shares[i])[: k_total - sum(counts)]:
            counts[i] += 1
    else:
        raise ConfigError(f"unknown random_allocation {allocation!r}")
    for i, (c, size) in enumerate(zip(counts, sizes)):
        if c > size:
            raise ConfigError(f"random_allocation={allocation!r} asks hidden layer {i} for {c} trainable entries, "
                              f"but it has only {size} weights")
    return counts


def _random_plan(model: Net, cfg: RunConfig) -> Plan:
    """As many hidden weights as `bn` trains (the parameters of every normalization/affine layer),
    allocated over the hidden layers by `random_allocation`; normalization kept with gamma = 1,
    beta = 0 frozen."""
    gen = torch.Generator().manual_seed(cfg.seed + 7919 * 1_000_003)  # its own stream, fixed by the seed
    masks: dict[str, bool | torch.Tensor] = {n: False for n, _ in model.named_parameters()}
    units = model.units()
    if any(norm is None for _, _, norm in units):
        raise ConfigError("trainable='random' matches the normalization layers' count, but the model has none")
    norm_counts = [sum(p.numel() for p in norm.parameters()) for _, _, norm in units]
    counts = allocate(sum(norm_counts), [op.weight.numel() for _, op, _ in units], norm_counts,
                      cfg.random_allocation)
    for (name, op, norm), k in zip(units, counts):
        masks[f"{name}.weight"] = random_mask(op.weight.shape, k, cfg.random_placement, gen)
        norm.weight.fill_(1.0)
        if norm.bias is not None:
            norm.bias.zero_()
    # inference mode is a BatchNorm notion (running statistics); other kinds have none
    return Plan(masks, norm_mode=cfg.random_norm if NORMS[cfg.effective_norm].batch_statistics else "batch")


# ---------------------------------------------------------------- what a finished run keeps
def pack(model: Net, p: Plan, input_shape) -> bytes:
    """What trained (whole tensors, or just the masked entries of `random`) and every buffer (BN
    running statistics), compressed: the config and seed rebuild everything else."""
    state: dict = {"input_shape": torch.tensor(list(input_shape))}
    for n, t in model.named_parameters():
        m = p.masks[n]
        if isinstance(m, torch.Tensor):
            state[n] = t.detach()[m].clone()
        elif m:
            state[n] = t.detach().clone()
    state.update({n: b.detach().clone() for n, b in model.named_buffers()})
    buf = io.BytesIO()
    torch.save(state, buf)
    return zlib.compress(buf.getvalue())


@torch.no_grad()
def rebuild(cfg: RunConfig, blob: bytes) -> Net:
    """The trained model of a run, from its config (the frozen random weights) and its packed state.
    A blob that does not load into that model (damaged, another model's, or refused by
    torch.load(weights_only=True)) is an ArtefactError naming why, in one line."""
    try:
        with warnings.catch_warnings():  # (torch warns about a damaged blob's pickle protocol before refusing it)
            warnings.simplefilter("ignore")
            state = torch.load(io.BytesIO(zlib.decompress(blob)), weights_only=True)
        shape = tuple(state.pop("input_shape").tolist())
        model = build(cfg, shape)
        p = plan(model, cfg)
        for n, t in model.named_parameters():
            if n in state:
                m = p.masks[n]
                if isinstance(m, torch.Tensor):
                    t[m] = state[n]
                else:
                    t.copy_(state[n])
        for n, b in model.named_buffers():
            b.copy_(state[n])
    except Exception as e:  # noqa: BLE001 - whatever a damaged blob raises, it is one line
        raise ArtefactError("its stored model does not load "
                            f"({type(e).__name__}: {str(e).strip().splitlines()[0][:200]})") from None
    model.input_shape = shape  # the data set's image shape, for rebuilding its untrained twin
    return model.eval()

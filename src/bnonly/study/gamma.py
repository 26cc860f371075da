"""What the affine parameters learn: disabled features, the gamma scale of each layer, dead units,
and the ablation that switches features off (Frankle et al., Section 5; docs/study.md says what each
measure is, on which layers, and why it does not change when the network's function does not).
"""
from __future__ import annotations

import copy
import hashlib
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import torch

from ..config.run import RunConfig
from ..engine.resident import load
from ..engine.loop import evaluate, stack_of
from ..engine.masks import Plan, plan, rebuild
from ..engine.stack import Batch, Rows
from ..registry.nets import Net, build, is_chain
from ..registry.norms import kind_of
from ..registry.sets import SETS
from .cells import config_of

RELATIVE = 0.1                      # disabled: a contribution below 10% of its layer's RMS contribution
THRESHOLDS = (0.01, 0.05, 0.1)      # absolute |gamma| thresholds (secondary: not scale-free)
RARE = 0.01                         # "rarely active": on fewer than 1% of test examples
KS = tuple(range(0, 101, 10))
RANDOM_DRAWS = 3
ABLATION_EXAMPLES = 1000            # the ablation curves use the first 1,000 test images
STAT_BATCHES = 20                   # batches of 128 training images that re-estimate BN statistics
ANALYZED_SETS = tuple(n for n, s in SETS.items() if s.trains_affine)  # the sets whose gamma/beta train


def disabled(contribution: torch.Tensor, relative: float = RELATIVE) -> torch.Tensor:
    """Which features of one layer are disabled: a contribution below `relative` x the layer's RMS."""
    rms = contribution.pow(2).mean().sqrt()
    return contribution < relative * rms


def readers(model) -> list[torch.Tensor | None]:
    """Per unit (model.units() order): the weight of the layer that alone reads its features through
    its ReLU (in a chain the next block's linear/conv or, for the last, the head; in a residual
    network the block's second conv for its first layer; None for the others, which feed the
    residual sum), each output row divided by its BatchNorm's running standard deviation where one
    follows: scaling a row by c, with that unit's statistics, leaves the function as it was."""
    units = model.units()
    if is_chain(model):
        pairs = [(units[i + 1][1], units[i + 1][2]) if i + 1 < len(units) else (model.head, None)
                 for i in range(len(units))]
    else:
        by_name = {name: (op, norm) for name, op, norm in units}
        pairs = [by_name[name[:-len("conv1")] + "conv2"] if name.endswith(".conv1") else (None, None)
                 for name, _, _ in units]
    out = []
    for op, norm in pairs:
        if op is None:
            out.append(None)
            continue
        w = op.weight.detach()
        if norm is not None and kind_of(norm).batch_statistics:
            w = w / (norm.running_var + norm.eps).sqrt().view(-1, *[1] * (w.dim() - 1))
        out.append(w)
    return out


def contributions(gamma: torch.Tensor, reader: torch.Tensor) -> torch.Tensor:
    """Per feature j: |gamma_j| times the norm of what the next layer reads of it (the column j of a
    linear layer, a conv's input channel j, the j-th block of columns of a linear layer after a
    flattened conv; readers()). Scaling gamma_j and beta_j by c > 0 and that column by 1/c leaves the
    network's function unchanged (ReLU is positively homogeneous) and this product as it was."""
    w = reader.detach().reshape(reader.shape[0], gamma.numel(), -1)
    return gamma.detach().abs() * w.pow(2).sum((0, 2)).sqrt()


def scale_free(model) -> list[bool]:
    """Per unit (model.units() order): whether a normalization divides its gamma's scale out, i.e. it
    feeds, through its ReLU, a layer followed by a normalizing layer. In a chain every unit but the
    last; in a residual network a block's first layer only (the others feed the residual sum)."""
    units = model.units()
    if is_chain(model):
        return [i + 1 < len(units) and kind_of(units[i + 1][2]).normalizes for i in range(len(units))]
    by_name = {name: norm for name, _, norm in units}
    return [name.endswith(".conv1") and kind_of(by_name[name[:-len("conv1")] + "conv2"]).normalizes
            for name, _, _ in units]


def importance(gammas: list[torch.Tensor], reads: list[torch.Tensor | None]) -> list[torch.Tensor]:
    """Per layer, what a feature contributes: contributions() where a layer alone reads it, |gamma| elsewhere."""
    return [g.detach().abs() if r is None else contributions(g, r) for g, r in zip(gammas, reads)]


def fractions(gammas: list[torch.Tensor], reads: list[torch.Tensor | None], free: list[bool]) -> dict:
    """Disabled fractions, weighted by feature count, and per layer: the scale-free one ('relative':
    contributions() below RELATIVE of their layer's RMS, on the layers `free` marks, those a
    normalization follows; None where there is none) and one per absolute threshold on |gamma|
    (every layer)."""
    off = [int(disabled(contributions(g, r)).sum()) if f else None for g, r, f in zip(gammas, reads, free)]
    n = sum(g.numel() for g, o in zip(gammas, off) if o is not None)
    out = {"relative": {"all": sum(o for o in off if o is not None) / n if n else None,
                        "per_layer": [None if o is None else o / g.numel() for g, o in zip(gammas, off)]}}
    total = sum(g.numel() for g in gammas)
    for t in THRESHOLDS:
        out[str(t)] = {"all": sum(int((g.abs() < t).sum()) for g in gammas) / total,
                       "per_layer": [int((g.abs() < t).sum()) / g.numel() for g in gammas]}
    return out


def layer_scales(gammas: list[torch.Tensor], initial: list[torch.Tensor]) -> list[float]:
    """Per layer, its gamma scale learned over initial: RMS |gamma| / RMS |gamma at initialisation|."""
    return [float(g.pow(2).mean().sqrt() / max(float(i.pow(2).mean().sqrt()), 1e-12)) for g, i in zip(gammas, initial)]


@torch.no_grad()
def activity(model: Net, x: torch.Tensor) -> list[torch.Tensor]:
    """Per hidden block, per unit (channel for conv): the fraction of examples on which its ReLU
    output is positive (anywhere in the feature map, for conv), in inference mode."""
    out, h = [], x
    model.eval()
    for b in model.blocks:
        h = b(h)
        on = h > 0 if h.dim() == 2 else (h > 0).flatten(2).any(dim=2)
        out.append(on.float().mean(0))
    return out


def dead_fraction(model: Net, x: torch.Tensor) -> list[float]:
    """Per hidden block, the fraction of units whose ReLU output is 0 for every example."""
    return [int((a == 0).sum()) / a.numel() for a in activity(model, x)]


def norms(model) -> list:
    """The normalization layer of every hidden unit, in units() order (None where there is none)."""
    return [norm for _, _, norm in model.units()]


def switched_off(model, idx: list[torch.Tensor]):
    """A copy of the model with features idx[layer] of every normalization layer off (gamma = beta = 0)."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for norm, i in zip(norms(m), idx):
            norm.weight[i] = 0.0
            if norm.bias is not None:
                norm.bias[i] = 0.0
    return m


def ablation(model: Net, cfg: RunConfig, x_stats: torch.Tensor, x: torch.Tensor, y: torch.Tensor, seed: int = 0,
             initial: list[torch.Tensor] | None = None, draws: int = RANDOM_DRAWS) -> dict:
    """Accuracy on (x, y) with k% of every normalization layer's features off, k in KS: least
    important first (importance(): |gamma| times what reads it, where one layer alone does), most
    important first, `draws` random choices, and with `initial` (each layer's importance at
    initialisation) the control: least important at initialisation first. BatchNorm statistics are
    re-estimated on x_stats (training images, in batches of 128) for every variant, the intact model
    included; all variants run as one stack of copies of the model (each what switched_off gives:
    tested)."""
    gen = torch.Generator().manual_seed(seed)
    orders = {"smallest": [i.argsort() for i in importance([n.weight for n in norms(model)], readers(model))]}
    orders["largest"] = [o.flip(0) for o in orders["smallest"]]
    if initial is not None:
        orders["initial"] = [i.argsort() for i in initial]
    per_k = len(orders) + draws
    offs = []  # per variant, per layer: the features switched off
    for k in KS:
        n_off = [round(n.weight.numel() * k / 100) for n in norms(model)]
        offs += [[o[:n] for o, n in zip(order, n_off)] for order in orders.values()]
        for _ in range(draws):
            offs.append([torch.randperm(norm.weight.numel(), generator=gen)[:n]
                         for norm, n in zip(norms(model), n_off)])
    # the variants: copies of the model, then each one's gamma = beta = 0 where it is off; nothing
    # trains here, so they share the model's weights and its first layer runs once for all of them
    frozen = Plan({n: False for n, _ in model.named_parameters()}, plan(build(cfg, tuple(x.shape[1:])), cfg).norm_mode)
    template = copy.deepcopy(model)  # (a FunctionalStack sets its template's mode and counts its batches)
    stack = stack_of([template] * len(offs), [frozen] * len(offs))
    names = {id(t): n for n, t in model.named_parameters()}
    with torch.no_grad():
        for layer, norm in enumerate(norms(model)):
            for t in (norm.weight, norm.bias):
                if t is not None:
                    stacked = stack.params[names[id(t)]]
                    for v, off in enumerate(offs):
                        stacked[v, off[layer]] = 0.0
    copies = Rows([0] * len(offs))  # every variant reads the one input, through the model's one first layer
    stack.reestimate_statistics(x_stats.split(128), copies)
    _, acc = evaluate(stack, Batch(x.unsqueeze(0), y.unsqueeze(0), copies), tuple(x.shape[1:]))
    acc = acc.view(len(KS), per_k)
    out = {"k": list(KS), **{name: acc[:, j].tolist() for j, name in enumerate(orders)}}
    if draws:
        out["random"] = acc[:, len(orders):].tolist()
    return out


@torch.no_grad()
def own_statistics(model: Net, x_stats: torch.Tensor) -> Net:
    """The model with its BatchNorm running statistics estimated on x_stats (batches of 128, a plain
    average, as the ablation re-estimates them), in inference mode: the initial network measured with
    its own statistics, not a fresh module's defaults (mean 0, variance 1)."""
    bns = [m for m in model.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))
           and m.track_running_stats]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    model.train()
    for xb in x_stats.split(128):
        model(xb)
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    return model.eval()


def analyze_run(row: dict, blob: bytes, data_dir=None) -> dict:
    cfg = RunConfig(**row["config"])
    model = rebuild(cfg, blob)
    d = load(cfg.dataset, cfg.val_fraction, cfg.data_seed, cfg.subset, "cpu", data_dir, cfg.normalize)
    gammas = [n.weight.detach().clone() for n in norms(model)]
    betas = [n.bias.detach().clone() if n.bias is not None else None for n in norms(model)]
    # units can die only where beta exists and trains (a frozen beta stays 0: ReLU(gamma x_hat) fires
    # on about half the inputs whenever gamma != 0); a unit's own ReLU output exists in a chain of
    # blocks (in a residual block the norm's output is added to the shortcut first)
    has_beta = all(b is not None for b in betas) and "beta" in SETS[cfg.trainable].parts
    act = activity(model, d.x_test) if has_beta and is_chain(model) else None
    x_stats = d.x_train[: 128 * STAT_BATCHES]  # a fixed slice of the training set (its order is fixed)
    initial = own_statistics(build(cfg, model.input_shape), x_stats)
    init = [n.weight.detach().clone() for n in norms(initial)]
    x, y = d.x_test[:ABLATION_EXAMPLES], d.y_test[:ABLATION_EXAMPLES]
    abl = ablation(model, cfg, x_stats, x, y, seed=cfg.seed, initial=importance(init, readers(initial)))
    abl["untrained"] = ablation(initial, cfg, x_stats, x, y, draws=0)["smallest"]
    free = scale_free(model)
    n_units = [a.numel() for a in act] if act else None
    return {"run_id": row["run_id"], "config": row["config"], "test_accuracy": row["test_accuracy"],
            "status": row.get("status"), "epochs_run": row.get("epochs_run"),
            "gamma": [g.tolist() for g in gammas], "gamma_initial": [g.tolist() for g in init],
            "beta": [None if b is None else b.tolist() for b in betas], "has_beta": has_beta,
            "scale_free": free, "disabled": fractions(gammas, readers(model), free),
            "disabled_initial": fractions(init, readers(initial), free),
            "layer_scale": layer_scales(gammas, init),
            "dead": None if act is None else sum(int((a == 0).sum()) for a in act) / sum(n_units),
            "rare": None if act is None else sum(int((a < RARE).sum()) for a in act) / sum(n_units),
            "ablation": abl}


ANALYSIS_VERSION = 1  # raise it where a change outside this module changes what analyze_run computes
# (the key of a kept analysis: study/analyses.py keeps them, so that editing how they are kept
# leaves this module, and the analyses, as they were)


@lru_cache(maxsize=None)
def analysis_code() -> str:
    """The analysis code's version: this module's source hash and ANALYSIS_VERSION."""
    return hashlib.sha256(Path(__file__).read_bytes() + str(ANALYSIS_VERSION).encode()).hexdigest()[:16]


def conditions(analyses: list[dict]) -> dict:
    """{condition: [analysis per seed]}: runs grouped by their whole configuration less the seed,
    so runs of different studies, norms or data sets are never pooled. A condition is
    (model, width, depth, trainable, the rest of the configuration as sorted items)."""
    g = defaultdict(list)
    for a in analyses:
        c = config_of(a)
        sized = c["width"] is not None
        rest = tuple(sorted((k, v) for k, v in c.items() if k not in ("seed", "model", "width", "depth", "trainable")))
        g[(c["model"], c["width"] if sized else 0, c["depth"] if sized else 0, c["trainable"], rest)].append(a)
    return dict(g)

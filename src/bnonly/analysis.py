"""What the affine parameters learn: gamma/beta distributions, disabled features, dead units, ablation.

Frankle, Schwab & Morcos (ICLR 2021, Section 5, "Examining the values of gamma and beta") report
that BatchNorm-only training disables between a quarter and a third of the random features: gamma
close to 0, and ReLUs whose output is 0 for every test example. Per stored run (rebuilt from its
artefact) this measures:

- **disabled features, scale-free**: |gamma| below RELATIVE (10%) of the root-mean-square |gamma| of
  its own layer. In these models a hidden layer is followed by ReLU and then by the next layer's
  BatchNorm, so multiplying one layer's gamma and beta by any c > 0 leaves the network's function
  unchanged (the next BatchNorm divides c out, up to eps): an absolute threshold such as
  |gamma| < 0.1 partly measures that free scale. A threshold relative to the layer's own scale does
  not change when the function does not (tested). The absolute thresholds stay as secondary columns.
  Fractions are weighted by feature count (all features of all layers together).
- **dead units** (where the model has beta, in a chain of blocks: not in residual networks, where a
  unit's output is added to the shortcut before its ReLU): the ReLU output is 0 for every test example; and, as a
  second column, units active on fewer than 1% of them. Without hidden beta (the `report` preset)
  ReLU(gamma * x_hat) is positive on about half the inputs whenever gamma != 0, so units cannot die:
  the analysis says so instead of printing zeros.
- **ablation**: test accuracy with k% of every layer's features switched off (gamma = beta = 0),
  smallest |gamma| first, largest |gamma| first and at random (RANDOM_DRAWS draws), with BatchNorm
  running statistics re-estimated on STAT_BATCHES training batches after switching off (the
  intact network's statistics no longer describe the next layers' inputs).
"""
from __future__ import annotations

import copy
import hashlib
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .config import GRID_FIELDS, RunConfig  # noqa: E402
from .data import load  # noqa: E402
from .engine import evaluate, stack_of  # noqa: E402
from .figures import save_figure  # noqa: E402
from .models import Net, arch_name, build, is_chain  # noqa: E402
from .render import figure, fold, table as table_block, text  # noqa: E402
from .sets import SETS, color  # noqa: E402
from .stats import config_of, mean_ci  # noqa: E402
from .store import Store  # noqa: E402
from .stack import Batch, Rows  # noqa: E402
from .trainable import Plan, plan, rebuild  # noqa: E402

RELATIVE = 0.1                      # disabled: |gamma| < 10% of its layer's RMS |gamma|
THRESHOLDS = (0.01, 0.05, 0.1)      # absolute |gamma| thresholds (secondary: not scale-free)
RARE = 0.01                         # "rarely active": on fewer than 1% of test examples
KS = tuple(range(0, 101, 10))
RANDOM_DRAWS = 3
ABLATION_EXAMPLES = 1000            # the ablation curves use the first 1,000 test images
STAT_BATCHES = 20                   # batches of 128 training images that re-estimate BN statistics
ANALYZED_SETS = tuple(n for n, s in SETS.items() if s.trains_affine)  # the sets whose gamma/beta train


def disabled(gamma: torch.Tensor, relative: float = RELATIVE) -> torch.Tensor:
    """Which features of one layer are disabled: |gamma| < relative x the layer's RMS |gamma|."""
    rms = gamma.pow(2).mean().sqrt()
    return gamma.abs() < relative * rms


def fractions(gammas: list[torch.Tensor]) -> dict:
    """Disabled fractions, weighted by feature count over all layers, and per layer: the scale-free
    one ('relative') and one per absolute threshold."""
    n = sum(g.numel() for g in gammas)
    out = {"relative": {"all": sum(int(disabled(g).sum()) for g in gammas) / n,
                        "per_layer": [int(disabled(g).sum()) / g.numel() for g in gammas]}}
    for t in THRESHOLDS:
        out[str(t)] = {"all": sum(int((g.abs() < t).sum()) for g in gammas) / n,
                       "per_layer": [int((g.abs() < t).sum()) / g.numel() for g in gammas]}
    return out


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


def ablation(model: Net, cfg: RunConfig, x_stats: torch.Tensor, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> dict:
    """Accuracy on (x, y) with k% of every normalization layer's features off, k in KS: smallest |gamma|
    first, largest first, and RANDOM_DRAWS random choices. BatchNorm statistics are re-estimated on
    x_stats (training images, in batches of 128) for every variant, the intact model included; all
    variants run as one stack of copies of the model (each what switched_off gives: tested)."""
    gen = torch.Generator().manual_seed(seed)
    offs = []  # per variant, per layer: the features switched off
    for k in KS:
        n_off = [round(n.weight.numel() * k / 100) for n in norms(model)]
        order = [n.weight.abs().argsort() for n in norms(model)]
        offs.append([o[:n] for o, n in zip(order, n_off)])
        offs.append([o.flip(0)[:n] for o, n in zip(order, n_off)])
        for _ in range(RANDOM_DRAWS):
            offs.append([torch.randperm(norm.weight.numel(), generator=gen)[:n] for norm, n in zip(norms(model), n_off)])
    # the variants: copies of the model, then each one's gamma = beta = 0 where it is off; nothing
    # trains here, so they share the model's weights and its first layer runs once for all of them
    frozen = Plan({n: False for n, _ in model.named_parameters()}, plan(build(cfg, tuple(x.shape[1:])), cfg).norm_mode)
    template = copy.deepcopy(model)  # (a ModuleStack sets its template's mode and counts its batches)
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
    acc = acc.view(len(KS), 2 + RANDOM_DRAWS)
    return {"k": list(KS), "smallest": acc[:, 0].tolist(), "largest": acc[:, 1].tolist(),
            "random": acc[:, 2:].tolist()}


def analyze_run(row: dict, blob: bytes, data_dir=None) -> dict:
    cfg = RunConfig(**row["config"])
    model = rebuild(cfg, blob)
    initial = build(cfg, model.input_shape)
    d = load(cfg.dataset, cfg.val_fraction, cfg.data_seed, cfg.subset, "cpu", data_dir, cfg.normalize)
    gammas = [n.weight.detach().clone() for n in norms(model)]
    betas = [n.bias.detach().clone() if n.bias is not None else None for n in norms(model)]
    init = [n.weight.detach().clone() for n in norms(initial)]
    # units can die only where beta exists and trains (a frozen beta stays 0: ReLU(gamma x_hat) fires
    # on about half the inputs whenever gamma != 0); a unit's own ReLU output exists in a chain of
    # blocks (in a residual block the norm's output is added to the shortcut first)
    has_beta = all(b is not None for b in betas) and "beta" in SETS[cfg.trainable].parts
    act = activity(model, d.x_test) if has_beta and is_chain(model) else None
    x_stats = d.x_train[: 128 * STAT_BATCHES]  # a fixed slice of the training set (its order is fixed)
    abl = ablation(model, cfg, x_stats, d.x_test[:ABLATION_EXAMPLES], d.y_test[:ABLATION_EXAMPLES], seed=cfg.seed)
    n_units = [a.numel() for a in act] if act else None
    return {"run_id": row["run_id"], "config": row["config"], "test_accuracy": row["test_accuracy"],
            "gamma": [g.tolist() for g in gammas], "gamma_initial": [g.tolist() for g in init],
            "beta": [None if b is None else b.tolist() for b in betas], "has_beta": has_beta,
            "disabled": fractions(gammas), "disabled_initial": fractions(init),
            "dead": None if act is None else sum(int((a == 0).sum()) for a in act) / sum(n_units),
            "rare": None if act is None else sum(int((a < RARE).sum()) for a in act) / sum(n_units),
            "ablation": abl}


def analyze_store(store: Store, data_dir=None, run_ids: set | None = None) -> list[dict]:
    """Every finished run of a set that trains gamma/beta, with a normalization layer and a stored
    model (only those of `run_ids` when given)."""
    out = []
    for row in store.runs(status=("finished",)):
        if run_ids is not None and row["run_id"] not in run_ids:
            continue
        c = config_of(row)
        if c["trainable"] not in ANALYZED_SETS or c["norm"] == "none":
            continue
        blob = store.artefact(row["run_id"])
        if blob is not None:
            out.append(analyze_run(row, blob, data_dir))
    return out


def group(analyses: list[dict]) -> dict:
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


def _base_name(key) -> str:
    rest = dict(key[4]) if len(key) > 4 else {}
    extra = [str(rest[k]) for k in ("norm", "dataset") if k in rest and rest[k] not in ("batchnorm", "mnist")]
    return "_".join([arch_name({"model": key[0], "width": key[1], "depth": key[2]})] + extra)


def _study_of(key) -> tuple:
    return tuple(kv for kv in key[4] if kv[0] not in GRID_FIELDS)


def _name(key, keys=()) -> str:
    """The label of a condition: the architecture and the settings that tell it from the report's
    baseline (norm, data set) where they differ; when another condition among `keys` of another
    study has the same label, a short hash of this one's study (so figures never overwrite each other)."""
    base = _base_name(key)
    if any(_base_name(k) == base and _study_of(k) != _study_of(key) for k in keys):
        base += "_" + hashlib.sha256(repr(_study_of(key)).encode()).hexdigest()[:6]
    return base


# ---------------------------------------------------------------- figures and table
def _pct(st) -> str:
    return f"{100 * st.mean:.1f} ± {100 * st.half:.1f}" if st.n else "–"


def _arch_groups(groups: dict) -> dict:
    """{architecture condition (the group key less the set): [group keys of its sets]}."""
    out = defaultdict(list)
    for k in groups:
        out[(k[0], k[1], k[2], tuple(kv for kv in k[4] if kv[0] != "trainable"))].append(k)
    return out


def _hist_grid(groups, keys, field: str, name: str, out_dir: Path, written: dict) -> str:
    """One panel per layer, wrapping at 4 per row: learned values by set (seeds together), the initial
    gamma in grey."""
    n_layers = len(groups[keys[0]][0][field])
    cols = min(4, n_layers)
    rows = math.ceil(n_layers / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.3 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n_layers:
            ax.set_visible(False)
            continue
        if field == "gamma":
            init = [v for a in groups[keys[0]] for v in a["gamma_initial"][i]]
            ax.hist(init, bins=40, histtype="stepfilled", color="#dddddd", label="initial")
        for k in keys:
            vals = [v for a in groups[k] if a[field][i] is not None for v in a[field][i]]
            if vals:
                ax.hist(vals, bins=40, histtype="step", color=color(k[3]), label=k[3])
        ax.set_title(f"layer {i + 1}", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(f"learned {field}, {name} (seeds together)", fontsize=10)
    fig.tight_layout()
    stem = f"{field}_hist_{name}"
    save_figure(fig, out_dir, stem, written)
    return f"{stem}.png"


def _curve(groups, k, field: str):
    """Per k: the Stat over seeds of one ablation curve (random: each seed's mean over its draws)."""
    runs = groups[k]
    per_seed = [[sum(v) / len(v) if isinstance(v, list) else v for v in a["ablation"][field]] for a in runs]
    return [mean_ci(seed[j] for seed in per_seed) for j in range(len(KS))]


def plot(groups: dict, out_dir: Path, written: dict) -> dict[str, list[tuple[str, str]]]:
    """Per architecture (by name): histograms of learned gamma (and beta) per layer, and the ablation
    curves, as (png, caption) pairs."""
    by_arch = {}
    for arch_key, keys in sorted(_arch_groups(groups).items(), key=lambda kv: str(kv[0])):
        keys = sorted(keys, key=lambda k: ANALYZED_SETS.index(k[3]) if k[3] in ANALYZED_SETS else 99)
        name = _name(keys[0], groups)
        figs = by_arch.setdefault(name, [])
        figs.append((_hist_grid(groups, keys, "gamma", name, out_dir, written),
                     f"Learned gamma per layer at {name}, by trainable set, all seeds together; grey: the initial gamma."))
        if any(a["has_beta"] for k in keys for a in groups[k]):
            figs.append((_hist_grid(groups, keys, "beta", name, out_dir, written),
                         f"Learned beta per layer at {name}, by trainable set, all seeds together (beta starts at 0)."))
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for k in keys:
            c = color(k[3])
            for field, style, label in (("smallest", "o-", "smallest |gamma| first"), ("largest", "s:", "largest first"),
                                        ("random", "--", "random")):
                st = _curve(groups, k, field)
                ax.plot(KS, [x.mean for x in st], style, color=c, markersize=3, label=f"{k[3]}: {label}")
                if field == "random":
                    ax.fill_between(KS, [x.lo for x in st], [x.hi for x in st], color=c, alpha=0.15, linewidth=0)
        ax.axhline(0.1, color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel="% of features switched off per layer (gamma = beta = 0)", ylabel="test accuracy",
               ylim=(0, 1), title=f"ablation, {name}")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        ax.grid(alpha=0.3)
        save_figure(fig, out_dir, f"ablation_{name}", written)
        figs.append((f"ablation_{name}.png", f"Test accuracy (first {ABLATION_EXAMPLES} test images) with k% of every "
                     f"layer's features off: smallest |gamma| first (solid), largest first (dotted), at random (dashed, "
                     f"band: 95% interval over seeds of the mean of {RANDOM_DRAWS} draws); BatchNorm statistics "
                     f"re-estimated on {STAT_BATCHES} training batches after switching off, {name}."))
    return by_arch


def _ordered(groups):
    return sorted(groups, key=lambda k: (_name(k, groups), ANALYZED_SETS.index(k[3]) if k[3] in ANALYZED_SETS else 99))


def table(groups: dict) -> tuple[list[str], list[list[str]]]:
    """Per condition: disabled fractions (scale-free, then absolute), dead units, ablation at 30%."""
    header = (["architecture", "set", "n", f"disabled: |gamma| < {RELATIVE:g} x layer RMS, learned (initial) (%)"]
              + [f"|gamma| < {t} learned (initial) (%)" for t in THRESHOLDS]
              + ["dead units (%)", f"active on < {100 * RARE:g}% (%)",
                 "acc, 30% off: smallest / largest / random |gamma| (%)"])
    rows = []
    j = KS.index(30)
    for key in _ordered(groups):
        runs = groups[key]

        def frac(field, which):
            return mean_ci(a[field][which]["all"] for a in runs)
        if all(a["dead"] is not None for a in runs):
            dead, rare = _pct(mean_ci(a["dead"] for a in runs)), _pct(mean_ci(a["rare"] for a in runs))
        else:
            dead = rare = "n/a: no trained hidden beta" if not all(a["has_beta"] for a in runs) else \
                "n/a: residual network (a unit's output is added to the shortcut before its ReLU)"
        abl = " / ".join(_pct(_curve(groups, key, f)[j]) for f in ("smallest", "largest", "random"))
        rows.append([_name(key, groups), key[3], str(len(runs)),
                     f"{_pct(frac('disabled', 'relative'))} ({100 * frac('disabled_initial', 'relative').mean:.1f})"]
                    + [f"{_pct(frac('disabled', str(t)))} ({100 * frac('disabled_initial', str(t)).mean:.1f})"
                       for t in THRESHOLDS] + [dead, rare, abl])
    return header, rows


def answers(groups: dict) -> list[str]:
    """Per condition of `bn` and `all`: the answer to "does training the affine parameters disable
    random features?" with its numbers and intervals."""
    out = []
    j = KS.index(30)
    for key in _ordered(groups):
        if key[3] not in ("bn", "all"):
            continue
        runs = groups[key]
        learned = mean_ci(a["disabled"]["relative"]["all"] for a in runs)
        init = mean_ci(a["disabled_initial"]["relative"]["all"] for a in runs)
        sm, rd = _curve(groups, key, "smallest")[j], _curve(groups, key, "random")[j]
        full = _curve(groups, key, "smallest")[0]
        sentence = (f"{_name(key, groups)}, {key[3]} (n={learned.n}): {_pct(learned)}% of features disabled (|gamma| below "
                    f"{100 * RELATIVE:g}% of their layer's RMS), against {100 * init.mean:.1f}% at initialisation. "
                    f"Switching off the 30% smallest-|gamma| features moves accuracy from {_pct(full)}% to {_pct(sm)}%, "
                    f"30% at random to {_pct(rd)}%.")
        if all(a["dead"] is not None for a in runs):
            sentence += f" Dead units: {_pct(mean_ci(a['dead'] for a in runs))}%."
        out.append(sentence)
    return out


def section(analyses: list[dict], out_dir: Path, written: dict):
    """The report's section on what the affine parameters learn, and its table (header, rows)."""
    groups = group(analyses)
    figs_by_arch = plot(groups, out_dir, written)
    header, rows = table(groups)
    blocks = [{"kind": "question", "text": "Does training the affine parameters disable random features, as "
               "Frankle et al. found (a quarter to a third of them in ResNets; their Section 5)?"}]
    blocks += [{"kind": "answer", "text": a} for a in answers(groups)]
    if not all(a["has_beta"] for a in analyses):
        blocks.append(text("Some of these runs have no trained hidden beta (the `report` preset has none; `gamma` "
                           "keeps it at 0): there ReLU(gamma * x_hat) is positive on about half the inputs whenever "
                           "gamma != 0, so units cannot die and dead units are not reported. Disabled features are "
                           "measured on gamma alone."))
    blocks += [fold(f"Figures of {name}: learned gamma{' and beta' if len(figs) > 2 else ''} per layer, ablation",
                    [figure(png, cap) for png, cap in figs]) for name, figs in figs_by_arch.items()]
    blocks.append(table_block(header, rows, caption=(
        f"Mean ± 95% t interval over seeds (n); fractions weighted by feature count over all layers. Disabled: "
        f"|gamma| below {100 * RELATIVE:g}% of the root-mean-square |gamma| of its layer (scale-free: a layer "
        "followed by BatchNorm can scale its gamma freely); the absolute thresholds are not scale-free. Ablation "
        "with BatchNorm statistics re-estimated after switching off. Frankle et al. report 25-33% disabled. With "
        "norm 'affine' no normalization follows a layer, so its gamma scale is not free there.")))
    return {"title": "What the affine parameters learn", "blocks": blocks}, (header, rows)


def summaries(analyses: list[dict]) -> list[dict]:
    """Per analysed run, what report.json keeps."""
    return [{k: a[k] for k in ("run_id", "disabled", "disabled_initial", "dead", "rare", "has_beta", "ablation",
                               "test_accuracy")} | {"trainable": a["config"]["trainable"]} for a in analyses]

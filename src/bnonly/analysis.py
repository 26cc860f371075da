"""What the affine parameters learn: gamma/beta distributions, disabled features, dead units, ablation.

Frankle, Schwab & Morcos report that BatchNorm-only training "learns to disable" about a quarter to a
third of the random features. Per stored run (rebuilt from its artefact) this measures:
- the fraction of features with |gamma| below 0.01 / 0.05 / 0.1, at initialisation and learned;
- the fraction of hidden units that are dead on the test set (ReLU output 0 for every example);
- test accuracy when the k% smallest-|gamma| features of every normalization layer are switched off
  (gamma = beta = 0), against switching off k% chosen at random (mean of RANDOM_DRAWS draws).
"""
from __future__ import annotations

import copy
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .config import RunConfig  # noqa: E402
from .data import load  # noqa: E402
from .engine import evaluate  # noqa: E402
from .figures import save_figure  # noqa: E402
from .models import Net, arch_name, build  # noqa: E402
from .render import figure, table as table_block  # noqa: E402
from .sets import SETS, color  # noqa: E402
from .stacked import Stack  # noqa: E402
from .stats import mean_ci  # noqa: E402
from .store import Store  # noqa: E402
from .trainable import plan, rebuild  # noqa: E402

THRESHOLDS = (0.01, 0.05, 0.1)
KS = tuple(range(0, 101, 10))
RANDOM_DRAWS = 3
ABLATION_EXAMPLES = 1000  # the ablation curves use the first 1,000 test images (44 variants per run)
ANALYZED_SETS = tuple(n for n, s in SETS.items() if s.trains_affine)  # the sets whose gamma/beta train


@torch.no_grad()
def dead_fraction(model: Net, x: torch.Tensor) -> list[float]:
    """Per hidden block, the fraction of units (channels for conv) whose ReLU output is 0 for every example."""
    alive = []
    h = x
    model.eval()
    for b in model.blocks:
        h = b(h)
        alive.append((h > 0).any(dim=0) if h.dim() == 2 else (h > 0).flatten(2).any(dim=2).any(dim=0))
    return [1.0 - float(a.float().mean()) for a in alive]


def _switched_off(model: Net, fractions_idx: list[torch.Tensor]) -> Net:
    m = copy.deepcopy(model)
    with torch.no_grad():
        for b, idx in zip(m.blocks, fractions_idx):
            b.norm.weight[idx] = 0.0
            if b.norm.bias is not None:
                b.norm.bias[idx] = 0.0
    return m


def ablation(model: Net, cfg: RunConfig, x: torch.Tensor, y: torch.Tensor, seed: int = 0):
    """Test accuracy with k% of every normalization layer's features off, k in KS: (smallest |gamma| first,
    mean over RANDOM_DRAWS random choices). All variants are evaluated as one stack."""
    gen = torch.Generator().manual_seed(seed)
    variants = []
    for k in KS:
        smallest = [b.norm.weight.abs().argsort()[: round(b.norm.weight.numel() * k / 100)] for b in model.blocks]
        variants.append(_switched_off(model, smallest))
        for _ in range(RANDOM_DRAWS):
            rnd = [torch.randperm(b.norm.weight.numel(), generator=gen)[: round(b.norm.weight.numel() * k / 100)]
                   for b in model.blocks]
            variants.append(_switched_off(model, rnd))
    p = plan(build(cfg, tuple(x.shape[1:])), cfg)
    _, acc = evaluate(Stack.from_models(variants, [p] * len(variants)), x, y)
    acc = acc.view(len(KS), 1 + RANDOM_DRAWS)
    return acc[:, 0].tolist(), acc[:, 1:].mean(1).tolist()


def analyze_run(row: dict, blob: bytes, data_dir=None) -> dict:
    cfg = RunConfig(**row["config"])
    model = rebuild(cfg, blob)
    initial = build(cfg, model.input_shape)
    d = load(cfg.dataset, cfg.val_fraction, cfg.data_seed, cfg.subset, "cpu", data_dir)
    gammas = [b.norm.weight.detach().clone() for b in model.blocks]
    betas = [b.norm.bias.detach().clone() if b.norm.bias is not None else None for b in model.blocks]
    init = [b.norm.weight.detach().clone() for b in initial.blocks]
    small = {str(t): {"initial": [float((g.abs() < t).float().mean()) for g in init],
                      "learned": [float((g.abs() < t).float().mean()) for g in gammas]} for t in THRESHOLDS}
    by_gamma, by_random = ablation(model, cfg, d.x_test[:ABLATION_EXAMPLES], d.y_test[:ABLATION_EXAMPLES], seed=cfg.seed)
    return {"run_id": row["run_id"], "config": row["config"], "test_accuracy": row["test_accuracy"],
            "gamma": [g.tolist() for g in gammas], "gamma_initial": [g.tolist() for g in init],
            "beta": [None if b is None else b.tolist() for b in betas], "small_gamma": small,
            "dead": dead_fraction(model, d.x_test), "ablation_k": list(KS),
            "ablation_smallest": by_gamma, "ablation_random": by_random}


def analyze_store(out_dir, data_dir=None) -> list[dict]:
    """Every finished run of a set that trains gamma/beta, with a normalization layer and a stored model."""
    store = Store(Path(out_dir) / "results.sqlite")
    out = []
    for row in store.runs(status=("finished",)):
        c = row["config"]
        if row["trainable"] not in ANALYZED_SETS or c.get("norm", "batchnorm") == "none":
            continue
        blob = store.artefact(row["run_id"])
        if blob is not None:
            out.append(analyze_run(row, blob, data_dir))
    return out


def group(analyses: list[dict]) -> dict:
    """{(model, width, depth, trainable): [analysis per seed]}"""
    g = defaultdict(list)
    for a in analyses:
        c = a["config"]
        key = (c["model"], c["width"] if c["model"] == "mlp" else 0, c["depth"] if c["model"] == "mlp" else 0,
               c["trainable"])
        g[key].append(a)
    return dict(g)


# ---------------------------------------------------------------- figures and table
def _name(key) -> str:
    """The architecture name of a group key (model, width, depth, ...)."""
    return arch_name({"model": key[0], "width": key[1], "depth": key[2]})


def plot(groups: dict, out_dir: Path, written: dict) -> list[tuple[str, str]]:
    """Per architecture: histograms of learned gamma (and beta) per layer, and the ablation curves."""
    figs = []
    archs = sorted({k[:3] for k in groups})
    for arch in archs:
        keys = [k for k in groups if k[:3] == arch]
        name = _name(arch)
        n_layers = len(groups[keys[0]][0]["gamma"])
        has_beta = any(a["beta"][0] is not None for k in keys for a in groups[k])
        rows = 2 if has_beta else 1
        fig, axes = plt.subplots(rows, n_layers, figsize=(3.2 * n_layers, 2.6 * rows), squeeze=False)
        for i in range(n_layers):
            init = torch.tensor([v for k in keys[:1] for a in groups[k] for v in a["gamma_initial"][i]])
            axes[0][i].hist(init.numpy(), bins=40, histtype="stepfilled", color="#dddddd", label="initial")
            for k in keys:
                g = [v for a in groups[k] for v in a["gamma"][i]]
                axes[0][i].hist(g, bins=40, histtype="step", color=color(k[3]), label=k[3])
                if has_beta and groups[k][0]["beta"][i] is not None:
                    axes[1][i].hist([v for a in groups[k] for v in a["beta"][i]], bins=40, histtype="step",
                                    color=color(k[3]), label=k[3])
            axes[0][i].set_title(f"layer {i + 1}: gamma", fontsize=9)
            if has_beta:
                axes[1][i].set_title(f"layer {i + 1}: beta", fontsize=9)
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        fig.suptitle(f"learned gamma/beta, {name} (all seeds pooled)", fontsize=10)
        fig.tight_layout()
        save_figure(fig, out_dir, f"gamma_hist_{name}", written)
        figs.append((f"gamma_hist_{name}.png", f"Learned gamma (and beta) per layer at {name}, by trainable set; "
                                                "grey: the initial gamma."))
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        for k in keys:
            ks = groups[k][0]["ablation_k"]
            mean = lambda field: [sum(a[field][j] for a in groups[k]) / len(groups[k]) for j in range(len(ks))]  # noqa: E731
            c = color(k[3])
            ax.plot(ks, mean("ablation_smallest"), "o-", color=c, markersize=3, label=f"{k[3]}: smallest |gamma|")
            ax.plot(ks, mean("ablation_random"), "--", color=c, label=f"{k[3]}: random")
        ax.axhline(0.1, color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel="% of features switched off per layer (gamma = beta = 0)", ylabel="test accuracy",
               ylim=(0, 1), title=f"ablation, {name}")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        ax.grid(alpha=0.3)
        save_figure(fig, out_dir, f"ablation_{name}", written)
        figs.append((f"ablation_{name}.png", f"Test accuracy (first {ABLATION_EXAMPLES} test images) with the k% "
                                              f"smallest-|gamma| features off (solid) vs k% at random (dashed), {name}."))
    return figs


def table(groups: dict) -> tuple[list[str], list[list[str]]]:
    """Disabled fractions per architecture x set, mean ± 95% interval over seeds, vs Frankle's 25-33%."""
    header = (["architecture", "set", "n"] + [f"|gamma|<{t} learned (initial) (%)" for t in THRESHOLDS]
              + ["dead units (%)", "acc, 30% smallest off / 30% random off (%)", "Frankle et al."])
    rows = []
    f = lambda s: f"{100 * s.mean:.1f} ± {100 * s.half:.1f}"  # noqa: E731
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], ANALYZED_SETS.index(k[3]))):
        runs = groups[key]

        def small(t, when):  # fraction over all layers' features, per seed
            return mean_ci(sum(a["small_gamma"][str(t)][when]) / len(a["small_gamma"][str(t)][when]) for a in runs)
        dead = mean_ci(sum(a["dead"]) / len(a["dead"]) for a in runs)
        j = KS.index(30)
        sm = mean_ci(a["ablation_smallest"][j] for a in runs)
        rd = mean_ci(a["ablation_random"][j] for a in runs)
        rows.append([_name(key), key[3], str(len(runs))]
                    + [f"{f(small(t, 'learned'))} ({100 * small(t, 'initial').mean:.1f})" for t in THRESHOLDS]
                    + [f(dead), f"{f(sm)} / {f(rd)}", "disables 25-33%"])
    return header, rows


def section(analyses: list[dict], out_dir: Path, written: dict):
    """The report's section on what the affine parameters learn, and its table (header, rows)."""
    groups = group(analyses)
    figs = plot(groups, out_dir, written)
    header, rows = table(groups)
    blocks = [{"kind": "question", "text": "Does training the affine parameters disable random features, as "
               "Frankle et al. found (a quarter to a third of them in ResNets)? Disabled = |gamma| < 0.1; dead = "
               "ReLU output 0 for every test image."}]
    blocks += [figure(png, cap) for png, cap in figs] + [table_block(header, rows)]
    return {"title": "What the affine parameters learn", "blocks": blocks}, (header, rows)


def summaries(analyses: list[dict]) -> list[dict]:
    """Per analysed run, what report.json keeps."""
    return [{k: a[k] for k in ("run_id", "small_gamma", "dead", "ablation_k", "ablation_smallest",
                               "ablation_random", "test_accuracy")} | {"trainable": a["config"]["trainable"]}
            for a in analyses]

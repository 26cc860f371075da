"""The report's section on what the affine parameters learn (study/gamma.py measures it): histograms
of learned gamma and beta per layer, the ablation curves with their controls, the table and the
answers, every number a mean and 95% interval over seeds.
"""
from __future__ import annotations

import hashlib
import math
import statistics
from collections import defaultdict
from pathlib import Path

from ..config.run import GRID_FIELDS
from ..registry.models import arch_name
from ..registry.sets import color
from ..study.gamma import (ABLATION_EXAMPLES, ANALYZED_SETS, KS, RANDOM_DRAWS, RARE, RELATIVE,
                           STAT_BATCHES, THRESHOLDS, conditions)
from ..study.protocol import budget_sentence
from ..study.stats import mean_ci, show
from .figures import save_figure, subplots
from .render import figure, fold, table as table_block, text


def _base_name(key) -> str:
    rest = dict(key[4]) if len(key) > 4 else {}
    extra = [str(rest[k]) for k in ("norm", "dataset") if k in rest and rest[k] not in ("batchnorm", "mnist")]
    return "_".join([arch_name({"model": key[0], "width": key[1], "depth": key[2]})] + extra)


def _study_of(key) -> tuple:
    return tuple(kv for kv in key[4] if kv[0] not in GRID_FIELDS)


def condition_name(key, keys=()) -> str:
    """The label of a condition: the architecture and the settings that tell it from the report's
    baseline (norm, data set) where they differ; when another condition among `keys` of another
    study has the same label, a short hash of this one's study (so figures never overwrite each other)."""
    base = _base_name(key)
    if any(_base_name(k) == base and _study_of(k) != _study_of(key) for k in keys):
        base += "_" + hashlib.sha256(repr(_study_of(key)).encode()).hexdigest()[:6]
    return base


def _pct(st) -> str:
    """'95.1 ± 0.4', or '95.1' from one seed: the text beside it gives n and the % sign."""
    return show(st, "", count="never")


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
    fig, axes = subplots(rows, cols, figsize=(3.0 * cols, 2.3 * rows), squeeze=False)
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


# Frankle et al.'s finding, as the text available here states it, and why no measure here is set beside it.
FRANKLE_DISABLED = ("Their abstract: BN-only training 'learns to disable around a third of the random features' "
                    "(CIFAR-10 ResNets, whose BatchNorm trains beta). The text available here gives neither the "
                    "measure nor the threshold behind that number, so none of the fractions below is like for like "
                    "with it, and none is printed beside it.")

CURVES = (("smallest", "o-", "least important first"),
          ("initial", "x-.", "least important at initialisation first (control)"),
          ("largest", "s:", "largest first"), ("random", "--", "random"),
          ("untrained", "^-", "untrained network, least important first (control)"))


def plot(groups: dict, out_dir: Path, written: dict, chance: float) -> dict[str, list[tuple[str, str]]]:
    """Per architecture (by name): histograms of learned gamma (and beta) per layer, and the ablation
    curves, as (png, caption) pairs."""
    by_arch = {}
    for arch_key, keys in sorted(_arch_groups(groups).items(), key=lambda kv: str(kv[0])):
        keys = sorted(keys, key=lambda k: ANALYZED_SETS.index(k[3]) if k[3] in ANALYZED_SETS else 99)
        name = condition_name(keys[0], groups)
        figs = by_arch.setdefault(name, [])
        figs.append((_hist_grid(groups, keys, "gamma", name, out_dir, written),
                     f"Learned gamma per layer at {name}, by trainable set, all seeds together; "
                     "grey: the initial gamma."))
        if any(a["has_beta"] for k in keys for a in groups[k]):
            figs.append((_hist_grid(groups, keys, "beta", name, out_dir, written),
                         f"Learned beta per layer at {name}, by trainable set, all seeds together (beta starts at 0)."))
        fig, ax = subplots(figsize=(6, 3.6))
        for k in keys:
            c = color(k[3])
            for field, style, label in CURVES:
                if not all(field in a["ablation"] for a in groups[k]):
                    continue
                st = _curve(groups, k, field)
                ax.plot(KS, [x.mean for x in st], style, color=c, markersize=3, label=f"{k[3]}: {label}")
                if field == "random":
                    ax.fill_between(KS, [x.lo for x in st], [x.hi for x in st], color=c, alpha=0.15, linewidth=0)
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel="% of features switched off per layer (gamma = beta = 0)", ylabel="test accuracy",
               ylim=(0, 1), title=f"ablation, {name}")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        ax.grid(alpha=0.3)
        save_figure(fig, out_dir, f"ablation_{name}", written)
        figs.append((f"ablation_{name}.png", f"Test accuracy (first {ABLATION_EXAMPLES} test images) with k% of every "
                     f"layer's features off: least important first (solid; importance: |gamma| times the norm of what "
                     f"reads the feature where one layer alone does, else |gamma|), most important first (dotted), at "
                     f"random (dashed, band: 95% interval over seeds of the mean of {RANDOM_DRAWS} draws), and two "
                     "controls: least important at initialisation first (dash-dot) and the untrained network least "
                     "important first (triangles); "
                     f"BatchNorm statistics re-estimated on {STAT_BATCHES} training batches after switching off, "
                     f"{name}; dotted grey: chance."))
    return by_arch


def _ordered(groups):
    return sorted(groups, key=lambda k: (condition_name(k, groups),
                                         ANALYZED_SETS.index(k[3]) if k[3] in ANALYZED_SETS else 99))


def table(groups: dict) -> tuple[list[str], list[list[str]]]:
    """Per condition: disabled fractions (scale-free, then absolute), the gamma scale of the layers no
    normalization follows, dead units, ablation at 30% with its controls."""
    header = (["architecture", "set", "n",
               f"disabled: |gamma| x what reads it < {RELATIVE:g} x layer RMS, layers followed by a normalization, "
               "learned (initial) (%)"]
              + [f"|gamma| < {t}, every layer, learned (initial) (%)" for t in THRESHOLDS]
              + ["gamma scale (learned / initial RMS) of the layers no normalization follows",
                 "dead units (%)", f"active on < {100 * RARE:g}% (%)",
                 "acc, 30% off: least important / least important initially (control) / most important / random; "
                 "untrained (%)"])
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
        curves = [f for f in ("smallest", "initial", "largest", "random") if all(f in a["ablation"] for a in runs)]
        abl = " / ".join(_pct(_curve(groups, key, f)[j]) for f in curves)
        if all("untrained" in a["ablation"] for a in runs):
            abl += f"; {_pct(_curve(groups, key, 'untrained')[j])}"
        diverged = sum(a.get("status") == "diverged" for a in runs)
        rows.append([condition_name(key, groups), key[3],
                     str(len(runs)) + (f" ({diverged} diverged)" if diverged else ""),
                     f"{_pct(frac('disabled', 'relative'))} ({_mean(frac('disabled_initial', 'relative'))})"]
                    + [f"{_pct(frac('disabled', str(t)))} ({_mean(frac('disabled_initial', str(t)))})"
                       for t in THRESHOLDS] + [_scales(runs), dead, rare, abl])
    return header, rows


def _mean(st) -> str:
    return "–" if not st.n else f"{100 * st.mean:.1f}"


def _scales(runs) -> str:
    """The per-layer gamma scale of the layers no normalization follows: 'layer 4: 0.62 ± 0.05', or the
    range over many layers (a ResNet's residual branches); report.json has every layer."""
    layers = [i for i, free in enumerate(runs[0].get("scale_free", [])) if not free]
    if not layers or not all("layer_scale" in a for a in runs):
        return "–"
    per = {i: mean_ci(a["layer_scale"][i] for a in runs) for i in layers}
    if len(per) <= 3:
        return "; ".join(f"layer {i + 1}: {st.mean:.2f}" + (f" ± {st.half:.2f}" if st.n > 1 else "")
                         for i, st in per.items())
    means = sorted(st.mean for st in per.values())
    return f"{len(per)} layers: {means[0]:.2f} to {means[-1]:.2f} (median {statistics.median(means):.2f})"


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
        absolute = mean_ci(a["disabled"]["0.1"]["all"] for a in runs)
        sm, rd, full = (_curve(groups, key, "smallest")[j], _curve(groups, key, "random")[j],
                        _curve(groups, key, "smallest")[0])
        scale_free = (f"{_pct(learned)}% of the features of the layers followed by a normalization disabled "
                      f"(|gamma| times the norm of what reads it below {100 * RELATIVE:g}% of their layer's RMS), "
                      f"against {_mean(init)}% at initialisation" if learned.n else
                      "no layer is followed by a normalization, so there is no scale-free fraction")
        sentence = (f"{condition_name(key, groups)}, {key[3]} (n={len(runs)}): {scale_free}; by the absolute |gamma| "
                    f"< 0.1 on every layer, {_pct(absolute)}%. Switching off the 30% least important features moves "
                    f"accuracy from {_pct(full)}% to {_pct(sm)}%")
        if all("initial" in a["ablation"] for a in runs):
            sentence += (", the 30% least important at initialisation (control) to "
                         f"{_pct(_curve(groups, key, 'initial')[j])}%")
        sentence += f", 30% at random to {_pct(rd)}%."
        if all(a["dead"] is not None for a in runs):
            sentence += f" Dead units: {_pct(mean_ci(a['dead'] for a in runs))}%."
        out.append(sentence + " " + budget_sentence(runs))
    return out


def section(analyses: list[dict], out_dir: Path, written: dict, chance: float):
    """The report's section on what the affine parameters learn, and its table (header, rows)."""
    groups = conditions(analyses)
    figs_by_arch = plot(groups, out_dir, written, chance)
    header, rows = table(groups)
    blocks = [{"kind": "question", "text": "Does training the affine parameters disable random features, as "
               f"Frankle et al. found? {FRANKLE_DISABLED}"}]
    blocks += [{"kind": "answer", "text": a} for a in answers(groups)]
    if not all(a["has_beta"] for a in analyses):
        blocks.append(text("Some of these runs have no trained hidden beta (the `report` preset has none; `gamma` "
                           "keeps it at 0): there ReLU(gamma * x_hat) is positive on about half the inputs whenever "
                           "gamma != 0, so units cannot die and dead units are not reported."))
    blocks += [fold(f"Figures of {name}: learned gamma{' and beta' if len(figs) > 2 else ''} per layer, ablation",
                    [figure(png, cap) for png, cap in figs]) for name, figs in figs_by_arch.items()]
    blocks.append(table_block(header, rows, caption=(
        f"Mean ± 95% t interval over seeds (n); fractions weighted by feature count. Disabled, scale-free: a "
        f"feature's |gamma| times the norm of the next layer's weights that read it (each row over its BatchNorm's "
        f"running standard deviation), below {100 * RELATIVE:g}% of that product's root-mean-square over its layer, "
        "on the layers a normalization follows (through ReLU and the next layer). Scaling a layer's gamma and beta "
        "(the next normalization divides it out), one feature's gamma and beta by c with what reads it by 1/c "
        "(where those weights train), or a row of the next weights with its statistics leaves the network's "
        "function unchanged, and this measure too (tested). The last hidden layer of a chain (it "
        "feeds the head) and, in a ResNet, a block's second layer, its shortcut and the stem (they feed the "
        "residual sum) are not among them. The absolute thresholds count every layer and are not scale-free; "
        "no column is set beside Frankle et al.'s number (see the question). A layer's gamma scale "
        "is its learned RMS |gamma| over its initial one; in a ResNet what matters is a branch's scale relative to "
        "the others adding to the same stream (only the last stage's, which the head reads, is absolute). "
        "Ablation with BatchNorm statistics re-estimated after switching off; the controls switch off the "
        "features least important at initialisation (they contribute little whether or not training disabled them) and "
        "ablate the untrained network. With norm 'affine' nothing normalizes, so no layer is scale-free there.")))
    return {"title": "What the affine parameters learn", "blocks": blocks}, (header, rows)


def summaries(analyses: list[dict]) -> list[dict]:
    """Per analysed run, what report.json keeps."""
    return [{k: a.get(k) for k in ("run_id", "disabled", "disabled_initial", "scale_free", "layer_scale", "dead",
                                   "rare", "has_beta", "ablation", "test_accuracy")}
            | {"trainable": a["config"]["trainable"]}
            for a in analyses]

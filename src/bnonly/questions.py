"""The report's open questions, answered from whatever runs a store holds.

Each question compares runs that differ in one setting (normalization kind, allocation of the
random baseline, data set) against the report's baseline, paired by architecture, data set and seed.
A difference is "larger than seed noise" when its 95% paired interval excludes zero.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .figures import save_figure  # noqa: E402
from .models import arch_name  # noqa: E402
from .render import figure  # noqa: E402
from .stats import CHANCE, Stat, finished, mean_ci  # noqa: E402


def cfg_of(r) -> dict:
    return r.get("config") or {}


def is_baseline(r) -> bool:
    """The report's setting: BatchNorm (`all-nobn`: none), the random baseline spread evenly."""
    c = cfg_of(r)
    norm_ok = c.get("norm", "batchnorm") == "batchnorm" or r.get("trainable") == "all-nobn"
    return norm_ok and c.get("random_allocation", "even") == "even"


def _by(runs, trainable, key):
    """{(arch, dataset, seed): accuracy} of finished runs of `trainable` with setting key(r)."""
    out = defaultdict(dict)
    for r in finished(runs):
        if r.get("trainable") == trainable:
            out[key(r)][(arch_name(r), r.get("dataset"), r.get("seed"))] = float(r["test_accuracy"])
    return out


def _compare(groups, a, b) -> tuple[Stat, Stat, Stat] | None:
    """Mean accuracy of a and b and their paired difference a - b, over the pairs both have."""
    pairs = sorted(set(groups.get(a, {})) & set(groups.get(b, {})))
    if not pairs:
        return None
    return (mean_ci(groups[a][p] for p in pairs), mean_ci(groups[b][p] for p in pairs),
            mean_ci(groups[a][p] - groups[b][p] for p in pairs))


def _sentence(label_a, label_b, st) -> str:
    sa, sb, diff = st
    noise = "larger than seed noise" if diff.n > 1 and (diff.lo > 0 or diff.hi < 0) else "within seed noise"
    return (f"{label_a}: {100 * sa.mean:.1f}% ± {100 * sa.half:.1f} vs {label_b}: {100 * sb.mean:.1f}% ± "
            f"{100 * sb.half:.1f}; difference {100 * diff.mean:+.1f} ± {100 * diff.half:.1f} points "
            f"(95% paired interval, n={diff.n}): {noise}.")


def _bars(groups, conditions, trainable, out_dir: Path, stem: str, written: dict, title: str) -> str:
    archs = sorted({p[0] + ("" if p[1] == "mnist" else f" {p[1]}") for c in conditions for p in groups.get(c, {})})
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(archs) * len(conditions) / 2), 3.6))
    width = 0.8 / len(conditions)
    for i, c in enumerate(conditions):
        by_arch = defaultdict(list)
        for (a, ds, _), acc in groups.get(c, {}).items():
            by_arch[a + ("" if ds == "mnist" else f" {ds}")].append(acc)
        stats = [mean_ci(by_arch.get(a, [])) for a in archs]
        xs = [j + (i - (len(conditions) - 1) / 2) * width for j in range(len(archs))]
        ax.bar(xs, [s.mean for s in stats], width, yerr=[s.half for s in stats], capsize=2, label=str(c))
    ax.axhline(CHANCE, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set(xticks=range(len(archs)), ylim=(0, 1), ylabel=f"test accuracy ({trainable})", title=title)
    ax.set_xticklabels(archs, rotation=20, fontsize=8)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3, axis="y")
    save_figure(fig, out_dir, stem, written)
    return f"{stem}.png"


def _section(title: str, question: str, fig: str | None, answers: list[str]) -> dict:
    blocks = [{"kind": "question", "text": question}] + ([figure(fig, title)] if fig else [])
    return {"title": title, "blocks": blocks + [{"kind": "answer", "text": a} for a in answers]}


def sections(runs, out_dir: Path, written: dict) -> list[dict]:
    """One report section (render.py) per question that the store can answer."""
    out = []
    norms = _by(runs, "bn", lambda r: cfg_of(r).get("norm", "batchnorm"))
    for kind, title, q in (
            ("affine", "Affine parameters without normalization",
             "Do a per-feature scale and shift alone, with no normalization, do what BatchNorm's gamma and beta do?"),
            ("layernorm", "LayerNorm's affine parameters",
             "Does training only LayerNorm's gamma and beta work as well as training only BatchNorm's?")):
        st = _compare(norms, kind, "batchnorm")
        if st:
            fig = _bars(norms, ["batchnorm", kind], "bn", out_dir, f"question_{kind}", written,
                        f"bn only: {kind} vs batchnorm")
            out.append(_section(title, q, fig, [_sentence(f"bn with {kind}", "bn with BatchNorm", st)]))
    allocs = _by([r for r in runs if cfg_of(r).get("norm", "batchnorm") == "batchnorm"], "random",
                 lambda r: cfg_of(r).get("random_allocation", "even"))
    others = [a for a in ("proportional", "first", "last") if _compare(allocs, a, "even")]
    if others:
        fig = _bars(allocs, ["even"] + others, "random", out_dir, "question_allocation", written,
                    "random weights: allocation over layers")
        out.append(_section("Uneven allocation of the random parameters",
                            "Does it matter how the random baseline's trainable weights are spread over the "
                            "hidden layers (the report spread them evenly)?", fig,
                            [_sentence(f"random, {a}", "random, even", _compare(allocs, a, "even")) for a in others]))
    base = [r for r in runs if is_baseline(r)]
    datasets = sorted({r.get("dataset") for r in finished(base)} - {"mnist", None})
    if datasets:
        sets = _by(base, "bn", lambda r: r.get("dataset"))
        rnd = _by(base, "random", lambda r: r.get("dataset"))
        answers = []
        for ds in datasets:
            bn, rd = mean_ci(sets.get(ds, {}).values()), mean_ci(rnd.get(ds, {}).values())
            answers.append(f"{ds}: bn only {100 * bn.mean:.1f}% ± {100 * bn.half:.1f} (n={bn.n}), random weights "
                           f"{100 * rd.mean:.1f}% ± {100 * rd.half:.1f} (n={rd.n}); the claims table for {ds} is below.")
        out.append(_section("Other data sets", "Do the report's findings hold beyond MNIST?", None, answers))
    return out

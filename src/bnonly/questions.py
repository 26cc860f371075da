"""The report's open questions, answered from whatever runs one study holds.

Each question compares runs that differ in one setting (normalization kind, allocation of the
random baseline, data set) against the report's baseline. Runs are paired by seed within one
architecture and data set (they share weights and data order), and every architecture is answered
on its own: a paired per-seed difference with a 95% t interval over seeds. The summary counts the
architectures whose interval excludes zero; it never pools architectures as if their spread were
seed noise.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .figures import save_figure  # noqa: E402
from .models import arch_name  # noqa: E402
from .render import figure, table  # noqa: E402
from .sets import SETS  # noqa: E402
from .stats import accuracy, budget_sentence, config_of, counted, gap, value  # noqa: E402


def is_baseline(r) -> bool:
    """The report's setting: BatchNorm (`all-nobn`: none), the random baseline spread evenly."""
    c = config_of(r)
    return c["norm"] in ("batchnorm", "none" if SETS[c["trainable"]].without_norm else "batchnorm") \
        and c["random_allocation"] == "even"


def _by(runs, trainable, key) -> dict:
    """{setting: {(arch, dataset): {seed: run}}} of the counted runs of `trainable`, setting = key(r)."""
    out = defaultdict(lambda: defaultdict(dict))
    for r in counted(runs):
        c = config_of(r)
        if c["trainable"] == trainable:
            cell = out[key(r)][(arch_name(c), c["dataset"])]
            if c["seed"] in cell:
                raise ValueError(f"two {trainable} runs of {arch_name(c)} seed {c['seed']}: configurations differ "
                                 "in more than the seed (split the store by study first)")
            cell[c["seed"]] = r
    return out


def _label(arch: str, ds: str) -> str:
    return arch if ds == "mnist" else f"{arch} {ds}"


def _answer(groups, a, b, label_a: str, label_b: str) -> tuple[str, dict] | None:
    """A sentence and a table block: per architecture, a and b and their paired difference a − b,
    the sentence with the budget its runs rest on."""
    archs = sorted(set(groups.get(a, {})) & set(groups.get(b, {})))
    rows, up, down, measured, used = [], 0, 0, 0, []
    for k in archs:
        common = sorted(set(groups[a][k]) & set(groups[b][k]))  # both sides over the seeds they share
        ca, cb = ({s: g[k][s] for s in common} for g in (groups[a], groups[b]))
        d = gap(ca, cb)
        if d.n == 0:
            continue
        used += list(ca.values()) + list(cb.values())
        measured += d.n >= 2
        up += d.n >= 2 and d.lo > 0
        down += d.n >= 2 and d.hi < 0
        rows.append([_label(*k), value(accuracy(ca)), value(accuracy(cb)), value(d, signed=True), str(d.n)])
    if not rows:
        return None
    text = (f"{label_a} − {label_b}, paired by seed per architecture: the 95% interval lies above 0 in {up} and "
            f"below 0 in {down} of {measured} architectures with ≥ 2 seeds"
            + (f", and includes 0 in the other {measured - up - down}." if measured - up - down else ".")
            + " " + budget_sentence(used))
    caption = (f"Test accuracy (%) of {label_a} and {label_b}, mean ± 95% interval over seeds; difference = paired "
               "per-seed difference in points with its 95% t interval; n = seeds; (k diverged) where runs diverged "
               "(counted at their best weights).")
    return text, table(["architecture", label_a, label_b, "difference (points)", "n"], rows, caption=caption)


def _bars(groups, conditions, trainable, out_dir: Path, stem: str, written: dict, title: str, chance: float) -> str:
    archs = sorted({k for c in conditions for k in groups.get(c, {})})
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(archs) * len(conditions) / 2), 3.6))
    width = 0.8 / len(conditions)
    for i, c in enumerate(conditions):
        stats = [accuracy(groups.get(c, {}).get(k, {})) for k in archs]
        xs = [j + (i - (len(conditions) - 1) / 2) * width for j in range(len(archs))]
        ax.bar(xs, [s.mean for s in stats], width, yerr=[s.half for s in stats], capsize=2, label=str(c))
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set(xticks=range(len(archs)), ylim=(0, 1), ylabel=f"test accuracy ({trainable})", title=title)
    ax.set_xticklabels([_label(*k) for k in archs], rotation=20, fontsize=8)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3, axis="y")
    save_figure(fig, out_dir, stem, written)
    return f"{stem}.png"


def _section(title: str, question: str, fig: str | None, answers: list[tuple[str, dict]]) -> dict:
    blocks = [{"kind": "question", "text": question}] + ([figure(fig, f"{title}: mean and 95% interval over seeds")]
                                                         if fig else [])
    for text, tab in answers:
        blocks += [{"kind": "answer", "text": text}, tab]
    return {"title": title, "blocks": blocks}


def sections(runs, out_dir: Path, written: dict, chance: float) -> list[dict]:
    """One report section (render.py) per question that one study's runs can answer."""
    out = []
    norms = _by(runs, "bn", lambda r: config_of(r)["norm"])
    shift = all(config_of(r)["hidden_beta"] for r in counted(runs))  # without hidden beta, affine is a scale alone
    what = "a per-feature scale and shift" if shift else "a per-feature scale (no shift: this study has no hidden beta)"
    for kind, title, q in (
            ("affine", "Affine parameters without normalization",
             f"Does {what} alone, with no normalization, do what BatchNorm's gamma{' and beta' if shift else ''} do?"),
            ("layernorm", "LayerNorm's affine parameters",
             f"Does training only LayerNorm's gamma{' and beta' if shift else ''} work as well as training only "
             f"BatchNorm's{'' if shift else ' (no beta in this study)'}?")):
        ans = _answer(norms, kind, "batchnorm", f"bn with {kind}", "bn with BatchNorm")
        if ans:
            fig = _bars(norms, ["batchnorm", kind], "bn", out_dir, f"question_{kind}", written,
                        f"bn only: {kind} vs batchnorm", chance)
            out.append(_section(title, q, fig, [ans]))
    allocs = _by([r for r in runs if config_of(r)["norm"] == "batchnorm"], "random",
                 lambda r: config_of(r)["random_allocation"])
    answers = {a: _answer(allocs, a, "even", f"random, {a}", "random, even") for a in ("proportional", "first", "last")}
    answers = {a: v for a, v in answers.items() if v}
    if answers:
        fig = _bars(allocs, ["even"] + list(answers), "random", out_dir, "question_allocation", written,
                    "random weights: allocation over layers", chance)
        out.append(_section("Uneven allocation of the random parameters",
                            "Does it matter how the random baseline's trainable weights are spread over the "
                            "hidden layers (the report spread them evenly)?", fig, list(answers.values())))
    base = [r for r in runs if is_baseline(r)]
    datasets = sorted({config_of(r)["dataset"] for r in counted(base)} - {"mnist"})
    if datasets:
        answers = []
        for ds in datasets:
            sets = _by([r for r in base if config_of(r)["dataset"] == ds], "bn", lambda r: "bn")
            sets.update(_by([r for r in base if config_of(r)["dataset"] == ds], "random", lambda r: "random"))
            ans = _answer(sets, "bn", "random", f"bn only on {ds}", f"random weights on {ds}")
            if ans:
                answers.append((ans[0] + f" The claims table for {ds} is in the section 'Claims on {ds}'.", ans[1]))
        if answers:
            out.append(_section("Other data sets", "Do the report's findings hold beyond MNIST? BN-only against "
                                "an equal number of random weights, per architecture.", None, answers))
    return out

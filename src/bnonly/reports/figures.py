"""Figures: accuracy against depth (the report's Figures 1-3), against trainable parameters, the
headline's bn against random, learning curves, and the open questions' bars (reports/analysis.py draws
the gamma analysis).

Every figure is saved as PNG and SVG through `save_figure`; colours and set order come from the
trainable-set registry.
"""
from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..registry.models import arch_name
from ..registry.sets import color, ordered
from ..study.questions import label
from ..study.cells import accuracy, config_of, counted
from ..study.stats import mean_ci

DPI = 120


def subplots(nrows: int = 1, ncols: int = 1, figsize=None, **kwargs):
    """A figure and its axes outside pyplot: no global backend is chosen and no figure is kept open,
    so a notebook's backend stays as it was."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig, out_dir: Path, stem: str, written: dict) -> None:
    """The figure as PNG and SVG in out_dir; `written` maps file names to paths."""
    for ext in ("png", "svg"):
        path = out_dir / f"{stem}.{ext}"
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
        written[path.name] = path


def _depth_panel(ax, mlp, width: int, chance: float) -> None:
    cells = {(d, t): s for (w, d, t), s in mlp.items() if w == width}
    depths = sorted({d for d, _ in cells})
    for t in ordered(t for _, t in cells):
        ds = [d for d in depths if (d, t) in cells]
        st = [cells[(d, t)] for d in ds]
        c = color(t)
        ax.plot(ds, [s.mean for s in st], "o-", color=c, label=t, markersize=4)
        ax.fill_between(ds, [s.lo for s in st], [s.hi for s in st], color=c, alpha=0.2, linewidth=0)
        if len(ds) == 1:  # a band over one x is invisible: draw the interval as an error bar
            ax.errorbar(ds, [st[0].mean], yerr=[st[0].half], color=c, capsize=3, linestyle="")
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set(title=f"width {width}", xlabel="depth (hidden layers)", ylim=(0, 1), xticks=depths)
    if len(depths) == 1:
        ax.set_xlim(depths[0] - 1, depths[0] + 1)
    ax.grid(alpha=0.3)


def plot_accuracy_vs_depth(mlp, out_dir: Path, written: dict, chance: float) -> str | None:
    """Combined figure (one panel per width) plus one file per width; returns a skip reason or None."""
    widths = sorted({w for w, _, _ in mlp})
    if not widths:
        return "No finished MLP runs, so the accuracy-vs-depth figures are not drawn."
    ncols = min(len(widths), 4)
    nrows = math.ceil(len(widths) / ncols)
    fig, axes = subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), sharey=True, squeeze=False)
    for ax, w in zip(axes.flat, widths):
        _depth_panel(ax, mlp, w, chance)
    for ax in list(axes.flat)[len(widths):]:
        ax.set_visible(False)
    axes[0][0].set_ylabel("test accuracy")
    handles = {}
    for ax in list(axes.flat)[:len(widths)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    order = ordered(k for k in handles if k != "chance") + ["chance"]
    fig.legend([handles[k] for k in order], order, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    save_figure(fig, out_dir, "accuracy_vs_depth", written)
    for w in widths:
        fig, ax = subplots(figsize=(5.5, 4))
        _depth_panel(ax, mlp, w, chance)
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        save_figure(fig, out_dir, f"accuracy_vs_depth_w{w}", written)
    return None


def plot_accuracy_vs_params(runs, out_dir: Path, written: dict, chance: float) -> str | None:
    """Every counted run as a point; runs with 0 trainable parameters are drawn at x = 1."""
    done = [r for r in counted(runs) if r.get("trainable_params") is not None]
    if not done:
        return "No finished runs with a trainable-parameter count, so the accuracy-vs-parameters figure is not drawn."
    fig, ax = subplots(figsize=(7, 4.5))
    # one marker per kind of model (the CIFAR ResNets of every depth and width share one)
    kinds = {"mlp": ("o", "MLP"), "lenet5": ("^", "LeNet-5"), "resnet": ("D", "ResNet"), "vgg": ("v", "VGG")}

    def kind(r) -> str:
        m = str(r.get("model"))
        return next((k for k in kinds if m == k or (k in ("resnet", "vgg") and m.startswith(k))), "mlp")
    for t in ordered(r["trainable"] for r in done):
        for k, (marker, _) in kinds.items():
            pts = [r for r in done if r["trainable"] == t and kind(r) == k]
            if pts:
                ax.scatter([max(int(r["trainable_params"]), 1) for r in pts], [r["test_accuracy"] for r in pts],
                           color=color(t), marker=marker, s=22, alpha=0.75)
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1)
    present = [k for k in kinds if any(kind(r) == k for r in done)]
    ax.set(xscale="log", ylim=(0, 1), xlabel="trainable parameters (log scale)", ylabel="test accuracy",
           title="test accuracy vs trainable parameters ("
                 + ", ".join(f"{kinds[k][0]} = {kinds[k][1]}" for k in present) + ")")
    ax.grid(alpha=0.3)
    sets = ordered(r["trainable"] for r in done)
    handles = [Line2D([], [], color=color(t), marker="s", linestyle="") for t in sets]
    handles += [Line2D([], [], color="black", marker=kinds[k][0], linestyle="") for k in present]
    handles.append(Line2D([], [], color="grey", linestyle="--"))
    labels = [t + (" (0 params, drawn at x=1)" if t == "none" else "") for t in sets]
    labels += [kinds[k][1] for k in present] + ["chance"]
    ax.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    save_figure(fig, out_dir, "accuracy_vs_params", written)
    return None


def plot_bn_vs_random(rows: list[dict], out_dir: Path, written: dict, chance: float) -> str | None:
    """The headline: per architecture, bn and random side by side (mean and 95% interval over seeds),
    the paired per-seed difference above each pair, chance dashed. rows: study/headline.py's headline()."""
    if not rows:
        return "No architecture with both bn and random runs, so the BN-only against random figure is not drawn."
    fig, ax = subplots(figsize=(max(5.0, 0.9 * len(rows) + 1.5), 3.8))
    xs = list(range(len(rows)))
    for offset, key in ((-0.2, "bn"), (0.2, "random")):
        stats = [r[key] for r in rows]
        ax.bar([x + offset for x in xs], [s.mean for s in stats], 0.38, yerr=[s.half for s in stats], capsize=3,
               color=color(key), label=key)
    for x, r in zip(xs, rows):
        top = max(r["bn"].mean + r["bn"].half, r["random"].mean + r["random"].half)
        g = r["gap"]
        ax.text(x, min(top + 0.03, 0.97), f"{100 * g.mean:+.1f}" + (f"\n±{100 * g.half:.1f}" if g.n > 1 else ""),
                ha="center", va="bottom", fontsize=7)
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set(ylim=(0, 1.1), ylabel="test accuracy", xticks=xs,
           title="BN-only against an equal number of random weights (bn − random in points above each pair)")
    ax.set_xticklabels([r["label"] for r in rows], rotation=30 if len(rows) > 8 else 0, fontsize=8)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.grid(alpha=0.3, axis="y")
    save_figure(fig, out_dir, "bn_vs_random", written)
    return None


def learning_curves(runs) -> dict[str, dict]:
    """Per architecture (models.arch_name): its epoch cap and, per set, [(epoch, Stat)] of the
    validation accuracy over the seeds still training at that epoch (an early-stopped run ends)."""
    out: dict[str, dict] = {}
    for r in counted(runs):
        c = config_of(r)
        arch = out.setdefault(arch_name(c), {"cap": c["max_epochs"], "model": c["model"], "width": c["width"] or 0,
                                             "depth": c["depth"] or 0, "sets": {}})
        arch["cap"] = max(arch["cap"], c["max_epochs"])
        per_epoch = arch["sets"].setdefault(c["trainable"], {})
        for i, h in enumerate(r.get("history") or []):
            if h.get("val_accuracy") is not None:
                per_epoch.setdefault(int(h.get("epoch", i + 1)), []).append(h["val_accuracy"])
    for arch in out.values():
        arch["sets"] = {t: [(e, mean_ci(v)) for e, v in sorted(arch["sets"][t].items())]
                        for t in ordered(arch["sets"]) if arch["sets"][t]}
    return {k: v for k, v in out.items() if v["sets"]}


def plot_learning_curves(runs, out_dir: Path, written: dict, chance: float) -> str | None:
    """Validation accuracy against epoch, one panel per architecture (a row per model and width, a
    column per depth), one line per set (mean over the seeds still training, band: 95% interval while
    every seed trains), the epoch cap dashed."""
    curves = learning_curves(runs)
    if not curves:
        return "No run with a per-epoch history, so the learning curves are not drawn."
    rows = sorted({(v["model"] != "mlp", v["model"], v["width"]) for v in curves.values()})
    cols = sorted({v["depth"] for v in curves.values()})
    fig, axes = subplots(len(rows), len(cols), figsize=(2.6 * len(cols) + 1.6, 2.1 * len(rows)), squeeze=False,
                             sharey=True)
    used = set()
    for name, v in curves.items():
        i, j = rows.index((v["model"] != "mlp", v["model"], v["width"])), cols.index(v["depth"])
        ax = axes[i][j]
        used.add((i, j))
        for t, pts in v["sets"].items():
            es, st = [e for e, _ in pts], [s for _, s in pts]
            ax.plot(es, [s.mean for s in st], color=color(t), linewidth=1.2, label=t)
            every = [(e, s) for e, s in pts if s.n == st[0].n > 1]  # the band while every seed still trains
            ax.fill_between([e for e, _ in every], [s.lo for _, s in every], [s.hi for _, s in every],
                            color=color(t), alpha=0.2, linewidth=0)
        ax.axvline(v["cap"], color="black", linestyle="--", linewidth=0.8)
        ax.axhline(chance, color="grey", linestyle=":", linewidth=0.8)
        ax.set_title(name, fontsize=8)
        ax.set(ylim=(0, 1), xlim=(0, v["cap"] * 1.03))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if (i, j) not in used:
                axes[i][j].set_visible(False)
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    order = ordered(handles)
    fig.legend([handles[k] for k in order] + [Line2D([], [], color="black", linestyle="--")], order + ["epoch cap"],
               loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    fig.supxlabel("epoch", fontsize=9)
    fig.supylabel("validation accuracy", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_dir, "learning_curves", written)
    return None


def question_bars(groups, conditions, trainable, out_dir: Path, stem: str, written: dict, title: str,
                  chance: float) -> str:
    """An open question's bars: per architecture, each condition's test accuracy (mean and 95% interval)."""
    archs = sorted({k for c in conditions for k in groups.get(c, {})})
    fig, ax = subplots(figsize=(max(5, 1.4 * len(archs) * len(conditions) / 2), 3.6))
    width = 0.8 / len(conditions)
    for i, c in enumerate(conditions):
        stats = [accuracy(groups.get(c, {}).get(k, {})) for k in archs]
        xs = [j + (i - (len(conditions) - 1) / 2) * width for j in range(len(archs))]
        ax.bar(xs, [s.mean for s in stats], width, yerr=[s.half for s in stats], capsize=2, label=str(c))
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set(xticks=range(len(archs)), ylim=(0, 1), ylabel=f"test accuracy ({trainable})", title=title)
    ax.set_xticklabels([label(*k) for k in archs], rotation=20, fontsize=8)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3, axis="y")
    save_figure(fig, out_dir, stem, written)
    return f"{stem}.png"

"""The report: statistics over seeds, figures, tables and the claims table, as Markdown and HTML.

write_report(out_dir) reads out_dir/results.sqlite (or takes runs, a list of run dicts as
Store.runs() returns them) and writes figures (PNG + SVG), report.md and report.html into
out_dir. Only finished runs with a finite test accuracy enter the statistics; diverged and failed
runs are counted in the text. Partial data never crashes it: what cannot be drawn is skipped, with a
sentence saying why.
"""
from __future__ import annotations

import html
import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

SETS = ("all", "all-nobn", "bn", "bn+out", "random", "out", "none", "gamma", "beta")
COLORS = dict(zip(SETS, ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                         "#8c564b", "#7f7f7f", "#e377c2", "#17becf")))
CHANCE = 0.1  # MNIST: ten balanced classes
DPI = 120
# Student's t quantile t_{0.975, df} for df = 1..30; beyond 30 we use the normal 1.96.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
CONFIG_FIELDS = ("gamma_init", "hidden_beta", "bn_momentum", "bn_eps", "lr", "momentum",
                 "batch_size", "max_epochs", "patience", "lr_drop_epoch", "subset", "val_fraction",
                 "random_placement", "random_norm", "precision")


# ----------------------------------------------------------------------------- statistics

class Stat(NamedTuple):
    mean: float
    half: float  # half-width of the 95% interval (0 when n == 1: the interval is just the mean)
    n: int

    @property
    def lo(self) -> float:
        return self.mean - self.half

    @property
    def hi(self) -> float:
        return self.mean + self.half


def t975(df: int) -> float:
    return T975[df - 1] if 1 <= df <= len(T975) else 1.96


def mean_ci(values) -> Stat:
    """Mean and 95% Student-t half-interval over seeds; NaN/None values are dropped."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return Stat(math.nan, math.nan, 0)
    mean = sum(xs) / n
    if n == 1:
        return Stat(mean, 0.0, 1)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return Stat(mean, t975(n - 1) * sd / math.sqrt(n), n)


def finished(runs) -> list[dict]:
    """The runs that count: status 'finished' with a finite test accuracy."""
    out = []
    for r in runs:
        acc = r.get("test_accuracy")
        if r.get("status") == "finished" and acc is not None and math.isfinite(float(acc)):
            out.append(r)
    return out


def mlp_stats(runs) -> dict[tuple[int, int, str], Stat]:
    """(width, depth, trainable) -> Stat over the finished MLP runs."""
    groups = defaultdict(list)
    for r in finished(runs):
        if r.get("model") == "mlp":
            groups[(int(r["width"]), int(r["depth"]), r["trainable"])].append(r["test_accuracy"])
    return {k: mean_ci(v) for k, v in sorted(groups.items())}


def lenet_stats(runs) -> dict[str, Stat]:
    """trainable -> Stat over the finished LeNet-5 runs (width/depth are placeholders there)."""
    groups = defaultdict(list)
    for r in finished(runs):
        if r.get("model") == "lenet5":
            groups[r["trainable"]].append(r["test_accuracy"])
    return {k: mean_ci(groups[k]) for k in ordered_sets(groups)}


def ordered_sets(names) -> list[str]:
    names = set(names)
    return [s for s in SETS if s in names] + sorted(names - set(SETS))


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def cell(s: Stat | None) -> str:
    if s is None or s.n == 0:
        return "–"
    return f"{100 * s.mean:.1f} (n=1)" if s.n == 1 else f"{100 * s.mean:.1f} ± {100 * s.half:.1f}"


# ----------------------------------------------------------------------------- claims

HELD, NOT_HELD, NOT_MEASURED = "held", "did not hold", "not measured"
CLAIMS = (
    "BN-only is consistently above chance at every width and depth.",
    "BN-only on 784-wide MLPs with 4–14 hidden layers reaches about 95% test accuracy.",
    "An equal number of random weights is more than 10 points worse there.",
    "With all parameters training, BatchNorm helps, more so at depth.",
    "BN-only accuracy grows with width more than with depth and levels off after about 4 hidden layers.",
    "LeNet-5 BN-only reaches about 30%, random weights 2–3 points lower.",
)
RULES = (
    "Held if, for every (width, depth) with bn runs, the mean test accuracy and the lower end of its "
    "95% interval are both above 10% (with one seed the interval is the mean).",
    "Over bn runs at width 784 and depth 4–14: held if every depth's mean is ≥ 93%.",
    "For each depth 4–14 at width 784 with both bn and random runs, gap = mean(bn) − mean(random); "
    "held if every gap > 10 points.",
    "gap(width, depth) = mean(all) − mean(all-nobn). Held if the mean gap over all cells is > 0 and, for "
    "more than half of the widths with ≥ 2 depths, the gap at the deepest depth exceeds the gap at the "
    "shallowest.",
    "For bn: width effect = mean over depths of (acc at widest − acc at narrowest width); depth effect = "
    "mean over widths of (acc at deepest − acc at shallowest depth); levelling = at the widest width, "
    "|acc(deepest) − acc(depth 4)| < 2 points. Held if width effect > depth effect and levelling holds. "
    "A part that fails makes it 'did not hold'; a part that cannot be measured (needs ≥ 2 widths sharing a "
    "depth, a width with ≥ 2 depths, and depth 4 plus a deeper one at the widest width) makes it "
    "'not measured' unless the other part failed.",
    "LeNet-5: held if 20% ≤ mean(bn) ≤ 40% and 0 < mean(bn) − mean(random) ≤ 5 points.",
)


def _claim(i: int, measured: str, verdict: str) -> dict:
    return {"id": i + 1, "claim": CLAIMS[i], "rule": RULES[i], "measured": measured, "verdict": verdict}


def claim1(mlp) -> dict:
    bn = {(w, d): s for (w, d, t), s in mlp.items() if t == "bn"}
    if not bn:
        return _claim(0, "No finished BN-only MLP runs.", NOT_MEASURED)
    (w, d), worst = min(bn.items(), key=lambda kv: kv[1].mean)
    low = min(bn.values(), key=lambda s: s.lo)
    ok = all(s.mean > CHANCE and s.lo > CHANCE for s in bn.values())
    return _claim(0, f"Lowest BN-only mean {pct(worst.mean)} at width {w}, depth {d} (n={worst.n}); "
                     f"lowest interval end {pct(low.lo)}; {len(bn)} cells.", HELD if ok else NOT_HELD)


def claim2(mlp) -> dict:
    bn = {d: s for (w, d, t), s in mlp.items() if t == "bn" and w == 784 and 4 <= d <= 14}
    if not bn:
        return _claim(1, "No BN-only runs at width 784 with depth 4–14.", NOT_MEASURED)
    lo, hi = min(s.mean for s in bn.values()), max(s.mean for s in bn.values())
    ok = all(s.mean >= 0.93 for s in bn.values())
    return _claim(1, f"BN-only means {pct(lo)}–{pct(hi)} over depths {sorted(bn)}.", HELD if ok else NOT_HELD)


def claim3(mlp) -> dict:
    gaps = {d: mlp[(784, d, "bn")].mean - mlp[(784, d, "random")].mean
            for (w, d, t) in mlp if t == "bn" and w == 784 and 4 <= d <= 14 and (784, d, "random") in mlp}
    if not gaps:
        return _claim(2, "No width-784 depth with both BN-only and random runs.", NOT_MEASURED)
    lo, hi = min(gaps.values()), max(gaps.values())
    ok = all(g > 0.10 for g in gaps.values())
    return _claim(2, f"bn − random = {100 * lo:.1f} to {100 * hi:.1f} points over depths {sorted(gaps)}.",
                  HELD if ok else NOT_HELD)


def claim4(mlp) -> dict:
    gaps = defaultdict(dict)  # width -> depth -> gap
    for (w, d, t) in mlp:
        if t == "all" and (w, d, "all-nobn") in mlp:
            gaps[w][d] = mlp[(w, d, "all")].mean - mlp[(w, d, "all-nobn")].mean
    if not gaps:
        return _claim(3, "No (width, depth) with both all and all-nobn runs.", NOT_MEASURED)
    mean_gap = sum(g for by_d in gaps.values() for g in by_d.values()) / sum(len(v) for v in gaps.values())
    deep = {w: (by_d[min(by_d)], by_d[max(by_d)]) for w, by_d in gaps.items() if len(by_d) >= 2}
    grows = sum(g_deep > g_shallow for g_shallow, g_deep in deep.values())
    text = f"Mean gap all − all-nobn {100 * mean_gap:+.1f} points over {sum(len(v) for v in gaps.values())} cells"
    if not deep:
        return _claim(3, text + "; no width has ≥ 2 depths, so 'more so at depth' is not measured.",
                      NOT_HELD if mean_gap <= 0 else NOT_MEASURED)
    text += "; shallowest → deepest gap: " + ", ".join(
        f"w{w}: {100 * a:+.1f} → {100 * b:+.1f}" for w, (a, b) in sorted(deep.items()))
    text += f" (grows at {grows} of {len(deep)} widths)."
    return _claim(3, text, HELD if mean_gap > 0 and grows > len(deep) / 2 else NOT_HELD)


def claim5(mlp) -> dict:
    bn = {(w, d): s.mean for (w, d, t), s in mlp.items() if t == "bn"}
    if not bn:
        return _claim(4, "No finished BN-only MLP runs.", NOT_MEASURED)
    widths = sorted({w for w, _ in bn})
    depths_of = {w: sorted(d for ww, d in bn if ww == w) for w in widths}
    parts, results = [], []
    # width vs depth effect
    narrow, wide = widths[0], widths[-1]
    common = [d for d in depths_of[wide] if (narrow, d) in bn] if len(widths) >= 2 else []
    multi = [w for w in widths if len(depths_of[w]) >= 2]
    if common and multi:
        w_eff = sum(bn[(wide, d)] - bn[(narrow, d)] for d in common) / len(common)
        d_eff = sum(bn[(w, depths_of[w][-1])] - bn[(w, depths_of[w][0])] for w in multi) / len(multi)
        results.append(w_eff > d_eff)
        parts.append(f"width effect (w{narrow}→w{wide}) {100 * w_eff:+.1f} vs depth effect "
                     f"{100 * d_eff:+.1f} points")
    else:
        parts.append("width vs depth not measured (needs ≥ 2 widths sharing a depth and a width with ≥ 2 depths)")
    # levelling off after ~4 hidden layers, at the widest width
    deeper = [d for d in depths_of[wide] if d > 4]
    if 4 in depths_of[wide] and deeper:
        change = bn[(wide, deeper[-1])] - bn[(wide, 4)]
        results.append(abs(change) < 0.02)
        parts.append(f"at w{wide}, depth 4 → {deeper[-1]}: {100 * change:+.1f} points")
    else:
        parts.append(f"levelling not measured (width {wide} lacks depth 4 or a deeper one)")
    if results and not all(results):
        verdict = NOT_HELD
    elif len(results) == 2:
        verdict = HELD
    else:
        verdict = NOT_MEASURED
    partial = " (partially measured)" if len(results) == 1 else ""
    return _claim(4, "; ".join(parts) + "." + partial, verdict)


def claim6(lenet) -> dict:
    if "bn" not in lenet or "random" not in lenet:
        return _claim(5, "Needs finished LeNet-5 runs with both bn and random.", NOT_MEASURED)
    bn, rnd = lenet["bn"].mean, lenet["random"].mean
    gap = bn - rnd
    ok = 0.2 <= bn <= 0.4 and 0 < gap <= 0.05
    return _claim(5, f"LeNet-5 BN-only {pct(bn)}, random {pct(rnd)}, gap {100 * gap:+.1f} points.",
                  HELD if ok else NOT_HELD)


def claims(runs) -> list[dict]:
    """The six claims: dicts with id, claim, rule, measured, verdict ('held'|'did not hold'|'not measured')."""
    mlp, lenet = mlp_stats(runs), lenet_stats(runs)
    return [claim1(mlp), claim2(mlp), claim3(mlp), claim4(mlp), claim5(mlp), claim6(lenet)]


# ----------------------------------------------------------------------------- figures

def _save(fig, out_dir: Path, stem: str, written: dict) -> None:
    for ext in ("png", "svg"):
        path = out_dir / f"{stem}.{ext}"
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
        written[path.name] = path
    plt.close(fig)


def _depth_panel(ax, mlp, width: int) -> None:
    cells = {(d, t): s for (w, d, t), s in mlp.items() if w == width}
    depths = sorted({d for d, _ in cells})
    for t in ordered_sets(t for _, t in cells):
        ds = [d for d in depths if (d, t) in cells]
        st = [cells[(d, t)] for d in ds]
        color = COLORS.get(t, "black")
        ax.plot(ds, [s.mean for s in st], "o-", color=color, label=t, markersize=4)
        ax.fill_between(ds, [s.lo for s in st], [s.hi for s in st], color=color, alpha=0.2, linewidth=0)
        if len(ds) == 1:  # a band over one x is invisible: draw the interval as an error bar
            ax.errorbar(ds, [st[0].mean], yerr=[st[0].half], color=color, capsize=3, linestyle="")
    ax.axhline(CHANCE, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set(title=f"width {width}", xlabel="depth (hidden layers)", ylim=(0, 1), xticks=depths)
    if len(depths) == 1:
        ax.set_xlim(depths[0] - 1, depths[0] + 1)
    ax.grid(alpha=0.3)


def plot_accuracy_vs_depth(mlp, out_dir: Path, written: dict) -> str | None:
    """Combined figure (one panel per width) plus one file per width; returns a skip reason or None."""
    widths = sorted({w for w, _, _ in mlp})
    if not widths:
        return "No finished MLP runs, so the accuracy-vs-depth figures are not drawn."
    ncols = min(len(widths), 4)
    nrows = math.ceil(len(widths) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), sharey=True, squeeze=False)
    for ax, w in zip(axes.flat, widths):
        _depth_panel(ax, mlp, w)
    for ax in list(axes.flat)[len(widths):]:
        ax.set_visible(False)
    axes[0][0].set_ylabel("test accuracy")
    handles, labels = {}, {}
    for ax in list(axes.flat)[:len(widths)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    order = ordered_sets(k for k in handles if k != "chance") + ["chance"]
    fig.legend([handles[k] for k in order], order, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    _save(fig, out_dir, "accuracy_vs_depth", written)
    for w in widths:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        _depth_panel(ax, mlp, w)
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        _save(fig, out_dir, f"accuracy_vs_depth_w{w}", written)
    return None


def plot_accuracy_vs_params(runs, out_dir: Path, written: dict) -> str | None:
    """Every finished run as a point; runs with 0 trainable parameters are drawn at x = 1."""
    done = [r for r in finished(runs) if r.get("trainable_params") is not None]
    if not done:
        return "No finished runs with a trainable-parameter count, so the accuracy-vs-parameters figure is not drawn."
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"mlp": "o", "lenet5": "^"}
    for t in ordered_sets(r["trainable"] for r in done):
        for model, marker in markers.items():
            pts = [r for r in done if r["trainable"] == t and r.get("model") == model]
            if pts:
                ax.scatter([max(int(r["trainable_params"]), 1) for r in pts], [r["test_accuracy"] for r in pts],
                           color=COLORS.get(t, "black"), marker=marker, s=22, alpha=0.75)
    ax.axhline(CHANCE, color="grey", linestyle="--", linewidth=1)
    ax.set(xscale="log", ylim=(0, 1), xlabel="trainable parameters (log scale)", ylabel="test accuracy",
           title="test accuracy vs trainable parameters (o = MLP, ^ = LeNet-5)")
    ax.grid(alpha=0.3)
    sets = ordered_sets(r["trainable"] for r in done)
    handles = [Line2D([], [], color=COLORS.get(t, "black"), marker="s", linestyle="") for t in sets]
    models = [m for m in markers if any(r.get("model") == m for r in done)]
    handles += [Line2D([], [], color="black", marker=markers[m], linestyle="") for m in models]
    handles.append(Line2D([], [], color="grey", linestyle="--"))
    labels = [t + (" (0 params, drawn at x=1)" if t == "none" else "") for t in sets]
    labels += [{"mlp": "MLP", "lenet5": "LeNet-5"}[m] for m in models] + ["chance"]
    ax.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    _save(fig, out_dir, "accuracy_vs_params", written)
    return None


# ----------------------------------------------------------------------------- tables

def mlp_table(mlp) -> tuple[list[str], list[list[str]]]:
    """One row per (width, depth), one column per trainable set, cells 'mean ± half' in percent."""
    sets = ordered_sets(t for _, _, t in mlp)
    rows = []
    for w, d in sorted({(w, d) for w, d, _ in mlp}):
        ns = [mlp[(w, d, t)].n for t in sets if (w, d, t) in mlp]
        n = str(min(ns)) if min(ns) == max(ns) else f"{min(ns)}–{max(ns)}"
        rows.append([str(w), str(d)] + [cell(mlp.get((w, d, t))) for t in sets] + [n])
    return ["width", "depth"] + sets + ["n seeds"], rows


def lenet_table(runs, lenet) -> tuple[list[str], list[list[str]]]:
    params = defaultdict(set)
    for r in finished(runs):
        if r.get("model") == "lenet5" and r.get("trainable_params") is not None:
            params[r["trainable"]].add(int(r["trainable_params"]))
    rows = [[t, cell(s), str(s.n), "/".join(f"{p:,}" for p in sorted(params[t])) or "–"] for t, s in lenet.items()]
    return ["trainable set", "test accuracy (%)", "n", "trainable params"], rows


def claims_table(cl) -> tuple[list[str], list[list[str]]]:
    return (["#", "claim", "measured", "verdict"],
            [[str(c["id"]), c["claim"], c["measured"], c["verdict"]] for c in cl])


def md_table(header, rows) -> str:
    def esc(s):
        return str(s).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def html_table(header, rows, verdict_col: int | None = None) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        tds = []
        for i, v in enumerate(r):
            cls = f' class="{v.replace(" ", "-")}"' if i == verdict_col else ""
            tds.append(f"<td{cls}>{html.escape(v)}</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    return "\n".join(out + ["</table>"])


# ----------------------------------------------------------------------------- text

def _values(xs) -> str:
    xs = sorted({x for x in xs if x is not None}, key=lambda v: (str(type(v)), v))
    return ", ".join(map(str, xs)) if xs else "–"


def summary_text(runs, sweep: dict | None = None) -> list[str]:
    """Sentences of the 'what was run' paragraph; `sweep` is the last sweep's config (store meta)."""
    status = Counter(r.get("status") for r in runs)
    done = finished(runs)
    mlp = [r for r in done if r.get("model") == "mlp"]
    out = [f"Last sweep: {sweep.get('name', '?')!r} with preset {sweep.get('preset', '?')!r}."] if sweep else []
    out += [f"{len(runs)} runs in the store: " + (", ".join(f"{n} {s}" for s, n in sorted(status.items(), key=str))
                                                  or "none") + f"; {len(done)} count for the statistics."]
    nan_finished = status.get("finished", 0) - len(done)
    if nan_finished:
        out.append(f"{nan_finished} finished run(s) without a finite test accuracy are ignored.")
    bad = [r for r in runs if r.get("status") in ("diverged", "failed")]
    if bad:
        out.append("Not counted: " + "; ".join(
            f"{r.get('status')} {r.get('model')} {_where(r)} {r.get('trainable')} seed {r.get('seed')}"
            for r in bad[:10]) + ("; …" if len(bad) > 10 else "") + ".")
    out.append(f"Models: {_values(r.get('model') for r in done)}. MLP widths: {_values(r.get('width') for r in mlp)}; "
               f"depths (hidden layers): {_values(r.get('depth') for r in mlp)}. Trainable sets: "
               f"{', '.join(ordered_sets(r.get('trainable') for r in done)) or '–'}. "
               f"Seeds: {_values(r.get('seed') for r in done)}.")
    cfgs = [r.get("config") or {} for r in runs]
    conf = [f"{k} = {_values(c.get(k) for c in cfgs)}" for k in CONFIG_FIELDS if any(k in c for c in cfgs)]
    if conf:
        out.append("Configuration: " + "; ".join(conf) + ".")
    varying = [k for k in CONFIG_FIELDS if len({repr(c.get(k)) for c in cfgs if k in c}) > 1]
    if varying:
        out.append(f"Note: {', '.join(varying)} differ between runs; the statistics pool them within each "
                   "(model, width, depth, trainable) group.")
    secs = sum(float(r["seconds"]) for r in runs if r.get("seconds") is not None)
    out.append(f"Total compute: {secs:,.{0 if secs >= 100 else 1}f} s ({secs / 3600:.2f} h).")
    return out


def _where(r) -> str:
    return f"w{r.get('width')} d{r.get('depth')}" if r.get("model") == "mlp" else ""


HOW_TO_READ = ("Chance level on MNIST is 10% (dashed grey line). Accuracies are test accuracies; a cell or "
               "line is the mean over seeds, and ± / the shaded band is the 95% Student-t interval over seeds "
               "(t quantile for n−1 degrees of freedom). With a single seed there is no interval (marked n=1). "
               "Only finished runs with a finite test accuracy are used; diverged and failed runs are listed above. "
               "In the parameters figure, runs with no trainable parameters (set 'none') are drawn at x = 1.")

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1150px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:1em 0;font-size:0.92em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2} tr:nth-child(even) td{background:#fafafa}
td.held{background:#dff3df!important;font-weight:600} td.did-not-hold{background:#f8dada!important;font-weight:600}
td.not-measured{background:#eee!important;color:#555} figure{margin:1.2em 0} img{max-width:100%;height:auto}
figcaption{font-size:0.9em;color:#555} .note{color:#555}"""


def _figure_items(written) -> list[tuple[str, str, str]]:
    """(png name, svg name, caption) for each drawn figure, in report order."""
    items = []
    if "accuracy_vs_depth.png" in written:
        items.append(("accuracy_vs_depth", "Test accuracy against depth, one panel per width, mean and 95% interval."))
        items += [(p[:-4], f"Test accuracy against depth at width {p[len('accuracy_vs_depth_w'):-4]}.")
                  for p in sorted(written, key=lambda s: (len(s), s))
                  if p.startswith("accuracy_vs_depth_w") and p.endswith(".png")]
    if "accuracy_vs_params.png" in written:
        items.append(("accuracy_vs_params", "Test accuracy against trainable parameters, every finished run "
                                            "(o = MLP, ^ = LeNet-5; set 'none' has 0 parameters and is drawn at x = 1)."))
    return [(f"{s}.png", f"{s}.svg", c) for s, c in items]


def render_md(title, summary, cl, figs, skipped, mlp_t, lenet_t, extra=()) -> str:
    out = [f"# {title}", "", "## What was run", "", " ".join(summary), "", "## Claims", "",
           md_table(*claims_table(cl)), "", "Rules:", ""]
    out += [f"{c['id']}. {c['rule']}" for c in cl]
    out += ["", "## Figures", ""]
    for png, svg, cap in figs:
        out += [f"![{cap}]({png})", "", f"*{cap}* ([SVG]({svg}))", ""]
    out += [f"*{s}*" for s in skipped] + ["", "## MLP test accuracy (%)", ""]
    out += [md_table(*mlp_t) if mlp_t[1] else "*No finished MLP runs.*", "", "## LeNet-5 test accuracy (%)", ""]
    out += [md_table(*lenet_t) if lenet_t[1] else "*No finished LeNet-5 runs.*", ""]
    for sec in extra:  # the open questions, and the claims on other data sets
        out += [f"## {sec['title']}", "", f"**Question.** {sec['question']}", ""]
        if sec.get("figure"):
            out += [f"![{sec['title']}]({sec['figure']})", ""]
        for png, cap in sec.get("figures", []):
            out += [f"![{cap}]({png})", "", f"*{cap}*", ""]
        if sec.get("table"):
            out += [md_table(*sec["table"]), ""]
        for a in sec.get("answers", []):
            out += [f"**Answer.** {a}", ""]
        if sec.get("claims"):
            out += [md_table(*claims_table(sec["claims"])), ""]
    out += ["## How to read this", "", HOW_TO_READ, ""]
    return "\n".join(out)


def render_html(title, summary, cl, figs, skipped, mlp_t, lenet_t, extra=()) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
           f"<style>{CSS}</style></head><body>", f"<h1>{e(title)}</h1>", "<h2>What was run</h2>",
           f"<p>{e(' '.join(summary))}</p>", "<h2>Claims</h2>", html_table(*claims_table(cl), verdict_col=3),
           "<p><b>Rules.</b></p><ol>"]
    out += [f"<li>{e(c['rule'])}</li>" for c in cl] + ["</ol>", "<h2>Figures</h2>"]
    for png, svg, cap in figs:
        out.append(f'<figure><img src="{e(png)}" alt="{e(cap)}"><figcaption>{e(cap)} '
                   f'(<a href="{e(svg)}">SVG</a>)</figcaption></figure>')
    out += [f'<p class="note">{e(s)}</p>' for s in skipped]
    out += ["<h2>MLP test accuracy (%)</h2>",
            html_table(*mlp_t) if mlp_t[1] else '<p class="note">No finished MLP runs.</p>',
            "<h2>LeNet-5 test accuracy (%)</h2>",
            html_table(*lenet_t) if lenet_t[1] else '<p class="note">No finished LeNet-5 runs.</p>']
    for sec in extra:
        out += [f"<h2>{e(sec['title'])}</h2>", f"<p><b>Question.</b> {e(sec['question'])}</p>"]
        if sec.get("figure"):
            out.append(f'<figure><img src="{e(sec["figure"])}" alt="{e(sec["title"])}"></figure>')
        for png, cap in sec.get("figures", []):
            out.append(f'<figure><img src="{e(png)}" alt="{e(cap)}"><figcaption>{e(cap)}</figcaption></figure>')
        if sec.get("table"):
            out.append(html_table(*sec["table"]))
        out += [f"<p><b>Answer.</b> {e(a)}</p>" for a in sec.get("answers", [])]
        if sec.get("claims"):
            out.append(html_table(*claims_table(sec["claims"]), verdict_col=3))
    out += ["<h2>How to read this</h2>", f"<p>{e(HOW_TO_READ)}</p>", "</body></html>", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- entry point

def write_report(out_dir, runs=None, title: str = "bnonly report", analyses=None) -> dict[str, Path]:
    """Write figures (PNG+SVG), report.md and report.html into out_dir; returns {file name: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sweep = None
    if runs is None:
        from .store import Store
        store = Store(out_dir / "results.sqlite")
        runs, sweep = store.runs(), store.meta().get("sweep")
    from .questions import is_baseline, sections
    all_runs = list(runs)
    # The figures, tables and claims are the report's setting (BatchNorm, random spread evenly) on
    # MNIST (or the one data set there is); other settings answer the open questions below them.
    datasets = sorted({r.get("dataset") for r in all_runs}, key=lambda d: (d != "mnist", str(d)))
    runs = [r for r in all_runs if is_baseline(r) and r.get("dataset") == (datasets[0] if datasets else None)]
    mlp, lenet = mlp_stats(runs), lenet_stats(runs)
    written: dict[str, Path] = {}
    skipped = [s for s in (plot_accuracy_vs_depth(mlp, out_dir, written),
                           plot_accuracy_vs_params(runs, out_dir, written)) if s]
    extra = sections(all_runs, out_dir, written)
    if analyses:  # what the affine parameters learn (runs with stored models)
        from .analysis import group, plot, table
        groups = group(analyses)
        figs_a = plot(groups, out_dir, written)
        gamma_t = table(groups)
        extra.append({"title": "What the affine parameters learn",
                      "question": "Does training the affine parameters disable random features, as Frankle et al. "
                                  "found (a quarter to a third of them in ResNets)? Disabled = |gamma| < 0.1; dead = "
                                  "ReLU output 0 for every test image.",
                      "figures": figs_a, "answers": [], "table": gamma_t})
    for ds in datasets[1:]:
        other = [r for r in all_runs if is_baseline(r) and r.get("dataset") == ds]
        extra.append({"title": f"Claims on {ds}", "question": f"Do the report's six claims hold on {ds}?",
                      "answers": [], "claims": claims(other)})
    summary = summary_text(all_runs, sweep)
    if len(runs) < len(all_runs):
        summary.append(f"Figures, tables and the first claims table use the {len(runs)} runs of the report's setting "
                       f"(BatchNorm, random weights spread evenly, {datasets[0]}); the sections after them use the rest.")
    cl_main = claims(runs)
    mlp_t, lenet_t = mlp_table(mlp), lenet_table(runs, lenet)
    parts = (title, summary, cl_main, _figure_items(written), skipped, mlp_t, lenet_t, extra)
    by_ds = {sec["title"][len("Claims on "):]: sec["claims"] for sec in extra if sec.get("claims")}
    doc = {"claims": cl_main, "claims_by_dataset": {datasets[0] if datasets else None: cl_main, **by_ds},
           "mlp_table": dict(zip(("header", "rows"), mlp_t)),
           "lenet_table": dict(zip(("header", "rows"), lenet_t)),
           "sections": [{k: v for k, v in sec.items() if k in ("title", "question", "answers")} for sec in extra],
           "gamma_analysis": None if not analyses else {
               **dict(zip(("header", "rows"), gamma_t)),
               "runs": [{k: a[k] for k in ("run_id", "small_gamma", "dead", "ablation_k", "ablation_smallest",
                                           "ablation_random", "test_accuracy")} | {"trainable": a["config"]["trainable"]}
                        for a in analyses]}}
    (out_dir / "report.json").write_text(json.dumps(doc, indent=1, default=str))
    written["report.json"] = out_dir / "report.json"
    for name, render in (("report.md", render_md), ("report.html", render_html)):
        path = out_dir / name
        path.write_text(render(*parts), encoding="utf-8")
        written[name] = path
    return written

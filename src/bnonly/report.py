"""The report: what was run, the claims, figures, tables and the open questions, as one list of
sections that render.py writes as report.md, report.html and report.json.

write_report(out_dir) reads out_dir/results.sqlite (or takes runs, a list of run dicts as
Store.runs() returns them) and writes figures (PNG + SVG), report.md, report.html and report.json
into out_dir. Only finished runs with a finite test accuracy enter the statistics; diverged and
failed runs are counted in the text. Partial data never crashes it: what cannot be drawn is skipped,
with a sentence saying why.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from . import analysis, questions
from .claims import claims
from .figures import plot_accuracy_vs_depth, plot_accuracy_vs_params
from .models import arch_name
from .render import claims_blocks, figure, json_sections, note, render_html, render_md, table, text
from .sets import ordered
from .stats import cell, finished, lenet_stats, mlp_stats
from .store import Store

CONFIG_FIELDS = ("gamma_init", "hidden_beta", "bn_momentum", "bn_eps", "lr", "momentum",
                 "batch_size", "max_epochs", "patience", "lr_drop_epoch", "subset", "val_fraction",
                 "random_placement", "random_norm", "precision")


# ----------------------------------------------------------------------------- tables
def mlp_table(mlp) -> tuple[list[str], list[list[str]]]:
    """One row per (width, depth), one column per trainable set, cells 'mean ± half' in percent."""
    sets = ordered(t for _, _, t in mlp)
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
            f"{r.get('status')} {arch_name(r)} {r.get('trainable')} seed {r.get('seed')}"
            for r in bad[:10]) + ("; …" if len(bad) > 10 else "") + ".")
    out.append(f"Models: {_values(r.get('model') for r in done)}. MLP widths: {_values(r.get('width') for r in mlp)}; "
               f"depths (hidden layers): {_values(r.get('depth') for r in mlp)}. Trainable sets: "
               f"{', '.join(ordered(r.get('trainable') for r in done)) or '–'}. "
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


HOW_TO_READ = ("Chance level on MNIST is 10% (dashed grey line). Accuracies are test accuracies; a cell or "
               "line is the mean over seeds, and ± / the shaded band is the 95% Student-t interval over seeds "
               "(t quantile for n−1 degrees of freedom). With a single seed there is no interval (marked n=1). "
               "Only finished runs with a finite test accuracy are used; diverged and failed runs are listed above. "
               "In the parameters figure, runs with no trainable parameters (set 'none') are drawn at x = 1.")

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



# ----------------------------------------------------------------------------- entry point
def write_report(out_dir, runs=None, title: str = "bnonly report", analyses=None) -> dict[str, Path]:
    """Write figures (PNG+SVG), report.md, report.html and report.json into out_dir; returns {file name: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sweep = None
    if runs is None:
        store = Store(out_dir / "results.sqlite")
        runs, sweep = store.runs(), store.meta().get("sweep")
    all_runs = list(runs)
    # The figures, tables and claims are the report's setting (BatchNorm, random spread evenly) on
    # MNIST (or the one data set there is); other settings answer the open questions below them.
    datasets = sorted({r.get("dataset") for r in all_runs}, key=lambda d: (d != "mnist", str(d)))
    runs = [r for r in all_runs if questions.is_baseline(r) and r.get("dataset") == (datasets[0] if datasets else None)]
    mlp, lenet = mlp_stats(runs), lenet_stats(runs)
    written: dict[str, Path] = {}
    skipped = [s for s in (plot_accuracy_vs_depth(mlp, out_dir, written),
                           plot_accuracy_vs_params(runs, out_dir, written)) if s]
    summary = summary_text(all_runs, sweep)
    if len(runs) < len(all_runs):
        summary.append(f"Figures, tables and the first claims table use the {len(runs)} runs of the report's setting "
                       f"(BatchNorm, random weights spread evenly, {datasets[0]}); the sections after them use the rest.")
    cl_main = claims(runs)
    mlp_t, lenet_t = mlp_table(mlp), lenet_table(runs, lenet)
    sections = [
        {"title": "What was run", "blocks": [text(" ".join(summary))]},
        {"title": "Claims", "blocks": claims_blocks(cl_main)},
        {"title": "Figures", "blocks": [figure(png, cap, svg) for png, svg, cap in _figure_items(written)]
                                       + [note(s) for s in skipped]},
        {"title": "MLP test accuracy (%)",
         "blocks": [table(*mlp_t) if mlp_t[1] else note("No finished MLP runs.")]},
        {"title": "LeNet-5 test accuracy (%)",
         "blocks": [table(*lenet_t) if lenet_t[1] else note("No finished LeNet-5 runs.")]},
    ]
    sections += questions.sections(all_runs, out_dir, written)
    gamma_t = None
    if analyses:  # what the affine parameters learn (runs with stored models)
        sec, gamma_t = analysis.section(analyses, out_dir, written)
        sections.append(sec)
    claims_by_ds = {datasets[0] if datasets else None: cl_main}
    for ds in datasets[1:]:
        claims_by_ds[ds] = claims([r for r in all_runs if questions.is_baseline(r) and r.get("dataset") == ds])
        sections.append({"title": f"Claims on {ds}",
                         "blocks": [{"kind": "question", "text": f"Do the report's six claims hold on {ds}?"},
                                    *claims_blocks(claims_by_ds[ds])]})
    sections.append({"title": "How to read this", "blocks": [text(HOW_TO_READ)]})

    doc = {"claims": cl_main, "claims_by_dataset": claims_by_ds,
           "mlp_table": dict(zip(("header", "rows"), mlp_t)),
           "lenet_table": dict(zip(("header", "rows"), lenet_t)),
           "sections": json_sections(sections),
           "gamma_analysis": None if not analyses else {**dict(zip(("header", "rows"), gamma_t)),
                                                        "runs": analysis.summaries(analyses)}}
    (out_dir / "report.json").write_text(json.dumps(doc, indent=1, default=str))
    written["report.json"] = out_dir / "report.json"
    for name, render in (("report.md", render_md), ("report.html", render_html)):
        path = out_dir / name
        path.write_text(render(title, sections), encoding="utf-8")
        written[name] = path
    return written

"""The report: what was run, the claims, figures, tables and the open questions, as one list of
sections that render.py writes as report.md, report.html and report.json.

write_report(out_dir) reads out_dir/results.sqlite (or takes runs, a list of run dicts as
Store.runs() returns them) and writes figures (PNG + SVG), report.md, report.html and report.json
into out_dir. Finished and diverged runs with a finite test accuracy enter the statistics (diverged
ones at their best weights, and the text says how many); failed runs are listed. Partial data never crashes it: what cannot be drawn is skipped,
with a sentence saying why.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import torch

from . import analysis, analysis_report, questions
from .claims import claims
from .frankle import FRANKLE_PROTOCOL_TEXT, PUBLISHED, frankle_claims
from .config import ConfigError
from .data import cache_dir
from .device import EngineOptions, device_name, resolve_device
from .errors import BnonlyError
from .executors import duration
from .groups import estimate_seconds
from .figures import plot_accuracy_vs_depth, plot_accuracy_vs_params, plot_bn_vs_random, plot_learning_curves
from .headline import headline, headline_answer, headline_section, headline_sentences
from .models import MODELS, arch_name
from .render import claims_blocks, figure, json_sections, note, render_html, render_md, table, text
from .sets import ordered
from .stacking import plan_groups
from .stats import (PROTOCOL_TEXT, accuracy, budget_gaps, cell, cells, chance, config_of, counted, describe_study,
                    gap, lenet_stats, mlp_stats, studies, value)
from .store import Store
from .sweep import CONFIG_DIR, load_sweep
from .verdicts import DECIDING, NOT_MEASURED
from .version import __version__

CONFIG_FIELDS = ("gamma_init", "hidden_beta", "hidden_bias", "bn_momentum", "bn_eps", "lr", "momentum",
                 "batch_size", "max_epochs", "patience", "lr_drop_epoch", "lr_drop_epochs", "weight_decay",
                 "augment", "normalize", "subset", "val_fraction",
                 "random_placement", "random_norm", "frozen_trunk_norm", "precision")


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
    for r in counted(runs):
        if r.get("model") == "lenet5" and r.get("trainable_params") is not None:
            params[r["trainable"]].add(int(r["trainable_params"]))
    rows = [[t, cell(s), str(s.n), "/".join(f"{p:,}" for p in sorted(params[t])) or "–"] for t, s in lenet.items()]
    return ["trainable set", "test accuracy (%)", "n", "trainable params"], rows



def cifar_models(runs) -> list[str]:
    """The study's models of Frankle et al.'s CIFAR family, ResNets by depth and width, then VGG."""
    ms = {r.get("model") for r in runs if r.get("model") in MODELS and MODELS[r.get("model")].family == "cifar"}
    return sorted(ms, key=lambda m: (not m.startswith("resnet"), MODELS[m].widen, MODELS[m].layers))


FRANKLE_SETS = ("all", "bn", "bn+out", "random")


def frankle_table(runs) -> tuple[list[str], list[list[str]]]:
    """Per CIFAR model: the measured accuracy of each set, the paired bn − random gap, the BN
    parameter count, and the published BN-only numbers (paper, reproduction) beside them."""
    c = cells(runs)
    sets = [t for t in FRANKLE_SETS if any(k[3] == t for k in c)]
    rows = []
    for m in cifar_models(counted(runs)):
        got = {t: c[(m, None, None, t)] for t in sets if (m, None, None, t) in c}
        n_bn = {int(r["trainable_params"]) for r in got.get("bn", {}).values() if r.get("trainable_params")}
        rows.append([m, "/".join(f"{n:,}" for n in sorted(n_bn)) or "–"]
                    + [value(accuracy(got[t])) if t in got else "–" for t in sets]
                    + [value(gap(got["bn"], got["random"]), signed=True) if "bn" in got and "random" in got else "–"]
                    + [f"{100 * PUBLISHED[k][1][m]:.1f}" if m in PUBLISHED[k][1] else "–" for k in ("paper", "reproduction")])
    return (["model", "BN params"] + [f"{t} (%)" for t in sets] + ["bn − random (points, paired)",
             f"published BN-only: {PUBLISHED['paper'][0]}", f"published BN-only: {PUBLISHED['reproduction'][0]}"], rows)


def frankle_section(runs) -> dict:
    header, rows = frankle_table(runs)
    return {"title": "Frankle et al.'s CIFAR setting", "blocks": [
        {"kind": "question", "text": "Do Frankle et al.'s CIFAR-10 findings hold: BN-only far above an equal number of "
                                     "random weights in sufficiently deep ResNets (and, bnonly's hypothesis, more so "
                                     "with depth)?"},
        table(header, rows, caption="Measured columns: mean ± 95% t interval over seeds (this store). Published "
              "columns are not measured here. The paper's abstract gives 82% for 'sufficiently deep ResNets', which "
              "bnonly places at ResNet-866, the deepest the paper trains (its per-depth table was not in the text "
              "available here); the TF reproduction is an unmerged community pull request with one run per model "
              "and another layout. Whether those BN-only runs trained the output layer is not stated in the text "
              "available here: in OpenLTH, Frankle et al.'s code, the BN-only flag others_frozen leaves it trainable "
              "(bnonly's bn+out) unless output_frozen is also set (bnonly's bn), so compare with both. "
              + FRANKLE_PROTOCOL_TEXT + "."),
        *claims_blocks(frankle_claims(runs), DECIDING)]}


# ----------------------------------------------------------------------------- what to run next
NEXT_STUDY = "claims"  # the shipped study that measures every claim at the protocol


def study_estimate(name: str, data_dir=None) -> float | None:
    """The compute (seconds) a shipped study would take on this machine if every run went to its
    max_epochs: the sweep's own estimate (groups.estimate_seconds), measured once per study, machine,
    thread count and version and kept in the data cache; None where it cannot be measured here."""
    device = resolve_device("auto")
    text = (CONFIG_DIR / f"{name}.toml").read_text()
    key = hashlib.sha256(json.dumps([text, device, device_name(device), torch.__version__, __version__,
                                     torch.get_num_threads()]).encode()).hexdigest()[:16]
    path = cache_dir() / "estimates.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        try:
            groups = plan_groups(load_sweep(name).runs(), EngineOptions.for_device(device))
            secs, _, left_out = estimate_seconds(groups, device, data_dir, batches=1)  # an hour's precision is enough
        except BnonlyError:
            return None
        if left_out:
            return None
        known[key] = secs
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(known))
            os.replace(tmp, path)
        except OSError:
            pass  # the estimate is measured again next time
    return known[key]


def point_to_next_study(claims_list: list[dict], study_name: str | None, data_dir=None) -> None:
    """Each 'not measured' claim names the shipped study that measures it, and that study's
    estimated time on this machine."""
    missing = [c for c in claims_list if c["verdict"] == NOT_MEASURED]
    if not missing:
        return
    if study_name == NEXT_STUDY:
        hint = f" Run `bnonly sweep {NEXT_STUDY}` again to train the runs this store lacks (it resumes)."
    else:
        secs = study_estimate(NEXT_STUDY, data_dir)
        when = ("" if secs is None else f", about {duration(secs)} of compute on this machine if every run went to "
                "its max_epochs (early stopping ends most sooner; --workers share it)")
        hint = f" Measured by `bnonly sweep {NEXT_STUDY}` (every claim at the report's protocol{when})."
    for c in missing:
        c["measured"] += hint


# ----------------------------------------------------------------------------- text

def _values(xs) -> str:
    xs = sorted({x for x in xs if x is not None}, key=lambda v: (str(type(v)), v))
    return ", ".join(map(str, xs)) if xs else "–"


def summary_text(runs, study: list[dict], sweep: dict | None = None, selected: bool = False) -> list[str]:
    """Sentences of the 'what was run' paragraph: the store (runs), then the study this report covers;
    `sweep` is the last sweep's config (store meta)."""
    status = Counter(r.get("status") for r in runs)
    done = counted(study)
    mlp = [r for r in done if r.get("model") == "mlp"]
    out = [f"Last sweep: {sweep.get('name', '?')!r} with preset {sweep.get('preset', '?')!r}."] if sweep else []
    out += [f"{len(runs)} runs {'selected by --where' if selected else 'in the store'}: " + (", ".join(f"{n} {s}" for s, n in sorted(status.items(), key=str))
                                                  or "none") + f"; {len(counted(runs))} count for the statistics."]
    missing = status.get("finished", 0) + status.get("diverged", 0) - len(counted(runs))
    if missing:
        out.append(f"{missing} finished or diverged run(s) without a finite test accuracy are left out.")
    diverged = [r for r in runs if r.get("status") == "diverged"]
    if diverged:
        out.append(f"{len(diverged)} diverged (a non-finite loss ended them; they count at their best weights' test "
                   "accuracy, and every table, claim and answer says how many of its runs diverged): " + "; ".join(
                       f"{arch_name(r)} {r.get('trainable')} seed {r.get('seed')}" for r in diverged[:10])
                   + ("; …" if len(diverged) > 10 else "") + ".")
    failed = [r for r in runs if r.get("status") == "failed"]
    if failed:
        out.append("Failed (not counted; a re-launch tries them again): " + "; ".join(
            f"{arch_name(r)} {r.get('trainable')} seed {r.get('seed')}" for r in failed[:10])
            + ("; …" if len(failed) > 10 else "") + ".")
    out.append(f"Models: {_values(r.get('model') for r in done)}. MLP widths: {_values(r.get('width') for r in mlp)}; "
               f"depths (hidden layers): {_values(r.get('depth') for r in mlp)}. Trainable sets: "
               f"{', '.join(ordered(r.get('trainable') for r in done)) or '–'}. "
               f"Seeds: {_values(r.get('seed') for r in done)}.")
    cfgs = [config_of(r) for r in study]
    conf = [f"{k} = {_values(c.get(k) for c in cfgs)}" for k in CONFIG_FIELDS if cfgs]
    if conf:
        out.append("Configuration: " + "; ".join(conf) + ".")
    secs = sum(float(r["seconds"]) for r in runs if r.get("seconds") is not None)
    out.append(f"Total compute: {secs:,.{0 if secs >= 100 else 1}f} s ({secs / 3600:.2f} h).")
    return out


def budget_text(study: list[dict]) -> str:
    """The study's budget next to the report's protocol, and what that means for the verdicts."""
    done = [r for r in study if r.get("status") in ("finished", "diverged")]
    if not done:
        return "No finished runs, so no budget to state."
    c = config_of(done[0])  # the budget fields are part of the study, so every run shares them
    capped = sum(1 for r in done if (r.get("epochs_run") or 0) >= c["max_epochs"])
    data = f"a subset of {c['subset']:,} training images" if c["subset"] else "the whole training set"
    stopping = (f"early stopping with patience {c['patience']} within" if c["patience"] else "no early stopping,")
    budget = (f"Budget of this study: {data}, {100 * c['val_fraction']:.0f}% of it held out for validation, "
              f"{stopping} max_epochs = {c['max_epochs']}, lr {c['lr']}, batch "
              f"{c['batch_size']}; {capped} of {len(done)} runs ended at the epoch cap.")
    if len(cifar_models(done)) == len({r.get("model") for r in done}):
        return budget + (" Its models are Frankle et al.'s CIFAR models: the section 'Frankle et al.'s CIFAR setting' "
                         "judges its claims against their protocol.")
    if budget_gaps(done) is None:
        return budget + " This is the report's protocol, so its claims can be judged here."
    return (budget + f" This is not the report's protocol ({PROTOCOL_TEXT}): a claim that rests on accuracies is "
            "'not testable at this budget' here; `bnonly sweep claims` runs the protocol.")


def how_to_read(chance_rate: float, chance_basis: str) -> str:
    return (f"Chance is {chance_basis}, {100 * chance_rate:.2f}% (what a network that always predicts "
            "the most common class scores; dashed grey line). Accuracies are test accuracies; a cell or "
            "line is the mean over seeds, and ± / the shaded band is the 95% Student-t interval over seeds "
            "(t quantile for n−1 degrees of freedom). With a single seed there is no interval (marked n=1). "
            "Comparisons between sets (claims 3-6, the open questions) use paired per-seed differences: runs of "
            "one seed share initial weights and data order. Runs whose configurations differ in anything but "
            "the seed, the architecture, the set or the setting a section varies are never pooled. "
            "Finished and diverged runs count (a diverged run at its best weights' test accuracy, marked 'k diverged' "
            "where it is); failed runs are listed above. "
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
                                            "(o = MLP, ^ = LeNet-5, D = ResNet, v = VGG; set 'none' has 0 parameters "
                                            "and is drawn at x = 1)."))
    if "learning_curves.png" in written:
        items.append(("learning_curves", "Validation accuracy against epoch, one panel per architecture, one line per "
                                         "set: the mean over the seeds still training at each epoch (an early-stopped "
                                         "run ends there), band: 95% interval while every seed still trains; dashed: the epoch cap, "
                                         "dotted: chance."))
    return [(f"{s}.png", f"{s}.svg", c) for s, c in items]



# ----------------------------------------------------------------------------- entry point
def select(runs, where: dict | None) -> list[dict]:
    """The runs whose configuration has every key = value of `where` (values compared as text)."""
    if not where:
        return list(runs)
    return [r for r in runs if all(str(config_of(r).get(k)) == str(v) for k, v in where.items())]


def _main_dataset(study: list[dict]) -> str | None:
    """The data set a study's figures and first claims table use: MNIST, else the first there is."""
    datasets = sorted({config_of(r)["dataset"] for r in study}, key=lambda d: (d != "mnist", str(d)))
    return datasets[0] if datasets else None


def _other_studies(others, out_dir, where: dict | None) -> dict:
    rows = []
    for fields, rs in others:
        ds = _main_dataset(rs)
        base = [r for r in rs if questions.is_baseline(r) and config_of(r)["dataset"] == ds]
        verdicts = Counter(c["verdict"] for c in claims(base, ds))
        wheres = {**(where or {}), **fields}
        cmd = " ".join(["bnonly report", shlex.quote(str(out_dir))]
                       + [f"--where {shlex.quote(f'{k}={v}')}" for k, v in wheres.items()])
        rows.append([describe_study(fields), str(len(rs)), ", ".join(f"{n} {v}" for v, n in verdicts.items()), cmd])
    return {"title": "Other studies in this store", "blocks": [
        text("These runs differ from the study above in more than the seed, so they are never pooled with it. "
             "Each is a study of its own; the command in the last column writes its full report."),
        table(["study", "runs", "claims", "report it with"], rows,
              caption="runs = every run of the study (all seeds, every status); claims = how many of the study's "
                      "claims got each verdict, by the rules of the claims table above.")]}


REPORT_FILES = ("*.png", "*.svg", "report.md", "report.html", "report.json", "results.csv")


def write_report(out_dir, runs=None, title: str = "bnonly report", analyses=None,
                 where: dict | None = None, analyze: bool = False, data_dir=None,
                 store: Store | None = None) -> dict[str, Path]:
    """Write figures (PNG+SVG), report.md, report.html and report.json into out_dir (and results.csv,
    from a store); returns {file name: path}. `where` ({field: value}) keeps only the runs with those
    configuration values. The report covers one study (stats.studies: runs that differ only in seed,
    architecture, set, norm, allocation, data set), the largest; the others are listed at the end,
    with the --where that reports each. Runs come from `runs`, else from `store` (opened here when
    not given); `analyze` adds the gamma analysis of the reported study's runs. All or nothing: the
    report is built in a directory of its own and replaces the previous report's files only when
    it is complete, so a failed report leaves the previous one as it was."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    try:
        written = _write_report(out_dir, staging, runs, title, analyses, where, analyze, data_dir, store)
        for pattern in REPORT_FILES:  # the previous report's files: none of them is left beside the new ones
            for old in out_dir.glob(pattern):
                old.unlink()
        for name in written:
            os.replace(staging / name, out_dir / name)
        return {name: out_dir / name for name in written}
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_report(out_dir: Path, to: Path, runs, title, analyses, where, analyze, data_dir, store) -> dict[str, Path]:
    """write_report's body: reads out_dir's store, writes every file into `to`."""
    sweep, damaged = None, {}
    if runs is None:
        store = store or Store(out_dir / "results.sqlite")
        runs, sweep = store.runs(), store.meta().get("sweep")
        damaged = dict(store.damaged)  # run_id -> why it is left out
    all_runs = select(runs, where)
    if where and not all_runs:
        raise ConfigError(f"no run in {out_dir} has " + ", ".join(f"{k}={v}" for k, v in where.items()))
    split = studies(all_runs)
    fields, study = split[0] if split else ({}, [])
    # The figures, tables and claims are the report's setting (BatchNorm, random spread evenly) on
    # MNIST (or the one data set there is); other settings answer the open questions below them.
    datasets = sorted({config_of(r)["dataset"] for r in study}, key=lambda d: (d != "mnist", str(d)))
    main_ds = _main_dataset(study)
    runs = [r for r in study if questions.is_baseline(r) and config_of(r)["dataset"] == main_ds]
    mlp, lenet = mlp_stats(runs), lenet_stats(runs)
    written: dict[str, Path] = {}
    rate, basis = chance(main_ds, data_dir)
    answer = headline(runs)
    answer_skipped = plot_bn_vs_random(answer, to, written, rate)
    skipped = [s for s in (plot_accuracy_vs_depth(mlp, to, written, rate),
                           plot_accuracy_vs_params(runs, to, written, rate),
                           plot_learning_curves(runs, to, written, rate)) if s]
    summary = summary_text(all_runs, study, sweep, selected=bool(where))
    if len(split) > 1:
        summary.append(f"The store holds {len(split)} studies (runs that differ in more than the seed: "
                       f"{', '.join(fields)}); this report covers the largest, {describe_study(fields)} "
                       f"({len(study)} runs), and lists the others at the end.")
    if len(runs) < len(study):
        summary.append(f"Figures, tables and the first claims table use the {len(runs)} runs of the report's setting "
                       f"(BatchNorm, random weights spread evenly, {main_ds}); the sections after them use the rest.")
    cl_main = claims(runs, main_ds, data_dir)
    point_to_next_study(cl_main, (sweep or {}).get("name"), data_dir)
    mlp_t, lenet_t = mlp_table(mlp), lenet_table(runs, lenet)
    n_note = "Cells: mean ± 95% t interval over seeds, in %; n seeds = the number of seeds in the row's cells."
    sections = [
        headline_section(answer, written, answer_skipped, rate, basis),
        {"title": "What was run", "blocks": [text(" ".join(summary)), text(budget_text(study))]},
        {"title": "Claims", "blocks": claims_blocks(cl_main, DECIDING)},
        {"title": "Figures", "blocks": [figure(png, cap, svg) for png, svg, cap in _figure_items(written)]
                                       + [note(s) for s in skipped]},
        {"title": "MLP test accuracy (%)",
         "blocks": [table(*mlp_t, caption=n_note) if mlp_t[1] else note("No finished MLP runs.")]},
        {"title": "LeNet-5 test accuracy (%)",
         "blocks": [table(*lenet_t, caption=n_note) if lenet_t[1] else note("No finished LeNet-5 runs.")]},
    ]
    if cifar_models(study) and not mlp_t[1] and not lenet_t[1]:  # a study of Frankle's CIFAR models alone
        sections = [s for s in sections if s["title"] not in ("MLP test accuracy (%)", "LeNet-5 test accuracy (%)")]
    if cifar_models(study):  # judged on CIFAR-10 where the study has it (Frankle's data), else the main data set
        base = [r for r in study if questions.is_baseline(r)]
        ds = "cifar10" if any(config_of(r)["dataset"] == "cifar10" for r in base) else main_ds
        sections.append(frankle_section([r for r in base if config_of(r)["dataset"] == ds]))
    sections += questions.sections(study, to, written, rate)
    gamma_t = None
    ids = {r["run_id"] for r in study}
    if analyze and analyses is None:  # only the runs of the study this report covers
        analyses, left_out = analysis.analyze_store(store or Store(out_dir / "results.sqlite"), data_dir, run_ids=ids)
        damaged.update(left_out)
    analyses = [a for a in analyses or [] if a["run_id"] in ids]
    if analyses:  # what the affine parameters learn (runs with stored models)
        sec, gamma_t = analysis_report.section(analyses, to, written, rate)
        sections.append(sec)
    claims_by_ds = {main_ds: cl_main}
    for ds in datasets[1:]:
        claims_by_ds[ds] = claims([r for r in study if questions.is_baseline(r) and config_of(r)["dataset"] == ds], ds,
                                  data_dir)
        sections.append({"title": f"Claims on {ds}",
                         "blocks": [{"kind": "question", "text": f"Do the report's six claims hold on {ds}?"},
                                    *claims_blocks(claims_by_ds[ds], DECIDING)]})
    if damaged:
        sections[1]["blocks"].append(note(f"{len(damaged)} stored run(s) left out of every statistic as damaged: "
                                          + "; ".join(f"{k} ({v})" for k, v in sorted(damaged.items())) + "."))
    if len(split) > 1:
        sections.append(_other_studies(split[1:], out_dir, where))
    sections.append({"title": "How to read this", "blocks": [text(how_to_read(rate, basis))]})

    doc = {"study": fields, "studies": [describe_study(f) for f, _ in split], "damaged": damaged,
           "headline": {"answer": headline_answer(answer) if answer else None,
                        "sentences": headline_sentences(answer), "chance": rate,
                        "architectures": [{"architecture": r["architecture"],
                                           **{k: r[k].as_dict() for k in ("bn", "random", "gap")}} for r in answer]},
           "claims": cl_main,
           "claims_by_dataset": claims_by_ds,
           "mlp_table": dict(zip(("header", "rows"), mlp_t)),
           "lenet_table": dict(zip(("header", "rows"), lenet_t)),
           "sections": json_sections(sections),
           "gamma_analysis": None if not analyses else {**dict(zip(("header", "rows"), gamma_t)),
                                                        "runs": analysis_report.summaries(analyses)}}
    (to / "report.json").write_text(json.dumps(doc, indent=1, default=str))
    written["report.json"] = to / "report.json"
    for name, render in (("report.md", render_md), ("report.html", render_html)):
        (to / name).write_text(render(title, sections), encoding="utf-8")
        written[name] = to / name
    if store is not None:
        written["results.csv"] = store.export_csv(to / "results.csv")
    return written

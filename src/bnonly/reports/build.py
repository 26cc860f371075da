"""The report of a results store: what was run, the claims, figures, tables, the open questions
and what gamma learned, as one list of sections that render.py writes as report.md, report.html and
report.json (figures as PNG and SVG, results.csv beside them).

It covers one study of the store (study/cells.py: runs that differ only in seed, architecture, set,
norm, allocation, data set), the largest unless `where` selects another, and lists the others.
Partial data never crashes it: what cannot be drawn is skipped, with a sentence saying why. The
report is built in a directory of its own and replaces the previous one only when complete.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from .. import files
from ..files import strict_json
from ..store import Store
from ..study.claims import claims
from ..study.analyses import analyze_store
from ..study.headline import headline, headline_answer, headline_sentences
from ..study.questions import is_baseline, questions
from ..study.cells import chance, config_of, describe_study, lenet_stats, mlp_stats, studies
from . import analysis
from .figures import plot_accuracy_vs_depth, plot_accuracy_vs_params, plot_bn_vs_random, plot_learning_curves
from .render import figure, json_sections, note, render_html, render_md, table, text
from .sections import (budget_text, claims_section, code_versions, figure_items, frankle_section,
                       headline_section, how_to_read, other_studies, point_to_next_study, question_sections,
                       summary_text)
from .tables import cifar_models, lenet_table, mlp_table

MANIFEST = ".bnonly-report.json"     # what the last report wrote here: all it may replace
ANALYSIS_MANIFEST = ".bnonly-analysis.json"


def replace_files(staging: Path, out_dir: Path, written: dict, manifest: str = MANIFEST) -> None:
    """Move the staged files into out_dir, then remove what the previous report (its manifest) wrote
    and this one did not, and list this one's files in the manifest: files bnonly never wrote, and
    those of another writer with its own manifest (the analysis, a report beside it), stay."""
    listed = out_dir / manifest
    try:
        previous = {n for n in json.loads(listed.read_text()) if isinstance(n, str) and Path(n).name == n}
    except (OSError, ValueError, TypeError):
        previous = set()
    for name in written:
        os.replace(staging / name, out_dir / name)
    for name in previous - set(written):
        (out_dir / name).unlink(missing_ok=True)
    (staging / manifest).write_text(json.dumps(sorted(written)) + "\n")
    os.replace(staging / manifest, listed)


def select(runs, where: dict | None) -> list[dict]:
    """The runs whose configuration has every key = value of `where` (values compared as text)."""
    if not where:
        return list(runs)
    return [r for r in runs if all(str(config_of(r).get(k)) == str(v) for k, v in where.items())]


def main_dataset(study: list[dict]) -> str | None:
    """The data set a study's figures and first claims table use: MNIST, else the first there is."""
    datasets = sorted({config_of(r)["dataset"] for r in study}, key=lambda d: (d != "mnist", str(d)))
    return datasets[0] if datasets else None


@dataclass
class Covered:
    """What one report covers: the runs selected from the store, split into studies; the study it
    reports (the largest), and that study's runs in the report's setting on its main data set."""
    selected: list
    split: list
    fields: dict
    study: list
    dataset: str | None
    baseline: list
    meta: dict = field(default_factory=dict)     # the store's: the last sweep, its estimate
    damaged: dict = field(default_factory=dict)  # run_id -> why it is left out
    store: Store | None = None                   # where the runs came from (None: given as runs)


def cover(out_dir: Path, runs, where: dict | None, store: Store | None, left_out: dict | None = None) -> Covered:
    """The runs a report covers: given, or the store's that parse and whose models are whole, less
    `left_out` ({run_id: why}: runs whose model an analysis could not load), kept where a `where` holds."""
    meta, damaged = {}, {}
    if runs is None:
        store = store or Store(out_dir / "results.sqlite")
        (runs, damaged), meta = store.read(models=True), store.meta()
    else:
        store = None
    if left_out:
        runs, damaged = [r for r in runs if r["run_id"] not in left_out], {**damaged, **left_out}
    selected = select(runs, where)
    if where and not selected:
        raise ConfigError(f"no run in {out_dir} has " + ", ".join(f"{k}={v}" for k, v in where.items()))
    split = studies(selected)
    fields, study = split[0] if split else ({}, [])
    ds = main_dataset(study)
    baseline = [r for r in study if is_baseline(r) and config_of(r)["dataset"] == ds]
    return Covered(selected, split, fields, study, ds, baseline, meta, damaged, store)


def write_report(out_dir, runs=None, title: str = "bnonly report", analyses=None, where: dict | None = None,
                 analyze: bool = False, data_dir=None, store: Store | None = None) -> dict[str, Path]:
    """Write the report into out_dir; returns {file name: path}. Runs come from `runs`, else from
    `store` (out_dir's when not given); `where` ({field: value}) keeps only the runs with those
    values; `analyze` adds the gamma analysis of the reported study's runs (or give `analyses`). All
    or nothing: a failed report leaves the previous one as it was."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = files.staging(out_dir, "report")
    try:
        c = cover(out_dir, runs, where, store)
        if analyze and analyses is None:  # only the runs of the study this report covers
            analyses, left_out = analyze_store(c.store or store or Store(out_dir / "results.sqlite"), data_dir,
                                               run_ids={r["run_id"] for r in c.study})
            if left_out:  # a run whose model does not load is left out of every statistic, as the report says
                c = cover(out_dir, runs, where, c.store, left_out)
        written: dict[str, Path] = {}
        sections, doc = build(c, out_dir, staging, written, analyses or [], data_dir, where)
        write_files(staging, written, title, sections, doc, c.store)
        replace_files(staging, out_dir, written)
        return {name: out_dir / name for name in written}
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_analysis(out_dir, store: Store, data_dir=None) -> dict:
    """The gamma analysis of every analysable run in `store` on its own, staged like the report and
    moved into out_dir with a manifest of its own: {'runs', 'table' (header, rows), 'answers',
    'figures', 'left_out' ({run_id: why})}."""
    from ..study.gamma import conditions
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    analyses, left_out = analyze_store(store, data_dir)
    out = {"runs": len(analyses), "table": None, "answers": [], "figures": [], "left_out": left_out}
    if not analyses:
        return out
    staging = files.staging(out_dir, "analysis")
    try:
        groups = conditions(analyses)
        written: dict[str, Path] = {}
        analysis.plot(groups, staging, written, chance(analyses[0]["config"].get("dataset"), data_dir).rate)
        out.update(table=analysis.table(groups), answers=analysis.answers(groups),
                   figures=sorted(n for n in written if n.endswith(".png")))
        replace_files(staging, out_dir, written, ANALYSIS_MANIFEST)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def build(c: Covered, out_dir: Path, to: Path, written: dict, analyses: list, data_dir, where) -> tuple[list, dict]:
    """The report's sections and report.json's content; figures are drawn into `to`."""
    runs = c.baseline
    rate, basis = chance(c.dataset, data_dir)
    mlp, lenet = mlp_stats(runs), lenet_stats(runs)
    answer = headline(runs)
    answer_skipped = plot_bn_vs_random(answer, to, written, rate)
    skipped = [s for s in (plot_accuracy_vs_depth(mlp, to, written, rate),
                           plot_accuracy_vs_params(runs, to, written, rate),
                           plot_learning_curves(runs, to, written, rate)) if s]
    summary = summary_text(c.selected, c.study, c.meta.get("sweep"), selected=bool(where),
                           estimate=c.meta.get("estimate"))
    if len(c.split) > 1:
        summary.append(f"The store holds {len(c.split)} studies (runs that differ in more than the seed: "
                       f"{', '.join(c.fields)}); this report covers the largest, {describe_study(c.fields)} "
                       f"({len(c.study)} runs), and lists the others at the end.")
    if len(runs) < len(c.study):
        summary.append(f"Figures, tables and the first claims table use the {len(runs)} runs of the report's setting "
                       f"(BatchNorm, random weights spread evenly, {c.dataset}); the sections after them use the rest.")
    main_claims = claims(runs, c.dataset, data_dir)
    point_to_next_study(main_claims, c.meta.get("sweep", {}).get("name"))
    mlp_t, lenet_t = mlp_table(mlp), lenet_table(runs, lenet)
    n_note = "Cells: mean ± 95% t interval over seeds, in %; n seeds = the number of seeds in the row's cells."
    what_was_run = [text(" ".join(summary)), text(budget_text(c.study))]
    if c.damaged:
        what_was_run.append(note(f"{len(c.damaged)} stored run(s) left out of every statistic as damaged: "
                                 + "; ".join(f"{k} ({v})" for k, v in sorted(c.damaged.items())) + "."))
    pruned = c.store.not_kept() & {r["run_id"] for r in c.selected} if c.store is not None else set()
    if pruned:
        what_was_run.append(note(
            f"{len(pruned)} run(s) counted here without their stored model (not kept: dense models are kept out of "
            "the repository, results/carry.py): their accuracies and histories count; their gamma analysis and "
            "`bnonly export-model` need them trained again (`bnonly train` with the run's configuration)."))
    sections = [headline_section(answer, answer_skipped, rate, basis),
                {"title": "What was run", "blocks": what_was_run},
                claims_section("Claims", main_claims),
                {"title": "Figures", "blocks": [figure(png, cap, svg) for png, svg, cap in figure_items(written)]
                 + [note(s) for s in skipped]}]
    cifar = cifar_models(c.study)
    if mlp_t[1] or lenet_t[1] or not cifar:  # (a study of Frankle's CIFAR models alone has neither table)
        sections += [{"title": "MLP test accuracy (%)",
                      "blocks": [table(*mlp_t, caption=n_note) if mlp_t[1] else note("No finished MLP runs.")]},
                     {"title": "LeNet-5 test accuracy (%)",
                      "blocks": [table(*lenet_t, caption=n_note) if lenet_t[1] else note("No finished LeNet-5 runs.")]}]
    if cifar:  # judged on CIFAR-10 where the study has it (Frankle's data), else the main data set
        base = [r for r in c.study if is_baseline(r)]
        ds = "cifar10" if any(config_of(r)["dataset"] == "cifar10" for r in base) else c.dataset
        sections.append(frankle_section([r for r in base if config_of(r)["dataset"] == ds]))
    sections += question_sections(questions(c.study), to, written, rate)
    ids = {r["run_id"] for r in c.study}
    analyses = [a for a in analyses if a["run_id"] in ids]
    gamma_t = None
    if analyses:  # what the affine parameters learn (runs with stored models)
        sec, gamma_t = analysis.section(analyses, to, written, rate)
        sections.append(sec)
    by_dataset = {c.dataset: main_claims}
    for ds in sorted({config_of(r)["dataset"] for r in c.study} - {c.dataset}):
        by_dataset[ds] = claims([r for r in c.study if is_baseline(r) and config_of(r)["dataset"] == ds], ds, data_dir)
        sections.append(claims_section(f"Claims on {ds}", by_dataset[ds], f"Do the report's six claims hold on {ds}?"))
    if len(c.split) > 1:
        sections.append(other_studies(c.split[1:], out_dir, where, main_dataset))
    sections.append({"title": "How to read this", "blocks": [text(how_to_read(rate, basis))]})
    doc = {"study": c.fields, "studies": [describe_study(f) for f, _ in c.split], "damaged": c.damaged,
           "code_versions": dict(code_versions(c.selected)),
           "headline": {"answer": headline_answer(answer) if answer else None,
                        "sentences": headline_sentences(answer), "chance": rate,
                        "architectures": [{"architecture": r["architecture"],
                                           **{k: r[k].as_dict() for k in ("bn", "random", "gap")}} for r in answer]},
           "claims": main_claims, "claims_by_dataset": by_dataset,
           "mlp_table": dict(zip(("header", "rows"), mlp_t)), "lenet_table": dict(zip(("header", "rows"), lenet_t)),
           "sections": json_sections(sections),
           "gamma_analysis": None if not analyses else {**dict(zip(("header", "rows"), gamma_t)),
                                                        "runs": analysis.summaries(analyses)}}
    return sections, doc


def write_files(to: Path, written: dict, title: str, sections: list, doc: dict, store: Store | None) -> None:
    """report.json, report.md, report.html (and results.csv from a store) into `to`."""
    (to / "report.json").write_text(strict_json(doc, indent=1, default=str))
    written["report.json"] = to / "report.json"
    for name, render in (("report.md", render_md), ("report.html", render_html)):
        (to / name).write_text(render(title, sections), encoding="utf-8")
        written[name] = to / name
    if store is not None:
        written["results.csv"] = store.export_csv(to / "results.csv")

"""Publish a study's report as data: write the report of a results directory (with this checkout's
code), then copy report.md, report.json, results.csv and the figures into results/STUDY/, with
made.json saying which code, machine and command made the runs (read from the runs themselves) and
which code wrote the report. The README's headline table and docs/study.md's measured cells
are these files' numbers (tests/test_results.py checks them).

    python results/publish.py runs/quick quick --command "make reproduce" [--wall SECONDS]

A study computed in place (results/claims, whose store is carried in git from one allocation to the
next) is published where it is: its store and checkpoints stay.
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
from collections import Counter
from pathlib import Path

from bnonly.api import report
from bnonly.store import Store
from bnonly.version import code_version, label

HERE = Path(__file__).resolve().parent
FILES = ("report.md", "report.json", "results.csv")


def headline_table(doc: dict) -> str:
    """The README's headline table from a report.json: per MLP, bn, random and their paired difference."""
    def stat(d, unit="%", signed=False):
        return f"{100 * d['mean']:{'+' if signed else ''}.1f} ± {100 * d['half']:.1f}{unit}"
    rows = ["| MLP | `bn` | `random` | `bn` − `random`, paired per seed |", "|---|---|---|---|"]
    for a in doc["headline"]["architectures"]:
        parts = a["architecture"].split("_")[1:]  # mlp_w10_d2; a LeNet-5 is just 'lenet5'
        name = f"width {parts[0][1:]}, {parts[1][1:]} layers" if len(parts) == 2 else "LeNet-5"
        rows.append(f"| {name} | {stat(a['bn'])} | {stat(a['random'])} | "
                    f"{stat(a['gap'], ' points', True)} |")
    return "\n".join(rows)


def verdicts_table(doc: dict) -> str:
    """The README's table of the six claims from a report.json: each claim, its verdict with its scope
    (the label), and what was measured."""
    rows = ["| # | the report's claim | verdict | measured |", "|---|---|---|---|"]
    for c in doc["claims"]:
        rows.append(f"| {c['id']} | {c['claim']} | **{c.get('label', c['verdict'])}** | "
                    f"{c['measured'].replace('|', '/')} |")
    return "\n".join(rows)


def cells_table(doc: dict) -> str:
    """docs/study.md's table of a study's cells from a report.json: its MLP table (test accuracy per
    set, mean ± 95% interval over seeds) and LeNet-5's rows, as markdown."""
    def md(table: dict, first: list[str] | None = None) -> list[str]:
        header = first or table["header"]
        return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                + ["| " + " | ".join(str(c) for c in row) + " |" for row in table["rows"]])
    lines = md(doc["mlp_table"])
    if doc["lenet_table"]["rows"]:
        lines += ["", "LeNet-5:", ""] + md(doc["lenet_table"])
    return "\n".join(lines)


def machine_label(run: dict) -> str:
    """'AMD EPYC (family 25, model 17, AVX512; cpu, 1 thread)': the processor as the numbers depend on
    it (older runs recorded the name alone)."""
    v = run.get("versions") or {}
    cpu = ", ".join(x for x in (v.get("cpu_family") and f"family {v['cpu_family']}",
                                v.get("cpu_model") and f"model {v['cpu_model']}", v.get("cpu_capability")) if x)
    threads = v.get("threads")
    return (f"{v.get('device_name')} ({cpu + '; ' if cpu else ''}{run.get('device')}, {threads} "
            f"thread{'s' if threads != 1 else ''})")


def made(runs: list[dict], command: str, wall: float | None, sweeps: list | None = None) -> dict:
    versions = Counter(label(r.get("versions")) for r in runs)
    machines = Counter(machine_label(r) for r in runs)
    first = runs[0].get("versions") or {}
    return {"command": command, "code": dict(versions), "commit": first.get("commit"), "dirty": first.get("dirty"),
            "bnonly": first.get("bnonly"), "code_hash": first.get("code"), "torch": first.get("torch"),
            "mkl": first.get("mkl"), "machines": dict(machines),
            "report_by": label(code_version()), "runs": len(runs),
            "compute_seconds": round(sum(r.get("seconds") or 0 for r in runs), 1),
            "wall_seconds": wall, "sweeps": sweeps or [], "published": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def without_svg(dest: Path) -> None:
    """The published report links no SVG: only the PNGs are kept under results/ (the SVGs are in the
    run directory, and a report writes them again)."""
    md = dest / "report.md"
    md.write_text(re.sub(r" \(\[SVG\]\([^)]*\.svg\)\)", "", md.read_text()))
    doc = dest / "report.json"
    doc.write_text(re.sub(r'"svg": "[^"]*\.svg"', '"svg": null', doc.read_text()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a results directory (its results.sqlite)")
    ap.add_argument("study", help="the name under results/")
    ap.add_argument("--command", required=True, help="the command that made it")
    ap.add_argument("--wall", type=float, default=None, help="its wall time in seconds, where measured")
    args = ap.parse_args()
    report(args.run_dir)
    store = Store(args.run_dir / "results.sqlite", create=False)
    runs, sweeps = store.runs(), store.meta().get("sweeps")  # (each sweep's part: when, where, what code)
    dest = HERE / args.study
    if dest.exists() and dest.resolve() == args.run_dir.resolve():  # computed in place: its store stays
        for svg in dest.glob("*.svg"):  # (the report wrote them; only the PNGs are published)
            svg.unlink()
    else:
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for name in FILES:
            shutil.copy(args.run_dir / name, dest / name)
        for png in sorted(args.run_dir.glob("*.png")):
            shutil.copy(png, dest / png.name)
    without_svg(dest)
    (dest / "made.json").write_text(json.dumps(made(runs, args.command, args.wall, sweeps), indent=1) + "\n")
    print(f"published {len(runs)} runs to {dest}")
    doc = json.loads((dest / "report.json").read_text())
    if doc["headline"]["architectures"]:
        print(headline_table(doc))


if __name__ == "__main__":
    main()

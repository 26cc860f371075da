"""How far a study's numbers move between two machines: a results directory's runs against a
published study's results.csv, run by run (same run ids: same configuration and seed), and what that
does to the headline and the claims' verdicts. The README quotes the file it writes.

    python results/compare.py runs/quick quick --out results/quick/two-cpus.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
from pathlib import Path

from bnonly.store import Store, read_csv
from bnonly.study.claims import claims
from bnonly.study.headline import headline

HERE = Path(__file__).resolve().parent


def machine(runs: list[dict]) -> str:
    v = runs[0].get("versions") or {}
    facts = [f"family {v['cpu_family']}" if v.get("cpu_family") else "", f"model {v['cpu_model']}"
             if v.get("cpu_model") else "", v.get("cpu_capability") or ""]
    facts = [f for f in facts if f]
    return f"{v.get('device_name')}" + (f" ({', '.join(facts)})" if facts else " (no more recorded)") + \
        f", {v.get('threads')} thread(s), torch {v.get('torch')}"


def compare(here: list[dict], there: list[dict]) -> dict:
    a, b = {r["run_id"]: r for r in here}, {r["run_id"]: r for r in there}
    common = sorted(set(a) & set(b))
    diffs = [abs(a[i]["test_accuracy"] - b[i]["test_accuracy"]) for i in common]
    epochs = sum(a[i].get("epochs_run") != b[i].get("epochs_run") for i in common)
    head = {}
    for side, runs in (("here", here), ("published", there)):
        for arch in headline(runs):
            head.setdefault(arch["architecture"], {})[side] = {k: arch[k].mean for k in ("bn", "random", "gap")}
    moved = {arch: {k: abs(v["here"][k] - v["published"][k]) for k in ("bn", "random", "gap")}
             for arch, v in head.items() if "here" in v and "published" in v}
    labels = {side: {c["id"]: c["label"] for c in claims(runs)} for side, runs in (("here", here), ("published", there))}
    return {"runs": len(common), "identical": sum(d == 0 for d in diffs), "differ": sum(d != 0 for d in diffs),
            "epochs_differ": epochs, "largest_points": 100 * max(diffs), "median_points": 100 * statistics.median(diffs),
            "headline_largest_move_points": {k: 100 * max(m[k] for m in moved.values()) for k in ("bn", "random", "gap")},
            "verdicts": labels, "same_verdicts": labels["here"] == labels["published"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("study")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    here = Store(args.run_dir / "results.sqlite", create=False).runs()
    there, _ = read_csv(HERE / args.study / "results.csv")
    result = {"command": f"python results/compare.py {args.run_dir} {args.study} --out {args.out}",
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "here": machine(here), "published": machine(there), **compare(here, there)}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Did the code's changes move any stored run's numbers? A study computed across allocations mixes
the runs of several code versions. Every group a sweep trained (its runs share a code version, a
stack configuration, a group size and the second their rows were written) is trained again, as one
group, by this checkout's code for its first few epochs, on this machine, with the stored thread
count; each run's epoch history (every loss, accuracy and learning rate) is compared with its
stored history's first epochs, float for float.

    python results/recheck.py results/claims claims --epochs 2   # writes results/claims/recheck.json

A stack's models sit by seed, and within a seed in the order the sweep gave them (its grid's), which
the last bits of a run's losses depend on: so each group is given in the order of the sweep file's
grid (the second argument).

A run resumed from a checkpoint began under its first part's code, so it counts under that code. The
comparison is bit for bit, so it needs the processor the runs were trained on; groups of another
processor are listed as not comparable. Run again on a grown store, it keeps what recheck.json
already says of a group (the same rows, checking code and epochs) and trains only the others.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import time
from pathlib import Path

import torch

from bnonly.config.layers import load_sweep
from bnonly.config.run import RunConfig
from bnonly.engine.device import machine
from bnonly.engine.loop import train
from bnonly.engine.stack import shared_config
from bnonly.files import write
from bnonly.store import Store
from bnonly.version import code_version, label

PROCESSOR = ("device_name", "cpu_family", "cpu_model", "cpu_capability")


def first_code(run: dict) -> str:
    """The code that trained a run's first epoch: its first part's where it resumed, else its own."""
    v = run.get("versions") or {}
    return (v.get("parts") or [v])[0].get("code") or "unknown"


def first_machine(run: dict) -> dict:
    """The processor and threads of a run's first epochs: its first part's where it resumed."""
    v = run.get("versions") or {}
    return v["parts"][0].get("machine") or {} if v.get("parts") else v


def stored(group: list[dict]) -> str:
    """A hash of what a group's rows hold: a row kept in recheck.json is reused only for the same."""
    rows = sorted((r["run_id"], r.get("finished_at"), r["history"]) for r in group)
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


def groups(runs: list[dict]) -> dict:
    """{(code, shared configuration, group size, finished_at): its runs}: the groups as trained."""
    out = {}
    for r in runs:
        if r.get("history") and r.get("status") in ("finished", "diverged"):
            key = (first_code(r), shared_config(config_of(r)), r.get("group_size"), r.get("finished_at"))
            out.setdefault(key, []).append(r)
    return out


def config_of(run: dict) -> RunConfig:
    return RunConfig(**(json.loads(run["config"]) if isinstance(run["config"], str) else run["config"]))


def recheck(group: list[dict], epochs: int, order: dict) -> dict:
    """The group trained again for its first `epochs` epochs: how many of its runs' histories are
    identical to the stored ones, and the first (run, epoch) that is not."""
    group = sorted(group, key=lambda r: order.get(r["run_id"], len(order)))
    k = min(epochs, *(len(r["history"]) for r in group))
    before = torch.get_num_threads()
    torch.set_num_threads(first_machine(group[0]).get("threads") or 1)
    t0 = time.perf_counter()
    try:
        results = train([config_of(r).replace(max_epochs=k) for r in group], device="cpu")
    finally:
        torch.set_num_threads(before)
    same = json.dumps  # (as stored: a NaN equals a NaN, and a shorter history differs)
    differ = [(r["run_id"], next((e + 1 for e in range(k) if e >= len(res.history)
                                  or same(res.history[e]) != same(r["history"][e])), k))
              for r, res in zip(group, results) if same(res.history) != same(r["history"][:k])]
    return {"epochs": k, "identical": len(group) - len({d[0] for d in differ}), "differ": len({d[0] for d in differ}),
            "first_difference": differ[0] if differ else None, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a results directory (its results.sqlite)")
    ap.add_argument("config", help="the sweep file (a shipped study's name or a path) that made it")
    ap.add_argument("--epochs", type=int, default=2, help="epochs trained again per run (default 2)")
    args = ap.parse_args(argv)
    runs = Store(args.run_dir / "results.sqlite", create=False).runs()
    order = {c.run_id: i for i, c in enumerate(load_sweep(args.config).runs())}  # (its [[also]] runs too)
    here = {k: machine("cpu").get(k) for k in PROCESSOR}
    named = {}  # a code hash, by the commits whose runs carry it (one code can be several commits)
    for r in runs:
        named.setdefault((r.get("versions") or {}).get("code"), set()).add(label(r.get("versions")))
    labels = {first_code(r): " / ".join(sorted(named.get(first_code(r), {f"code {first_code(r)}"}))) for r in runs}
    path = args.run_dir / "recheck.json"
    before = json.loads(path.read_text()) if path.is_file() else {}
    kept = ({tuple(r["run_ids"]): r for r in before.get("checked", [])}
            if (before.get("code"), before.get("epochs")) == (code_version()["code"], args.epochs) else {})
    checked = []
    found = groups(runs)
    for i, ((code, _, size, _), group) in enumerate(sorted(found.items(), key=lambda kv: kv[0][3] or ""), 1):
        first = group[0]
        row = {"version": labels[code], "code": code, "model": first["model"], "width": first["width"],
               "depth": first["depth"], "trainable": sorted({r["trainable"] for r in group}),
               "seeds": sorted(r["seed"] for r in group), "runs": len(group), "group_size": size,
               "run_ids": sorted(r["run_id"] for r in group)}
        row["stored"] = stored(group)
        if tuple(row["run_ids"]) in kept and kept[tuple(row["run_ids"])].get("stored") == row["stored"]:
            row = kept[tuple(row["run_ids"])]
        elif len(group) != size:
            row.update(identical=0, differ=0, note=f"{len(group)} of its {size} runs are stored: not retrained")
        elif any(first_machine(first).get(k) != here[k] for k in PROCESSOR):
            row.update(identical=0, differ=0, note="trained on another processor: not comparable")
        else:
            row.update(recheck(group, args.epochs, order))
        checked.append(row)
        print(f"[{i}/{len(found)}] {row['version']} {row['model']} w{row['width']} d{row['depth']} "
              f"{','.join(row['trainable'])} ({len(group)} runs): {row['identical']} identical, {row['differ']} differ"
              + (f" ({row['note']})" if row.get("note") else ""), flush=True)
    versions = {}
    for row in checked:
        v = versions.setdefault(row["version"], {"code": row["code"], "runs": 0, "identical": 0, "differ": 0})
        for k in ("runs", "identical", "differ"):
            v[k] += row[k]
    doc = {"store": str(args.run_dir), "checked_by": label(code_version()), "code": code_version()["code"],
           "machine": here, "threads": "as stored (versions.threads)", "epochs": args.epochs,
           "groups": len(checked), "runs": sum(r["runs"] for r in checked),
           "identical": sum(r["identical"] for r in checked), "differ": sum(r["differ"] for r in checked),
           "versions": versions, "checked": checked,
           "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    write(path, lambda fh: fh.write(json.dumps(doc, indent=1) + "\n"), "recheck.json", mode="w")
    print(f"{doc['identical']} of {doc['runs']} runs identical in their first {args.epochs} epochs, {doc['differ']} differ: "
          f"{path}")


if __name__ == "__main__":
    main()

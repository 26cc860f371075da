"""How often each claim's rule refutes a claim that is just true: every test of the claim exactly at
its boundary, n seeds, many simulated stores; with the rules as they are (Holm's procedure across
every test of a claim) and, for comparison, with each test at 2.5% on its own.

    python benchmarks/false_refutation.py            # 20,000 stores per claim, about a minute
    python benchmarks/false_refutation.py --sims 4000 --out FILE

The result goes to results/verdicts/false-refutation.json (docs/study.md quotes it); tests run the
same simulation with fewer stores.
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
from pathlib import Path

import numpy as np

from bnonly.study import claims, frankle, verdicts

OUT = Path(__file__).resolve().parents[1] / "results" / "verdicts" / "false-refutation.json"
RULES = {"1": claims.claim1, "2": claims.claim2, "3": claims.claim3, "4": claims.claim4, "5": claims.claim5,
         "6": claims.claim6, "F1": frankle.frankle1, "F2": frankle.frankle2}
CHANCE = 0.1135


def _cell(accs, params=None) -> dict:
    return {s: {"test_accuracy": float(a), "status": "finished", "trainable_params": params} for s, a in enumerate(accs)}


def boundary_cells(claim: str, rng, sd: float = 0.01, n: int = 3) -> dict:
    """One simulated store (cells, as stats.cells gives them) with every test of the claim exactly at
    its boundary: the claim just true."""
    def acc(mean):
        return mean + rng.normal(0, sd, n)
    c = {}
    if claim == "1":        # four cells at chance
        for w in (10, 100):
            for d in (2, 4):
                c[("mlp", w, d, "bn")] = _cell(acc(CHANCE))
    elif claim == "2":      # two depths at the band's lower edge
        for d in (4, 8):
            c[("mlp", 784, d, "bn")] = _cell(acc(claims.BAND2[0]))
    elif claim == "3":      # two depths with bn − random at 10 points
        for d in (4, 8):
            b = acc(0.9)
            c[("mlp", 784, d, "bn")] = _cell(b)
            c[("mlp", 784, d, "random")] = _cell(b - claims.GAP3 + rng.normal(0, sd, n))
    elif claim == "4":      # gaps and their growth at 0 in four cells, two widths
        for w in (10, 784):
            for d in (2, 8):
                a = acc(0.95)
                c[("mlp", w, d, "all")] = _cell(a)
                c[("mlp", w, d, "all-nobn")] = _cell(a + rng.normal(0, sd, n))
    elif claim == "5":      # wider − deeper at 0; the rise to depth 4 at 0; the change after it at +2 points
        c[("mlp", 20, 2, "bn")] = _cell(acc(0.5), params=40)
        c[("mlp", 10, 4, "bn")] = _cell(acc(0.5), params=40)
        c[("mlp", 784, 2, "bn")] = _cell(acc(0.9), params=1568)
        c[("mlp", 784, 4, "bn")] = _cell(acc(0.9), params=3136)
        c[("mlp", 784, 8, "bn")] = _cell(acc(0.9 + claims.LEVEL5), params=6272)
    elif claim == "6":      # bn at the band's lower edge, bn − random at 0
        b = acc(claims.BAND6[0])
        c[("lenet5", None, None, "bn")] = _cell(b)
        c[("lenet5", None, None, "random")] = _cell(b + rng.normal(0, sd, n))
    else:                   # F1: bn − random at 10 points at three depths; F2: its growth at 0
        for m in ("resnet14", "resnet110", "resnet218"):
            b = acc(0.6)
            c[(m, None, None, "bn")] = _cell(b)
            c[(m, None, None, "random")] = _cell(b - frankle.FAR + rng.normal(0, sd, n))
    return c


def false_refutations(claim: str, sims: int, seed: int = 2026) -> float:
    """The share of `sims` boundary stores in which the claim's rule says 'did not hold'."""
    rng = np.random.default_rng(seed)
    rule = RULES[claim]
    args = () if claim.startswith("F") else (CHANCE,)
    return sum(rule(boundary_cells(claim, rng), *args).verdict == verdicts.NOT_HELD for _ in range(sims)) / sims


def uncorrected(tests) -> set[int]:
    """Each test at ALPHA on its own: what verdicts.holm replaced."""
    return {i for i, t in enumerate(tests) if t.outcome is not None and t.p <= verdicts.ALPHA}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=20000)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    rates = {c: false_refutations(c, args.sims) for c in RULES}
    holm = verdicts.holm
    verdicts.holm = uncorrected
    try:
        each = {c: false_refutations(c, args.sims) for c in RULES}
    finally:
        verdicts.holm = holm
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    result = {"command": f"python benchmarks/false_refutation.py --sims {args.sims}", "commit": commit,
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "sims": args.sims, "seeds": 3, "level": verdicts.ALPHA, "rates": rates, "each_test_alone": each}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

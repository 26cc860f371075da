"""Both error rates of every claim's rule, checked by simulation, and its power on known cases.

- false "did not hold": the claim just true, its tests at their boundary (for a part that needs most
  cells: just enough cells at the boundary, the rest far off the claim's side);
- false "held": the claim just false (one cell at the boundary, the rest far on the claim's side; for
  most: one cell too few far on the claim's side, the rest at the boundary);
each for a part alone (1, 4 and 49 cells; one spread, and spreads log-uniform from 0.1 to 6 points as
in results/quick) and for each claim's own rule on simulated stores; then the power of the rules on
the cases the third review named (a clear failure among 49 passing cells, BatchNorm hurting in every
cell, +0.4 points per doubling, LeNet-5's gap inside (0, 5]).

    python benchmarks/error_rates.py              # 4,000 stores a case, a few minutes
    python benchmarks/error_rates.py --sims 1000 --out FILE

The result goes to results/verdicts/error-rates.json (docs/study.md quotes it); tests run the same
simulations with fewer stores.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import subprocess
from pathlib import Path

import numpy as np

from bnonly.study import claims, frankle, verdicts
from bnonly.store import read_csv
from bnonly.study.stats import mean_ci

OUT = Path(__file__).resolve().parents[1] / "results" / "verdicts" / "error-rates.json"
CHANCE = 0.1135
SEEDS = 3
FAR = 1000.0  # "far" from a boundary, in per-run standard deviations: as far as the least favourable case
SPREADS = (0.001, 0.06)  # per-run sd, log-uniform between them: results/quick's 0.1 to 6 points


# ----------------------------------------------------------------------------- a part alone
def spreads(rng, n: int, mixed: bool) -> np.ndarray:
    lo, hi = np.log(SPREADS)
    return np.exp(rng.uniform(lo, hi, n)) if mixed else np.full(n, 0.01)


def part_verdict(rule: str, offsets, sds, rng) -> str:
    """A part of `rule` whose tests have these true distances from the boundary (> 0: the claim's
    side), decided on SEEDS simulated seeds each."""
    tests = [verdicts.Test(mean_ci(o + rng.normal(0, sd, SEEDS)), above=0.0) for o, sd in zip(offsets, sds)]
    part = verdicts.Part(tests, rule=rule)
    verdicts.decide(part)
    return part.verdict


def part_case(rule: str, n: int, truth: bool, rng, mixed: bool) -> str:
    sds = spreads(rng, n, mixed)
    needed = n if rule == "every" else n // 2 + 1
    if truth:   # just true: `needed` at the boundary, the rest far off the claim's side
        offsets = [0.0] * needed + [-FAR * sd for sd in sds[needed:]]
    else:       # just false: needed - 1 far on the claim's side, the rest at the boundary
        offsets = [FAR * sd for sd in sds[:needed - 1]] + [0.0] * (n - needed + 1)
    return part_verdict(rule, offsets, sds, rng)


def part_rates(sims: int, seed: int = 2026) -> dict:
    out = {}
    for rule in ("every", "most"):
        for n in (1, 4, 49):
            if rule == "most" and n == 1:
                continue
            for mixed in (False, True):
                rng = np.random.default_rng(seed)
                key = f"{rule}, {n} cell{'s' if n > 1 else ''}, {'mixed spreads' if mixed else 'one spread'}"
                out[key] = {
                    "false_not_held": sum(part_case(rule, n, True, rng, mixed) == verdicts.NOT_HELD
                                          for _ in range(sims)) / sims,
                    "false_held": sum(part_case(rule, n, False, rng, mixed) == verdicts.HELD
                                      for _ in range(sims)) / sims}
    return out


def uncorrected(ps: list[float], u: int, tau: float = 1.0) -> float:
    """Each test at ALPHA on its own: the u-th smallest p-value, no partial conjunction, no conditioning
    (what the simulation must catch)."""
    return sorted(ps)[u - 1] if 0 < u <= len(ps) else (0.0 if u <= 0 else 1.0)


def moderated(stats: list) -> list:
    """Smyth's (2004) empirical-Bayes moderated variances of a part's cells (limma's fitFDist: a scaled
    inverse-chi-square prior fitted by moments of the log variances; d0 capped at the other cells'
    degrees of freedom; the pooled variance where d0 = inf): tried, and not kept (docs/study.md)."""
    from scipy.special import digamma, polygamma
    from scipy.optimize import brentq
    from bnonly.study.stats import Stat
    v = np.array([s.se ** 2 * s.n for s in stats])
    d = np.array([s.n - 1.0 for s in stats])
    e = np.log(np.maximum(v, 1e-5 * np.median(v))) - digamma(d / 2) + np.log(d / 2)
    excess = e.var(ddof=1) - np.mean(polygamma(1, d / 2))
    if excess <= 0:
        d0, s0 = math.inf, float((d * v).sum() / d.sum())
    else:
        d0 = 2 * brentq(lambda y: polygamma(1, y) - excess, 1e-8, 1e8)
        s0 = float(np.exp(e.mean() + digamma(d0 / 2) - np.log(d0 / 2)))
    out = []
    for s, vi, di in zip(stats, v, d):
        prior = min(d0, d.sum() - di)
        post = (prior * s0 + di * vi) / (prior + di)
        out.append(Stat(s.mean, math.sqrt(post / s.n), s.n, df=prior + di))
    return out


def part_variant(variant: str, rule: str, n: int, truth: bool, sims: int, seed: int = 11) -> float:
    """A part's error rate (mixed spreads) with the rule changed: 'uncorrected' or 'moderated'."""
    rng = np.random.default_rng(seed)
    target = verdicts.NOT_HELD if truth else verdicts.HELD
    hits = 0
    saved = verdicts.partial_conjunction, verdicts.conditional_pc
    try:
        if variant == "uncorrected":
            verdicts.partial_conjunction, verdicts.conditional_pc = uncorrected, uncorrected
        for _ in range(sims):
            sds = spreads(rng, n, True)
            needed = n if rule == "every" else n // 2 + 1
            offsets = ([0.0] * needed + [-FAR * x for x in sds[needed:]] if truth else
                       [FAR * x for x in sds[:needed - 1]] + [0.0] * (n - needed + 1))
            stats = [mean_ci(o + rng.normal(0, x, SEEDS)) for o, x in zip(offsets, sds)]
            if variant == "moderated":
                stats = moderated(stats)
            part = verdicts.Part([verdicts.Test(st, above=0.0) for st in stats], rule=rule)
            verdicts.decide(part)
            hits += part.verdict == target
    finally:
        verdicts.partial_conjunction, verdicts.conditional_pc = saved
    return hits / sims


def variants(sims: int) -> dict:
    out = {}
    for variant in ("uncorrected", "moderated"):
        for rule, n in (("every", 4), ("every", 49), ("most", 49)):
            out[f"{variant}: {rule}, {n} cells, mixed spreads"] = {
                "false_not_held": part_variant(variant, rule, n, True, sims),
                "false_held": part_variant(variant, rule, n, False, sims)}
    return out


# ----------------------------------------------------------------------------- each claim's rule
def _cell(accs, params=None) -> dict:
    return {s: {"test_accuracy": float(a), "status": "finished", "trainable_params": params}
            for s, a in enumerate(accs)}


def claim_store(claim: str, rng, truth: bool) -> dict:
    """One simulated store for the claim's own rule at its boundary: truth=True, the claim just true
    (a false 'did not hold' is counted); False, just false (a false 'held')."""
    def acc(mean, sd=0.01):
        return mean + rng.normal(0, sd, SEEDS)

    def sd():
        return float(spreads(rng, 1, True)[0])
    c = {}
    if claim == "1":      # 2 x 2 cells at chance, or one at chance and three far above
        for i, (w, d) in enumerate(((10, 2), (10, 4), (100, 2), (100, 4))):
            s = sd()
            c[("mlp", w, d, "bn")] = _cell(acc(CHANCE + (0 if truth or i == 0 else FAR * s), s))
    elif claim == "2":    # depths 4 and 8 at the band's lower edge, or one there and one inside
        for i, d in enumerate((4, 8)):
            c[("mlp", 784, d, "bn")] = _cell(acc(claims.BAND2[0] if truth or i == 0 else 0.95, 0.003))
    elif claim == "3":    # bn − random at 10 points at two depths, or one there and one far above
        for i, d in enumerate((4, 8)):
            b = acc(0.9)
            c[("mlp", 784, d, "bn")] = _cell(b)
            gap = claims.GAP3 if truth or i == 0 else 0.3
            c[("mlp", 784, d, "random")] = _cell(b - gap + rng.normal(0, 0.01, SEEDS))
    elif claim == "4":    # 2 x 2 cells: the gaps and their growth at 0 (both parts at their boundary), or
        for w in (10, 784):  # the deep gaps far above 0 and the shallow ones at 0: 2 of 4 above, too few
            for d in (2, 8):
                a = acc(0.95)
                c[("mlp", w, d, "all")] = _cell(a)
                c[("mlp", w, d, "all-nobn")] = _cell(a - (0 if truth or d == 2 else 0.2) + rng.normal(0, 0.01, SEEDS))
    elif claim == "5":    # wider − deeper at 0, the rise to depth 4 at 0, the change after it at +2 points;
        rise = 0.0 if truth else 0.2  # or wider − deeper at 0 and the levelling clearly true
        c[("mlp", 20, 2, "bn")] = _cell(acc(0.5), params=40)
        c[("mlp", 10, 4, "bn")] = _cell(acc(0.5), params=40)
        c[("mlp", 784, 2, "bn")] = _cell(acc(0.9 - rise), params=1568)
        c[("mlp", 784, 4, "bn")] = _cell(acc(0.9), params=3136)
        c[("mlp", 784, 8, "bn")] = _cell(acc(0.9 + claims.LEVEL5 if truth else 0.9, 0.001 if not truth else 0.01),
                                        params=6272)
    elif claim == "6":    # bn at the band's lower edge and bn − random at 0, or bn inside and the gap at 0
        b = acc(claims.BAND6[0] if truth else 0.3)
        c[("lenet5", None, None, "bn")] = _cell(b)
        c[("lenet5", None, None, "random")] = _cell(b + rng.normal(0, 0.01, SEEDS))
    else:                 # F1: bn − random at 10 points at the deep ResNets; F2: its growth at 0
        for m in ("resnet14", "resnet110", "resnet218"):
            b = acc(0.6)
            c[(m, None, None, "bn")] = _cell(b)
            gap = frankle.FAR if truth or m != "resnet110" else 0.3
            c[(m, None, None, "random")] = _cell(b - gap + rng.normal(0, 0.01, SEEDS))
    return c


RULES = {"1": claims.claim1, "2": claims.claim2, "3": claims.claim3, "4": claims.claim4, "5": claims.claim5,
         "6": claims.claim6, "F1": frankle.frankle1, "F2": frankle.frankle2}


def verdict(claim: str, c: dict) -> str:
    return RULES[claim](c, *(() if claim.startswith("F") else (CHANCE,))).verdict


def false_not_held(claim: str, sims: int, seed: int = 2026) -> float:
    """The share of `sims` just-true stores in which the claim's rule says 'did not hold'."""
    rng = np.random.default_rng(seed)
    return sum(verdict(claim, claim_store(claim, rng, True)) == verdicts.NOT_HELD for _ in range(sims)) / sims


def false_held(claim: str, sims: int, seed: int = 2027) -> float | None:
    """The share of `sims` just-false stores in which the claim's rule says 'held' (None for F2, whose
    boundary store of F1 serves both)."""
    rng = np.random.default_rng(seed)
    return sum(verdict(claim, claim_store(claim, rng, False)) == verdicts.HELD for _ in range(sims)) / sims


# ----------------------------------------------------------------------------- power on known cases
def grid_claim1(rng, bad: bool) -> dict:
    """The report's 7 x 7 grid of bn cells above chance (spreads as in results/quick); with `bad`, one
    cell at 9.0 ± 0.5% (below chance 11.35%)."""
    c = {}
    for w in claims.REPORT_WIDTHS:
        for d in claims.REPORT_DEPTHS:
            s = 0.03 if w <= 20 else 0.01 if w <= 100 else 0.003
            c[("mlp", w, d, "bn")] = _cell(0.3 + 0.6 * min(w, 100) / 100 + rng.normal(0, s, SEEDS))
    if bad:
        c[("mlp", 10, 2, "bn")] = _cell(0.09 + rng.normal(0, 0.002, SEEDS))
    return c


def grid_claim4(rng, gap, sd: float) -> dict:
    """all − all-nobn on the 7 x 7 grid: gap(width, depth) in each cell, per-run sd `sd`."""
    c = {}
    for w in claims.REPORT_WIDTHS:
        for d in claims.REPORT_DEPTHS:
            a = 0.95 + rng.normal(0, sd, SEEDS)
            c[("mlp", w, d, "all")] = _cell(a)
            c[("mlp", w, d, "all-nobn")] = _cell(a - gap(w, d) + rng.normal(0, sd, SEEDS))
    return c


def deep_gaps(depth_from: int, widths) -> callable:
    """A gap of depth / 2 points in the cells of `widths` at depth_from and deeper, 0 elsewhere: the gap
    grows with depth at those widths (part 2 true there)."""
    return lambda w, d: 0.005 * d if d >= depth_from and w in widths else 0.0


def saturating(rng, advantage: float) -> dict:
    """bn at widths 10-80, depths 2, 4, 8: accuracy a function of the parameter count alone plus
    `advantage` per doubling of width, per-run sd 0.2 points (tests/test_verdicts.py's store)."""
    c = {}
    for w in (10, 20, 40, 80):
        for d in (2, 4, 8):
            base = 0.95 - 0.5 * math.exp(-w * d / 50) + advantage * math.log2(w / 10)
            c[("mlp", w, d, "bn")] = _cell(base + rng.normal(0, 0.002, SEEDS), params=w * d)
    return c


def wide(rng, bn: float, gap: float, sd: float) -> dict:
    """bn at width 784, depths 4-14, and random `gap` below it (paired sd `sd`)."""
    c = {}
    for d in claims.DEPTHS_2_3:
        b = bn + rng.normal(0, 0.002, SEEDS)
        c[("mlp", 784, d, "bn")] = _cell(b)
        c[("mlp", 784, d, "random")] = _cell(b - gap + rng.normal(0, sd, SEEDS))
    return c


def resnets(rng, gaps: dict, sd: float) -> dict:
    c = {}
    for m, gap in gaps.items():
        b = 0.6 + rng.normal(0, 0.005, SEEDS)
        c[(m, None, None, "bn")] = _cell(b)
        c[(m, None, None, "random")] = _cell(b - gap + rng.normal(0, sd, SEEDS))
    return c


def lenet(rng, sd: float) -> dict:
    b = 0.30 + rng.normal(0, 0.01, SEEDS)
    return {("lenet5", None, None, "bn"): _cell(b),
            ("lenet5", None, None, "random"): _cell(b - 0.025 + rng.normal(0, sd, SEEDS))}


POWER_CASES = {
    "claim 1, 7 x 7 cells, one at 9.0 ± 0.5%: did not hold": ("1", lambda rng: grid_claim1(rng, True),
                                                             verdicts.NOT_HELD),
    "claim 1, 7 x 7 cells, all above chance: held": ("1", lambda rng: grid_claim1(rng, False), verdicts.HELD),
    "claim 4, BatchNorm hurting 1 point in all 49 cells (sd 0.1): did not hold":
        ("4", lambda rng: grid_claim4(rng, lambda w, d: -0.01, 0.001), verdicts.NOT_HELD),
    "claim 4, BatchNorm helping in 24 of 49 cells (4-7 points, growing with depth), 25 at 0 (false): held":
        ("4", lambda rng: grid_claim4(rng, deep_gaps(8, claims.REPORT_WIDTHS[:6]), 0.003), verdicts.HELD),
    "claim 4, BatchNorm helping in 35 of 49 cells (3-7 points, growing with depth), 14 at 0: held":
        ("4", lambda rng: grid_claim4(rng, deep_gaps(6, claims.REPORT_WIDTHS), 0.003), verdicts.HELD),
    "claim 2, bn at 95% (sd 0.2 points) at depths 4-14: held": ("2", lambda rng: wide(rng, 0.95, 0.12, 0.01),
                                                                 verdicts.HELD),
    "claim 3, bn − random 12 points (paired sd 1 point) at depths 4-14: held":
        ("3", lambda rng: wide(rng, 0.95, 0.12, 0.01), verdicts.HELD),
    "F1, bn − random 20 points (paired sd 2 points) at ResNet-110 and -218: held":
        ("F1", lambda rng: resnets(rng, {"resnet110": 0.2, "resnet218": 0.2}, 0.02), verdicts.HELD),
    "F2, the gap growing by 5 points from ResNet-14 to -110 (paired sd 2 points): held":
        ("F2", lambda rng: resnets(rng, {"resnet14": 0.15, "resnet110": 0.2}, 0.02), verdicts.HELD),
    "claim 5, +0.4 points per doubling: held": ("5", lambda rng: saturating(rng, 0.004), verdicts.HELD),
    "claim 5, no width effect: held": ("5", lambda rng: saturating(rng, 0.0), verdicts.HELD),
    "claim 6, bn 30%, bn − random +2.5 points, paired sd 1.5 points: held": ("6", lambda rng: lenet(rng, 0.015),
                                                                           verdicts.HELD),
    "claim 6, the same, paired sd 4 points: held": ("6", lambda rng: lenet(rng, 0.04), verdicts.HELD),
}


def power(case: str, sims: int, seed: int = 7) -> float:
    claim, make, target = POWER_CASES[case]
    rng = np.random.default_rng(seed)
    return sum(verdict(claim, make(rng)) == target for _ in range(sims)) / sims


# ----------------------------------------------------------------------------- seeds the claims study needs
QUICK = Path(__file__).resolve().parents[1] / "results" / "quick" / "results.csv"
DISTANCES = (0.005, 0.01, 0.02, 0.05)  # a cell's distance from its boundary: 0.5, 1, 2, 5 points


def seeds_table() -> dict:
    """Per quantity a claim tests: its per-run sd over results/quick's cells (median and largest) and
    the seeds per cell that decide a cell 0.5, 1, 2 or 5 points from its boundary at that sd (80%
    power, one-sided 2.5%: verdicts.Test.seeds_needed)."""
    from bnonly.study.cells import accuracy, cells, difference
    from bnonly.study.stats import Stat
    c = cells(read_csv(QUICK)[0])
    cell = {(w, d, t): v for (m, w, d, t), v in c.items()}
    archs = sorted({(w, d) for w, d, _ in cell})
    quantities = {
        "bn accuracy": [accuracy(cell[(w, d, "bn")]) for w, d in archs],
        "bn − random, paired": [difference(cell[(w, d, "bn")], cell[(w, d, "random")]) for w, d in archs],
        "all − all-nobn, paired": [difference(cell[(w, d, "all")], cell[(w, d, "all-nobn")]) for w, d in archs],
    }
    out = {}
    for name, stats in quantities.items():
        sds = sorted(st.se * math.sqrt(st.n) for st in stats)
        row = {"cells": len(sds), "median_sd": float(np.median(sds)), "largest_sd": sds[-1]}
        for which in ("median_sd", "largest_sd"):
            row[f"seeds at {which}"] = [verdicts.Test(Stat(x, row[which] / math.sqrt(SEEDS), SEEDS), above=0.0)
                                        .seeds_needed() for x in DISTANCES]
        out[name] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=4000)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    result = {"command": f"python benchmarks/error_rates.py --sims {args.sims}", "commit": commit,
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "sims": args.sims, "seeds": SEEDS, "level": verdicts.ALPHA,
              "claims": {c: {"false_not_held": false_not_held(c, args.sims), "false_held": false_held(c, args.sims)}
                         for c in RULES},
              "parts": part_rates(args.sims),
              "not_kept": variants(args.sims),
              "power": {case: power(case, max(args.sims // 4, 100)) for case in POWER_CASES},
              "seeds": {"distances": DISTANCES, "source": "results/quick/results.csv", **seeds_table()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

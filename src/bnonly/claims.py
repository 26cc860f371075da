"""The report's six claims, each with the rule that decides it (decided as verdicts.py says).

`claims(runs, dataset)` returns dicts {id, claim, rule, measured, verdict}; the rule is printed next
to the verdict in the report. `runs` must be one study (stats.studies) in the report's setting
(BatchNorm, random weights spread evenly) on one data set. Every comparison between sets is paired:
per seed, the difference of the two runs that share the seed's weights and data order, with a 95%
Student-t interval over seeds (stats.gap). Diverged runs count, at their best weights' test
accuracy; the text says how many. Chance is the test set's majority-class rate (stats.chance). The
thresholds of claims 2, 3 and 6 are the report's MNIST numbers: on other data sets those claims are
"not applicable".
"""
from __future__ import annotations

import math

from .stats import REPORT, accuracies, accuracy, cells, chance, config_of, differences, gap, mean_ci, paired
from .verdicts import (FEW, HELD, INCONCLUSIVE, NOT_APPLICABLE, NOT_HELD, NOT_MEASURED, Test, both, every, fmt, judged,
                       most, runs_of)

BAND2 = (0.925, 0.975)   # "about 95%"
GAP3 = 0.10              # "more than 10 points worse": percentage points
BAND6 = (0.25, 0.35)     # "about 30%"
GAP6 = (0.0, 0.05)       # "2-3 points lower": above 0, at most 5 points
LEVEL5 = 0.02            # "levels off": a change within 2 points
MNIST_ONLY = (2, 3, 6)   # claims whose thresholds are MNIST numbers

EVERY = (" It did not hold where Holm's procedure across those cells refutes one (a one-sided t test at "
         "2.5% puts it on the wrong side), and is inconclusive otherwise (more seeds would decide).")

CLAIMS = (
    "BN-only is consistently above chance at every width and depth.",
    "BN-only on 784-wide MLPs with 4–14 hidden layers reaches about 95% test accuracy.",
    "An equal number of random weights is more than 10 percentage points worse there.",
    "With all parameters training, BatchNorm helps, more so at depth.",
    "BN-only accuracy grows with width more than with depth and levels off after about 4 hidden layers.",
    "LeNet-5 BN-only reaches about 30%, random weights 2–3 points lower.",
)


def rules(chance_rate: float) -> tuple[str, ...]:
    return (
        f"For every MLP (width, depth) with bn runs: the 95% interval of bn's test accuracy over seeds lies above "
        f"chance (the test set's majority-class rate, {100 * chance_rate:.2f}%). Held if it does in every cell." + EVERY,
        f"For bn at width 784 and each depth 4–14 that was run: the 95% interval over seeds lies inside "
        f"[{100 * BAND2[0]:.1f}%, {100 * BAND2[1]:.1f}%] ('about 95%'). Held if it does at every such depth." + EVERY,
        "For each depth 4–14 at width 784 with bn and random runs: the paired per-seed difference bn − random, "
        "95% interval over seeds. Held if its lower end exceeds 10 percentage points at every such depth." + EVERY,
        "Per (width, depth): the paired per-seed difference all − all-nobn ('gap'). Per width with ≥ 2 depths: the "
        "paired per-seed growth of the gap from the shallowest to the deepest depth. Each part holds when the "
        "interval lies above 0 in more than half of its cells (widths), and did not hold when Holm's procedure "
        "across them refutes half or more (a majority out of reach); held if both parts hold.",
        "For bn, per seed: growth along width = the accuracy change from the narrowest to the widest width per "
        "doubling of trainable parameters, averaged over the depths both widths have; growth along depth = the "
        "change from the shallowest to the deepest depth per doubling, averaged over widths. Part 1 holds if the "
        "interval over seeds of (width growth − depth growth) is above 0. Part 2, at the widest width: the paired "
        "rise from the shallowest depth below 4 to depth 4 has its interval above 0, and the paired change from "
        f"depth 4 to the deepest depth has its interval inside ±{100 * LEVEL5:.0f} points. Held if both parts hold; "
        "a part refuted (a one-sided t test at 2.5%) refutes it; a part that cannot be measured makes it 'not "
        "measured' unless the other was refuted.",
        f"LeNet-5: the 95% interval of bn lies inside [{100 * BAND6[0]:.0f}%, {100 * BAND6[1]:.0f}%] ('about 30%') "
        f"and the paired bn − random interval lies inside ({100 * GAP6[0]:.0f}, {100 * GAP6[1]:.0f}] points. Held if "
        "both; did not hold if a one-sided t test at 2.5% puts either outside.",
    )


def _depths(depths) -> str:
    return f"(at the depths run: {', '.join(map(str, depths))})"


def _mlp(c, t) -> dict[tuple[int, int], dict]:
    return {(w, d): cell for (m, w, d, tt), cell in c.items() if m == "mlp" and tt == t}




# ----------------------------------------------------------------------------- the report's claims
def claim1(c, chance_rate):
    bn = _mlp(c, "bn")
    if not bn:
        return "No BN-only MLP runs.", NOT_MEASURED, []
    tests = {k: Test(accuracy(v), above=chance_rate) for k, v in bn.items()}
    verdict, counts = every(list(tests.values()))
    (w, d), worst = min(tests.items(), key=lambda kv: kv[1].stat.lo if kv[1].stat.n >= 2 else kv[1].stat.mean)
    return (f"Against chance {100 * chance_rate:.2f}%: {counts}; lowest: {fmt(worst.stat)} at width {w}, depth {d}.",
            verdict, runs_of(bn))


def claim2(c, chance_rate):
    bn = {d: v for (w, d), v in _mlp(c, "bn").items() if w == 784 and 4 <= d <= 14}
    if not bn:
        return "No BN-only runs at width 784 with depth 4–14.", NOT_MEASURED, []
    tests = {d: Test(accuracy(v), band=BAND2) for d, v in sorted(bn.items())}
    verdict, counts = every(list(tests.values()))
    text = "; ".join(f"depth {d}: {fmt(t.stat)}" for d, t in tests.items()) + f" ({counts}) {_depths(tests)}."
    return text, verdict, runs_of(bn)


def claim3(c, chance_rate):
    bn, rnd = _mlp(c, "bn"), _mlp(c, "random")
    depths = sorted(d for (w, d) in bn if w == 784 and 4 <= d <= 14 and (w, d) in rnd)
    if not depths:
        return "No width-784 depth 4–14 with both BN-only and random runs.", NOT_MEASURED, []
    tests = {d: Test(gap(bn[(784, d)], rnd[(784, d)]), above=GAP3) for d in depths}
    verdict, counts = every(list(tests.values()))
    text = "bn − random: " + "; ".join(f"depth {d}: {fmt(t.stat, True)}" for d, t in tests.items())
    text += f" (above 10 points: {counts}) {_depths(depths)}."
    return text, verdict, runs_of({d: bn[(784, d)] for d in depths}, {d: rnd[(784, d)] for d in depths})


def confound4(runs) -> str:
    """What else tells `all` from `all-nobn` in this setting besides BatchNorm: a hidden shift."""
    cfgs = [config_of(r) for r in runs if r.get("trainable") in ("all", "all-nobn")]
    if not cfgs:
        return ""
    beta, bias = cfgs[0]["hidden_beta"], cfgs[0]["hidden_bias"]
    if beta == bias:
        return ""
    return (" Confound: here `all` has " + ("BatchNorm's shift beta" if beta else "no hidden shift (BatchNorm without "
            "beta, no bias)") + " and `all-nobn` " + ("hidden biases" if bias else "no hidden biases") +
            ", so the gap measures that difference too.")


def claim4(c, chance_rate):
    a, b = _mlp(c, "all"), _mlp(c, "all-nobn")
    pairs = sorted(k for k in a if k in b)
    if not pairs:
        return "No (width, depth) with both all and all-nobn runs.", NOT_MEASURED, []
    used = runs_of({k: a[k] for k in pairs}, {k: b[k] for k in pairs})
    helps_v, helps = most([Test(gap(a[k], b[k]), above=0.0) for k in pairs])
    text = f"all − all-nobn: interval {helps}"
    by_width: dict[int, list[int]] = {}
    for w, d in pairs:
        by_width.setdefault(w, []).append(d)
    seeds = {k: differences(accuracies(a[k]), accuracies(b[k])) for k in pairs}
    growth = {w: Test(paired(seeds[(w, max(ds))], seeds[(w, min(ds))]), above=0.0)
              for w, ds in sorted(by_width.items()) if len(ds) >= 2}
    if not growth:
        return (text + "; 'more so at depth' not measured (needs a width with ≥ 2 depths).",
                NOT_HELD if helps_v == NOT_HELD else NOT_MEASURED, used)
    grows_v, grows = most(list(growth.values()), "widths", "at")
    text += "; growth of the gap from the shallowest to the deepest depth: " + ", ".join(
        f"w{w}: {fmt(t.stat, True)}" for w, t in growth.items()) + f" ({grows})."
    return text, both(helps_v, grows_v), used


def _params(cell: dict) -> float | None:
    ps = [r.get("trainable_params") for r in cell.values() if r.get("trainable_params")]
    return float(ps[0]) if ps else None


def claim5(c, chance_rate):
    bn = _mlp(c, "bn")
    if not bn:
        return "No BN-only MLP runs.", NOT_MEASURED, []
    acc = {k: accuracies(v) for k, v in bn.items()}
    widths = sorted({w for w, _ in bn})
    depths_of = {w: sorted(d for ww, d in bn if ww == w) for w in widths}
    parts, results = [], []

    def slope(k1, k2, s):  # accuracy change per doubling of trainable parameters, from cell k1 to k2
        p1, p2 = _params(bn[k1]), _params(bn[k2])
        return (acc[k2][s] - acc[k1][s]) / math.log2(p2 / p1) if p1 and p2 and p2 != p1 else math.nan

    narrow, wide = widths[0], widths[-1]
    common = [d for d in depths_of[wide] if (narrow, d) in bn] if len(widths) >= 2 else []
    multi = [w for w in widths if len(depths_of[w]) >= 2]
    cells_used = [(narrow, d) for d in common] + [(wide, d) for d in common] + \
        [(w, depths_of[w][i]) for w in multi for i in (0, -1)]
    seeds = sorted(set.intersection(*(set(acc[k]) for k in cells_used))) if cells_used else []
    if common and multi and len(seeds) >= 2:  # the seeds every cell of this part has
        diff = []
        for s in seeds:
            sw = sum(slope((narrow, d), (wide, d), s) for d in common) / len(common)
            sd = sum(slope((w, depths_of[w][0]), (w, depths_of[w][-1]), s) for w in multi) / len(multi)
            diff.append(sw - sd)
        st = mean_ci(diff)
        if st.n >= 2:
            results.append(Test(st, above=0.0).outcome)
            parts.append(f"width growth − depth growth per doubling of parameters {fmt(st, True)}")
    if not results:
        parts.append("width vs depth not measured (needs ≥ 2 widths sharing a depth, a width with ≥ 2 depths, "
                     "trainable-parameter counts and ≥ 2 seeds)")
    below = [d for d in depths_of[wide] if d < 4]
    deeper = [d for d in depths_of[wide] if d > 4]
    rise = change = None
    if 4 in depths_of[wide] and below and deeper:
        rise = gap(bn[(wide, 4)], bn[(wide, below[0])])
        change = gap(bn[(wide, deeper[-1])], bn[(wide, 4)])
    if rise is not None and rise.n >= 2 and change.n >= 2:
        results.append(min(Test(rise, above=0.0).outcome, Test(change, band=(-LEVEL5, LEVEL5)).outcome))
        parts.append(f"at width {wide}: depth {below[0]} → 4 {fmt(rise, True)}, depth 4 → {deeper[-1]} {fmt(change, True)}")
    else:
        parts.append(f"levelling not measured (width {wide} needs a depth below 4, depth 4 and a deeper one, "
                     "and ≥ 2 seeds)")
    if -1 in results:
        verdict = NOT_HELD
    elif len(results) < 2:
        verdict = NOT_MEASURED
    else:
        verdict = HELD if results == [1, 1] else INCONCLUSIVE
    partial = " (partially measured)" if len(results) == 1 else ""
    return "; ".join(parts) + "." + partial, verdict, runs_of(bn) if results else []


def claim6(c, chance_rate):
    lenet = {t: cell for (m, _, _, t), cell in c.items() if m == "lenet5"}
    if "bn" not in lenet or "random" not in lenet:
        return "Needs LeNet-5 runs with both bn and random.", NOT_MEASURED, []
    bn, d = Test(accuracy(lenet["bn"]), band=BAND6), Test(gap(lenet["bn"], lenet["random"]), band=GAP6)
    if bn.outcome is None or d.outcome is None:
        return FEW + ".", NOT_MEASURED, []
    return (f"LeNet-5 BN-only {fmt(bn.stat)}; bn − random {fmt(d.stat, True)}.",
            {1: HELD, -1: NOT_HELD, 0: INCONCLUSIVE}[min(bn.outcome, d.outcome)],
            runs_of({"bn": lenet["bn"], "random": lenet["random"]}))


CLAIM_RULES = (claim1, claim2, claim3, claim4, claim5, claim6)


def claims(runs, dataset: str = "mnist", data_dir=None) -> list[dict]:
    """The six claims on one study's runs of one data set: dicts with id, claim, rule, measured, verdict."""
    c = cells(runs)
    rate = chance(dataset, data_dir)
    out = []
    for i, (rule, text) in enumerate(zip(CLAIM_RULES, rules(rate))):
        cid = i + 1
        if cid in MNIST_ONLY and dataset not in ("mnist", None):
            measured, verdict = f"Its thresholds are the report's MNIST numbers; not applied to {dataset}.", NOT_APPLICABLE
        else:
            measured, verdict, used = rule(c, rate)
            if cid == 4:
                measured += confound4(used)
            measured, verdict = judged(measured, verdict, used, REPORT)
        out.append({"id": cid, "claim": CLAIMS[i], "rule": text, "measured": measured, "verdict": verdict})
    return out

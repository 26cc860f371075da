"""The report's six claims, each with the rule that decides it (verdicts.py decides; docs/study.md
states every rule as printed here). Comparisons are paired per seed; the thresholds of claims 2, 3
and 6 are the report's MNIST numbers, "not applicable" on other data sets.
"""
from __future__ import annotations

import math

from .protocol import REPORT
from .cells import accuracies, accuracy, cells, chance, config_of, difference, diverged_seeds, studies
from .stats import differences, mean_ci, paired, show
from .verdicts import FEW, NOT_APPLICABLE, NOT_MEASURED, Finding, Part, Test, decide, judged, runs_of, verdict_label

BAND2 = (0.925, 0.975)   # "about 95%"
GAP3 = 0.10              # "more than 10 points worse": percentage points
BAND6 = (0.25, 0.35)     # "about 30%"
GAP6 = (0.0, 0.05)       # "2-3 points lower": above 0, at most 5 points
LEVEL5 = 0.02            # "levels off": a change within 2 points
MNIST_ONLY = (2, 3, 6)   # claims whose thresholds are MNIST numbers
# The report's grid (its Figures 1-3), the cells a claim about "every width and depth" speaks of.
REPORT_WIDTHS, REPORT_DEPTHS = (10, 20, 40, 80, 100, 400, 784), (2, 4, 6, 8, 10, 12, 14)
DEPTHS_2_3 = tuple(d for d in REPORT_DEPTHS if 4 <= d <= 14)  # "4-14 hidden layers"

CLAIMS = (
    "BN-only is consistently above chance at every width and depth.",
    "BN-only on 784-wide MLPs with 4–14 hidden layers reaches about 95% test accuracy.",
    "An equal number of random weights is more than 10 percentage points worse there.",
    "With all parameters training, BatchNorm helps, more so at depth.",
    "BN-only accuracy grows with width more than with depth and levels off after about 4 hidden layers.",
    "LeNet-5 BN-only reaches about 30%, random weights 2–3 points lower.",
)


def rules(chance_rate: float, chance_basis: str = "the test set's majority-class rate") -> tuple[str, ...]:
    return (
        f"For every MLP (width, depth) with bn runs: the 95% interval of bn's test accuracy over seeds lies above "
        f"chance ({chance_basis}, {100 * chance_rate:.2f}%). Held if it does in every cell; the claim speaks of the "
        f"report's {len(REPORT_WIDTHS) * len(REPORT_DEPTHS)} cells (widths {_list(REPORT_WIDTHS)}, depths "
        f"{_list(REPORT_DEPTHS)}).",
        f"For bn at width 784 and each depth 4–14 that was run: the 95% interval over seeds lies inside "
        f"[{100 * BAND2[0]:.1f}%, {100 * BAND2[1]:.1f}%] ('about 95%'). Held if it does at every such depth; the claim "
        f"speaks of depths {_list(DEPTHS_2_3)}.",
        "For each depth 4–14 at width 784 with bn and random runs: the paired per-seed difference bn − random, "
        "95% interval over seeds. Held if its lower end exceeds 10 percentage points at every such depth (bnonly "
        "reads the report's 'more than 10% less' as 10 points; read as 10% of bn's accuracy it would be about 9.5 "
        f"points at 95%); the claim speaks of depths {_list(DEPTHS_2_3)}.",
        "Part 1, per (width, depth): the paired per-seed difference all − all-nobn ('gap'), held when more than half "
        "of the cells are shown above 0 (a partial-conjunction test). Part 2, per width with ≥ 2 depths: the paired "
        "per-seed growth of the gap from the shallowest to the deepest depth, held when more than half of the widths "
        "are shown above 0. Held if both parts hold.",
        "Part 1, width against depth at equal trainable parameters: for every pair of bn cells with the same number "
        "of trainable parameters, one k times wider and the other k times deeper, the paired difference wider − "
        "deeper per seed, regressed on log2(k) through the origin (points per doubling: sum of log2(k) x difference "
        "over sum of log2(k)², so a pair with k near 1 weighs little), over the seeds the judged pairs share (a pair "
        "with fewer than 2 seeds in common with the others is named and left out). Held if its 95% interval over "
        "seeds lies above 0 (a function of the parameter count alone gives exactly 0). Part 2, at the "
        "widest width with a depth below 4, depth 4 and a deeper one: the paired rise from the shallowest depth to "
        "depth 4 has its interval above 0, and "
        f"the paired change from depth 4 to the deepest depth has its interval inside ±{100 * LEVEL5:.0f} points. "
        "Held if both parts hold.",
        f"LeNet-5, part 1: the 95% interval of bn lies inside [{100 * BAND6[0]:.0f}%, {100 * BAND6[1]:.0f}%] ('about "
        f"30%'); part 2: the paired bn − random interval lies inside ({100 * GAP6[0]:.0f}, {100 * GAP6[1]:.0f}] "
        "points. Held if both parts hold.",
    )


def _list(xs) -> str:
    return ", ".join(map(str, xs))


def _scope(run: list, of: tuple, what: str, speaks: str) -> str:
    """'depths 4, 8 of 4–14' where only some of the cells a claim speaks of were run; '' where all were."""
    return "" if set(of) <= set(run) else f"{what} {_list(run)} of {speaks}"


def _mlp(c, t) -> dict[tuple[int, int], dict]:
    return {(w, d): cell for (m, w, d, tt), cell in c.items() if m == "mlp" and tt == t}


# ----------------------------------------------------------------------------- the report's claims
def claim1(c, chance_rate) -> Finding:
    bn = _mlp(c, "bn")
    if not bn:
        return Finding("No BN-only MLP runs.", NOT_MEASURED)
    tests = {k: Test(accuracy(v), above=chance_rate) for k, v in sorted(bn.items())}
    part = Part(list(tests.values()))
    verdict = decide(part)
    (w, d), worst = min(tests.items(), key=lambda kv: kv[1].stat.lo if kv[1].stat.n >= 2 else kv[1].stat.mean)
    grid = [k for k in bn if k[0] in REPORT_WIDTHS and k[1] in REPORT_DEPTHS]
    n = len(REPORT_WIDTHS) * len(REPORT_DEPTHS)
    where = f"widths {_list(sorted({w for w, _ in bn}))}; depths {_list(sorted({d for _, d in bn}))}"
    scope = "" if len(grid) == n else (f"{len(grid)} of the report's {n} cells ({where})" if len(grid) == len(bn) else
                                       f"{len(bn)} cells, {len(grid)} of them the report's {n} ({where})")
    return Finding(f"Against chance {100 * chance_rate:.2f}%: {part.counts()}; lowest: {show(worst.stat)} at width "
                   f"{w}, depth {d}.", verdict, runs_of(bn), scope, [part])


def claim2(c, chance_rate) -> Finding:
    bn = {d: v for (w, d), v in _mlp(c, "bn").items() if w == 784 and 4 <= d <= 14}
    if not bn:
        return Finding("No BN-only runs at width 784 with depth 4–14.", NOT_MEASURED)
    tests = {d: Test(accuracy(v), band=BAND2) for d, v in sorted(bn.items())}
    part = Part(list(tests.values()), unit="depths")
    verdict = decide(part)
    text = "; ".join(f"depth {d}: {show(t.stat)}" for d, t in tests.items()) + f" ({part.counts()})."
    return Finding(text, verdict, runs_of(bn), _scope(sorted(bn), DEPTHS_2_3, "depths", "4–14"), [part])


def claim3(c, chance_rate) -> Finding:
    bn, rnd = _mlp(c, "bn"), _mlp(c, "random")
    depths = sorted(d for (w, d) in bn if w == 784 and 4 <= d <= 14 and (w, d) in rnd)
    if not depths:
        return Finding("No width-784 depth 4–14 with both BN-only and random runs.", NOT_MEASURED)
    tests = {d: Test(difference(bn[(784, d)], rnd[(784, d)]), above=GAP3) for d in depths}
    part = Part(list(tests.values()), unit="depths")
    verdict = decide(part)
    text = "bn − random: " + "; ".join(f"depth {d}: {show(t.stat, ' points', True)}" for d, t in tests.items())
    text += f" (above 10 points: {part.counts()})."
    return Finding(text, verdict, runs_of({d: bn[(784, d)] for d in depths}, {d: rnd[(784, d)] for d in depths}),
                   _scope(depths, DEPTHS_2_3, "depths", "4–14"), [part])


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


def _cells_scope(keys) -> str:
    """'4 cells (widths 10, 784; depths 2, 8)': the MLP cells a claim was judged on."""
    return (f"{len(keys)} cell{'s' if len(keys) != 1 else ''} (widths {_list(sorted({w for w, _ in keys}))}; depths "
            f"{_list(sorted({d for _, d in keys}))})")


def claim4(c, chance_rate) -> Finding:
    a, b = _mlp(c, "all"), _mlp(c, "all-nobn")
    pairs = sorted(k for k in a if k in b)
    if not pairs:
        return Finding("No (width, depth) with both all and all-nobn runs.", NOT_MEASURED)
    used = runs_of({k: a[k] for k in pairs}, {k: b[k] for k in pairs})
    helps = Part([Test(difference(a[k], b[k]), above=0.0) for k in pairs], rule="most")
    by_width: dict[int, list[int]] = {}
    for w, d in pairs:
        by_width.setdefault(w, []).append(d)
    seeds = {k: differences(accuracies(a[k]), accuracies(b[k])) for k in pairs}
    growth = {}
    for w, ds in sorted(by_width.items()):
        if len(ds) >= 2:
            lo, hi = (w, min(ds)), (w, max(ds))
            st = paired(seeds[hi], seeds[lo])
            common = set(seeds[hi]) & set(seeds[lo])
            growth[w] = Test(st._replace(diverged=diverged_seeds(a[lo], a[hi], b[lo], b[hi], seeds=common)),
                             above=0.0)
    grows = Part(list(growth.values()), rule="most", unit="widths", where="at")
    verdict = decide(helps, grows)
    text = f"all − all-nobn: {helps.counts()}"
    if not growth:
        text += "; 'more so at depth' not measured (needs a width with ≥ 2 depths)."
    else:
        text += "; growth of the gap from the shallowest to the deepest depth: " + ", ".join(
            f"w{w}: {show(t.stat, ' points', True)}" for w, t in growth.items()) + f" ({grows.counts()})."
    return Finding(text, verdict, used, _cells_scope(pairs), [helps, grows])


def matched_pairs(bn: dict) -> list[tuple[tuple, tuple, float]]:
    """(wider cell, deeper cell, log2 k) for every two bn MLP cells with the same trainable-parameter
    count where one is k times wider and the other k times deeper."""
    params = {k: _params(v) for k, v in bn.items()}
    out = []
    for (w1, d1), p1 in sorted(params.items()):
        for (w2, d2), p2 in sorted(params.items()):
            if p1 and p1 == p2 and w1 > w2 and d1 < d2 and w1 * d1 == w2 * d2:
                out.append(((w1, d1), (w2, d2), math.log2(w1 / w2)))
    return out


def _params(cell: dict) -> float | None:
    ps = [r.get("trainable_params") for r in cell.values() if r.get("trainable_params")]
    return float(ps[0]) if ps else None


def slope(acc: dict, pairs: list[tuple[tuple, tuple, float]], seeds) -> Stat:
    """Points per doubling over the seeds: per seed, the pairs' differences wider − deeper regressed on
    log2 k through the origin, sum L d / sum L² (a pair of k near 1 weighs little); mean and t interval
    of those per-seed slopes (pairs that share a cell stay correctly correlated)."""
    s2 = sum(k * k for _, _, k in pairs)
    return mean_ci([sum(k * (acc[wide][s] - acc[deep][s]) for wide, deep, k in pairs) / s2 for s in sorted(seeds)])


def judged_pairs(bn: dict, pairs: list) -> tuple[list, set]:
    """The pairs judged and the seeds they share: each pair over the seeds both its cells have, the
    pairs with the most seeds first, each kept while the kept pairs still share ≥ 2 seeds."""
    seeds_of = [set(bn[wide]) & set(bn[deep]) for wide, deep, _ in pairs]
    kept, common = [], set()
    for i in sorted(range(len(pairs)), key=lambda i: -len(seeds_of[i])):
        shared = seeds_of[i] if not kept else common & seeds_of[i]
        if len(shared) >= 2:
            kept.append(i)
            common = shared
    return [pairs[i] for i in sorted(kept)], common


def claim5(c, chance_rate) -> Finding:
    bn = _mlp(c, "bn")
    if not bn:
        return Finding("No BN-only MLP runs.", NOT_MEASURED)
    acc = {k: accuracies(v) for k, v in bn.items()}
    texts, used, scope = [], {}, []
    pairs = matched_pairs(bn)
    kept, seeds = judged_pairs(bn, pairs)
    width_part = Part([], unit="tests")

    def name(p):
        return f"w{p[0][0]} d{p[0][1]} vs w{p[1][0]} d{p[1][1]}"
    if kept:
        st = slope(acc, kept, seeds)._replace(diverged=diverged_seeds(*(bn[k] for p in kept for k in p[:2]),
                                                                      seeds=seeds))
        width_part.tests.append(Test(st, above=0.0))
        used.update((id(r), r) for p in kept for k in p[:2] for s_, r in bn[k].items() if s_ in seeds)
        texts.append(f"at equal trainable parameters, wider − deeper per doubling {show(st, ' points', True)} over "
                     f"{len(kept)} pair(s) of cells, seeds {', '.join(map(str, sorted(seeds)))} ("
                     + "; ".join(f"{name(p)}: {show(difference(bn[p[0]], bn[p[1]]), ' points', True, 'one')}"
                                 for p in kept) + ")"
                     + "".join(f"; {name(p)} not judged (fewer than 2 seeds shared with the others)"
                               for p in pairs if p not in kept))
        scope.append("pairs " + ", ".join(name(p) for p in kept))
    elif pairs:
        texts.append("width vs depth not measured (no pair of cells of equal trainable-parameter counts has ≥ 2 "
                     "seeds in common)")
    else:
        texts.append("width vs depth not measured (needs two bn cells with equal trainable-parameter counts, one "
                     "k times wider and the other k times deeper, e.g. width 20 depth 2 and width 10 depth 4)")
    level_part = Part([], unit="tests")
    ready = [w for w in sorted({w for w, _ in bn}) if (w, 4) in bn and any(d < 4 for ww, d in bn if ww == w)
             and any(d > 4 for ww, d in bn if ww == w)]
    if ready:
        wide = ready[-1]
        depths = sorted(d for w, d in bn if w == wide)
        low, deep = depths[0], depths[-1]
        rise = difference(bn[(wide, 4)], bn[(wide, low)])
        change = difference(bn[(wide, deep)], bn[(wide, 4)])
        level_part.tests += [Test(rise, above=0.0), Test(change, band=(-LEVEL5, LEVEL5))]
        used.update((id(r), r) for k in ((wide, low), (wide, 4), (wide, deep)) for r in bn[k].values())
        texts.append(f"at width {wide}: depth {low} → 4 {show(rise, ' points', True)}, depth 4 → {deep} "
                     f"{show(change, ' points', True)}")
        scope.append(f"levelling at width {wide}, depths {low}, 4, {deep}")
    else:
        texts.append("levelling not measured (needs a width with a depth below 4, depth 4 and a deeper one)")
    verdict = decide(width_part, level_part)
    measured = [p for p in (width_part, level_part) if p.tests and p.verdict != NOT_MEASURED]
    partial = " (partially measured)" if len(measured) == 1 else ""
    return Finding("; ".join(texts) + "." + partial, verdict, list(used.values()), "; ".join(scope),
                   [width_part, level_part])


def claim6(c, chance_rate) -> Finding:
    lenet = {t: cell for (m, _, _, t), cell in c.items() if m == "lenet5"}
    if "bn" not in lenet:
        return Finding("Needs LeNet-5 runs of bn (and random).", NOT_MEASURED)
    bn = Test(accuracy(lenet["bn"]), band=BAND6)
    d = Test(difference(lenet["bn"], lenet["random"]), band=GAP6, open_low=True) if "random" in lenet else None
    parts = [Part([bn]), Part([d] if d else [])]
    verdict = decide(*parts)
    text = f"LeNet-5 BN-only {show(bn.stat)}; " + (f"bn − random {show(d.stat, ' points', True)}" if d else
                                                   "bn − random not measured (no random runs)")
    if bn.outcome is None or (d is not None and d.outcome is None):
        text += f" ({FEW})"
    used = runs_of({t: lenet[t] for t in ("bn", "random") if t in lenet})
    return Finding(text + ".", verdict, used, parts=parts)


CLAIM_RULES = (claim1, claim2, claim3, claim4, claim5, claim6)


def claims(runs, dataset: str | None = None, data_dir=None) -> list[dict]:
    """The six claims on one study's runs of one data set (the runs', or MNIST without runs): dicts
    with id, claim, rule, measured, verdict, scope (the cells a universal claim was judged on, where
    not all) and setting (the published setting its runs are in, "none" outside them;
    verdicts.judged). Runs of several studies or data sets are refused, never pooled."""
    found = {config_of(r)["dataset"] for r in runs}
    if len(found) > 1 or (dataset is not None and found and found != {dataset}):
        raise ValueError(f"runs of data sets {', '.join(sorted(found))}: the claims judge one data set at a time"
                         + (f" (asked for {dataset})" if dataset else ""))
    if len(studies(runs)) > 1:
        raise ValueError("runs of several studies (they differ in more than the seed and the grid): the claims "
                         "judge one study at a time (runs.studies splits them)")
    dataset = dataset or next(iter(found), "mnist")
    c = cells(runs)
    rate, basis = chance(dataset, data_dir)
    out = []
    for i, (rule, text) in enumerate(zip(CLAIM_RULES, rules(rate, basis))):
        cid = i + 1
        if cid in MNIST_ONLY and dataset != "mnist":
            j = judged(Finding(f"Its thresholds are the report's MNIST numbers; not applied to {dataset}.",
                               NOT_APPLICABLE), REPORT)
        else:
            f = rule(c, rate)
            if cid == 4:
                f.measured += confound4(f.used)
            j = judged(f, REPORT)
        out.append({"id": cid, "claim": CLAIMS[i], "rule": text, **j, "label": verdict_label(j)})
    return out

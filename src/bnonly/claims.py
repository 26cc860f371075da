"""The report's six claims, each with the rule that decides it and what was measured.

`claims(runs)` returns dicts {id, claim, rule, measured, verdict}; the rule is printed next to the
verdict in the report.
"""
from __future__ import annotations

from collections import defaultdict

from .stats import CHANCE, lenet_stats, mlp_stats, pct

HELD, NOT_HELD, NOT_MEASURED = "held", "did not hold", "not measured"
CLAIMS = (
    "BN-only is consistently above chance at every width and depth.",
    "BN-only on 784-wide MLPs with 4–14 hidden layers reaches about 95% test accuracy.",
    "An equal number of random weights is more than 10 points worse there.",
    "With all parameters training, BatchNorm helps, more so at depth.",
    "BN-only accuracy grows with width more than with depth and levels off after about 4 hidden layers.",
    "LeNet-5 BN-only reaches about 30%, random weights 2–3 points lower.",
)
RULES = (
    "Held if, for every (width, depth) with bn runs, the mean test accuracy and the lower end of its "
    "95% interval are both above 10% (with one seed the interval is the mean).",
    "Over bn runs at width 784 and depth 4–14: held if every depth's mean is ≥ 93%.",
    "For each depth 4–14 at width 784 with both bn and random runs, gap = mean(bn) − mean(random); "
    "held if every gap > 10 points.",
    "gap(width, depth) = mean(all) − mean(all-nobn). Held if the mean gap over all cells is > 0 and, for "
    "more than half of the widths with ≥ 2 depths, the gap at the deepest depth exceeds the gap at the "
    "shallowest.",
    "For bn: width effect = mean over depths of (acc at widest − acc at narrowest width); depth effect = "
    "mean over widths of (acc at deepest − acc at shallowest depth); levelling = at the widest width, "
    "|acc(deepest) − acc(depth 4)| < 2 points. Held if width effect > depth effect and levelling holds. "
    "A part that fails makes it 'did not hold'; a part that cannot be measured (needs ≥ 2 widths sharing a "
    "depth, a width with ≥ 2 depths, and depth 4 plus a deeper one at the widest width) makes it "
    "'not measured' unless the other part failed.",
    "LeNet-5: held if 20% ≤ mean(bn) ≤ 40% and 0 < mean(bn) − mean(random) ≤ 5 points.",
)


def _claim(i: int, measured: str, verdict: str) -> dict:
    return {"id": i + 1, "claim": CLAIMS[i], "rule": RULES[i], "measured": measured, "verdict": verdict}


def claim1(mlp) -> dict:
    bn = {(w, d): s for (w, d, t), s in mlp.items() if t == "bn"}
    if not bn:
        return _claim(0, "No finished BN-only MLP runs.", NOT_MEASURED)
    (w, d), worst = min(bn.items(), key=lambda kv: kv[1].mean)
    low = min(bn.values(), key=lambda s: s.lo)
    ok = all(s.mean > CHANCE and s.lo > CHANCE for s in bn.values())
    return _claim(0, f"Lowest BN-only mean {pct(worst.mean)} at width {w}, depth {d} (n={worst.n}); "
                     f"lowest interval end {pct(low.lo)}; {len(bn)} cells.", HELD if ok else NOT_HELD)


def claim2(mlp) -> dict:
    bn = {d: s for (w, d, t), s in mlp.items() if t == "bn" and w == 784 and 4 <= d <= 14}
    if not bn:
        return _claim(1, "No BN-only runs at width 784 with depth 4–14.", NOT_MEASURED)
    lo, hi = min(s.mean for s in bn.values()), max(s.mean for s in bn.values())
    ok = all(s.mean >= 0.93 for s in bn.values())
    return _claim(1, f"BN-only means {pct(lo)}–{pct(hi)} over depths {sorted(bn)}.", HELD if ok else NOT_HELD)


def claim3(mlp) -> dict:
    gaps = {d: mlp[(784, d, "bn")].mean - mlp[(784, d, "random")].mean
            for (w, d, t) in mlp if t == "bn" and w == 784 and 4 <= d <= 14 and (784, d, "random") in mlp}
    if not gaps:
        return _claim(2, "No width-784 depth with both BN-only and random runs.", NOT_MEASURED)
    lo, hi = min(gaps.values()), max(gaps.values())
    ok = all(g > 0.10 for g in gaps.values())
    return _claim(2, f"bn − random = {100 * lo:.1f} to {100 * hi:.1f} points over depths {sorted(gaps)}.",
                  HELD if ok else NOT_HELD)


def claim4(mlp) -> dict:
    gaps = defaultdict(dict)  # width -> depth -> gap
    for (w, d, t) in mlp:
        if t == "all" and (w, d, "all-nobn") in mlp:
            gaps[w][d] = mlp[(w, d, "all")].mean - mlp[(w, d, "all-nobn")].mean
    if not gaps:
        return _claim(3, "No (width, depth) with both all and all-nobn runs.", NOT_MEASURED)
    mean_gap = sum(g for by_d in gaps.values() for g in by_d.values()) / sum(len(v) for v in gaps.values())
    deep = {w: (by_d[min(by_d)], by_d[max(by_d)]) for w, by_d in gaps.items() if len(by_d) >= 2}
    grows = sum(g_deep > g_shallow for g_shallow, g_deep in deep.values())
    text = f"Mean gap all − all-nobn {100 * mean_gap:+.1f} points over {sum(len(v) for v in gaps.values())} cells"
    if not deep:
        return _claim(3, text + "; no width has ≥ 2 depths, so 'more so at depth' is not measured.",
                      NOT_HELD if mean_gap <= 0 else NOT_MEASURED)
    text += "; shallowest → deepest gap: " + ", ".join(
        f"w{w}: {100 * a:+.1f} → {100 * b:+.1f}" for w, (a, b) in sorted(deep.items()))
    text += f" (grows at {grows} of {len(deep)} widths)."
    return _claim(3, text, HELD if mean_gap > 0 and grows > len(deep) / 2 else NOT_HELD)


def claim5(mlp) -> dict:
    bn = {(w, d): s.mean for (w, d, t), s in mlp.items() if t == "bn"}
    if not bn:
        return _claim(4, "No finished BN-only MLP runs.", NOT_MEASURED)
    widths = sorted({w for w, _ in bn})
    depths_of = {w: sorted(d for ww, d in bn if ww == w) for w in widths}
    parts, results = [], []
    # width vs depth effect
    narrow, wide = widths[0], widths[-1]
    common = [d for d in depths_of[wide] if (narrow, d) in bn] if len(widths) >= 2 else []
    multi = [w for w in widths if len(depths_of[w]) >= 2]
    if common and multi:
        w_eff = sum(bn[(wide, d)] - bn[(narrow, d)] for d in common) / len(common)
        d_eff = sum(bn[(w, depths_of[w][-1])] - bn[(w, depths_of[w][0])] for w in multi) / len(multi)
        results.append(w_eff > d_eff)
        parts.append(f"width effect (w{narrow}→w{wide}) {100 * w_eff:+.1f} vs depth effect "
                     f"{100 * d_eff:+.1f} points")
    else:
        parts.append("width vs depth not measured (needs ≥ 2 widths sharing a depth and a width with ≥ 2 depths)")
    # levelling off after ~4 hidden layers, at the widest width
    deeper = [d for d in depths_of[wide] if d > 4]
    if 4 in depths_of[wide] and deeper:
        change = bn[(wide, deeper[-1])] - bn[(wide, 4)]
        results.append(abs(change) < 0.02)
        parts.append(f"at w{wide}, depth 4 → {deeper[-1]}: {100 * change:+.1f} points")
    else:
        parts.append(f"levelling not measured (width {wide} lacks depth 4 or a deeper one)")
    if results and not all(results):
        verdict = NOT_HELD
    elif len(results) == 2:
        verdict = HELD
    else:
        verdict = NOT_MEASURED
    partial = " (partially measured)" if len(results) == 1 else ""
    return _claim(4, "; ".join(parts) + "." + partial, verdict)


def claim6(lenet) -> dict:
    if "bn" not in lenet or "random" not in lenet:
        return _claim(5, "Needs finished LeNet-5 runs with both bn and random.", NOT_MEASURED)
    bn, rnd = lenet["bn"].mean, lenet["random"].mean
    gap = bn - rnd
    ok = 0.2 <= bn <= 0.4 and 0 < gap <= 0.05
    return _claim(5, f"LeNet-5 BN-only {pct(bn)}, random {pct(rnd)}, gap {100 * gap:+.1f} points.",
                  HELD if ok else NOT_HELD)


def claims(runs) -> list[dict]:
    """The six claims: dicts with id, claim, rule, measured, verdict ('held'|'did not hold'|'not measured')."""
    mlp, lenet = mlp_stats(runs), lenet_stats(runs)
    return [claim1(mlp), claim2(mlp), claim3(mlp), claim4(mlp), claim5(mlp), claim6(lenet)]

"""The report's six claims, each with the rule that decides it and what was measured.

`claims(runs, dataset)` returns dicts {id, claim, rule, measured, verdict}; the rule is printed next
to the verdict in the report. `runs` must be one study (stats.studies) in the report's setting
(BatchNorm, random weights spread evenly) on one data set.

How the rules use statistics:
- Every comparison between sets is paired: per seed, the difference of the two runs that share the
  seed's weights and data order, with a 95% Student-t interval over seeds (stats.paired).
- A rule about many cells (architectures) asks each cell's interval separately and counts the cells;
  it never treats the spread between architectures as seed noise.
- An interval needs at least 2 seeds: with fewer, a claim is "not measured" (unless a measured
  cell already refutes it).
- A cell holds when its interval lies wholly on the claim's side of the boundary, is refuted when it
  lies wholly on the other side, and is undecided when it straddles it: the claim is then
  "inconclusive" (more seeds would decide), never "did not hold".
- Budget: a verdict rests on accuracies, so it stands only for runs that followed the report's
  protocol (stats.PROTOCOL). Otherwise the verdict is "not testable at this budget", with the reason
  and what the rule gave at this budget.
- The thresholds of claims 2, 3 and 6 are the report's MNIST numbers: on other data sets those
  claims are "not applicable".
"""
from __future__ import annotations

import math

from .models import MODELS
from .stats import CHANCE, Stat, accuracies, budget_gaps, cells, differences, mean_ci, paired

HELD, NOT_HELD, NOT_MEASURED = "held", "did not hold", "not measured"
NOT_TESTABLE, NOT_APPLICABLE = "not testable at this budget", "not applicable"
INCONCLUSIVE = "inconclusive"  # an interval straddles the rule's boundary: more seeds would decide
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE, NOT_TESTABLE, NOT_MEASURED, NOT_APPLICABLE)

BAND2 = (0.925, 0.975)   # "about 95%"
GAP3 = 0.10              # "more than 10 points worse"
BAND6 = (0.25, 0.35)     # "about 30%"
GAP6 = (0.0, 0.05)       # "2-3 points lower": above 0, at most 5 points
LEVEL5 = 0.02            # "levels off": a change within 2 points
MNIST_ONLY = (2, 3, 6)   # claims whose thresholds are MNIST numbers

DECIDE = (" It did not hold where an interval lies wholly on the wrong side of the rule's boundary, and is "
          "inconclusive where one straddles it (more seeds would decide).")

CLAIMS = (
    "BN-only is consistently above chance at every width and depth.",
    "BN-only on 784-wide MLPs with 4–14 hidden layers reaches about 95% test accuracy.",
    "An equal number of random weights is more than 10 points worse there.",
    "With all parameters training, BatchNorm helps, more so at depth.",
    "BN-only accuracy grows with width more than with depth and levels off after about 4 hidden layers.",
    "LeNet-5 BN-only reaches about 30%, random weights 2–3 points lower.",
)
RULES = (
    "For every MLP (width, depth) with bn runs: the 95% interval of bn's test accuracy over seeds lies above "
    "chance (10%). Held if it does in every cell.",
    f"For bn at width 784 and each depth 4–14 that was run: the 95% interval over seeds lies inside "
    f"[{100 * BAND2[0]:.1f}%, {100 * BAND2[1]:.1f}%] ('about 95%'). Held if it does at every such depth.",
    "For each depth 4–14 at width 784 with bn and random runs: the paired per-seed difference bn − random, "
    "95% interval over seeds. Held if its lower end exceeds 10 points at every such depth.",
    "Per (width, depth): the paired per-seed difference all − all-nobn ('gap'). Per width with ≥ 2 depths: the "
    "paired per-seed growth of the gap from the shallowest to the deepest depth. Held if the gap's interval is "
    "above 0 in more than half of the cells and below 0 in none, and the growth's interval is above 0 at more "
    "than half of the widths and below 0 at none.",
    "For bn, per seed: growth along width = the accuracy change from the narrowest to the widest width per "
    "doubling of trainable parameters, averaged over the depths both widths have; growth along depth = the "
    "change from the shallowest to the deepest depth per doubling, averaged over widths. Part 1 holds if the "
    "interval over seeds of (width growth − depth growth) is above 0. Part 2, at the widest width: the paired "
    "rise from the shallowest depth below 4 to depth 4 has its interval above 0, and the paired change from "
    f"depth 4 to the deepest depth has its interval inside ±{100 * LEVEL5:.0f} points. Held if both parts hold; "
    "a part that cannot be measured makes it 'not measured' unless the other was refuted.",
    f"LeNet-5: the 95% interval of bn lies inside [{100 * BAND6[0]:.0f}%, {100 * BAND6[1]:.0f}%] ('about 30%') "
    f"and the paired bn − random interval lies inside ({100 * GAP6[0]:.0f}, {100 * GAP6[1]:.0f}] points. Held if both.",
)


def fmt(s: Stat, points: bool = False) -> str:
    """'95.1 ± 0.4%' (or 'points' for differences), n shown."""
    unit = " points" if points else "%"
    sign = "+" if points else ""
    return f"{100 * s.mean:{sign}.1f} ± {100 * s.half:.1f}{unit} (n={s.n})"


def _mlp(c, t) -> dict[tuple[int, int], dict]:
    return {(w, d): cell for (m, w, d, tt), cell in c.items() if m == "mlp" and tt == t}


def _used(*cell_dicts) -> list[dict]:
    return [r for cd in cell_dicts for cell in cd.values() for r in cell.values()]


def _few(stats) -> bool:
    return any(s.n < 2 for s in stats)


FEW = "needs ≥ 2 seeds per cell for an interval"


# Each cell's interval gives +1 (the claim holds there), -1 (it is refuted there: the interval lies
# wholly on the wrong side) or 0 (the interval straddles the boundary: more seeds would decide).
def _above(s: Stat, t: float) -> int:
    return 1 if s.lo > t else (-1 if s.hi <= t else 0)


def _band(s: Stat, lo: float, hi: float) -> int:
    return 1 if lo <= s.lo and s.hi <= hi else (-1 if s.hi < lo or s.lo > hi else 0)


def _every(outcomes: list[int], stats) -> str:
    """Held if every measured cell holds; did not hold if one is refuted; otherwise not measured
    (a cell has < 2 seeds) or inconclusive."""
    measured = [o for o, s in zip(outcomes, stats) if s.n >= 2]
    if -1 in measured:
        return NOT_HELD
    if len(measured) < len(outcomes):
        return NOT_MEASURED
    return HELD if all(o == 1 for o in measured) else INCONCLUSIVE


def _most(outcomes: list[int]) -> str:
    """Held if more than half hold and none is refuted; did not hold if one is refuted or a
    majority is out of reach; else inconclusive."""
    up, down = outcomes.count(1), outcomes.count(-1)
    if down or (len(outcomes) - down) <= len(outcomes) / 2:
        return NOT_HELD
    return HELD if up > len(outcomes) / 2 else INCONCLUSIVE


def _both(*verdicts: str) -> str:
    for v in (NOT_HELD, NOT_MEASURED, INCONCLUSIVE):
        if v in verdicts:
            return v
    return HELD


def claim1(c):
    bn = _mlp(c, "bn")
    if not bn:
        return "No finished BN-only MLP runs.", NOT_MEASURED, []
    st = {k: mean_ci(accuracies(v).values()) for k, v in bn.items()}
    outcomes = [_above(s, CHANCE) for s in st.values()]
    (w, d), worst = min(st.items(), key=lambda kv: kv[1].lo)
    text = (f"{outcomes.count(1)} of {len(st)} cells have their interval above 10%, {outcomes.count(-1)} at or below "
            f"it; lowest: {fmt(worst)} at width {w}, depth {d}.")
    if _few(st.values()):
        text += f" {sum(s.n < 2 for s in st.values())} cells have one seed ({FEW})."
    return text, _every(outcomes, list(st.values())), _used(bn)


def claim2(c):
    bn = {d: v for (w, d), v in _mlp(c, "bn").items() if w == 784 and 4 <= d <= 14}
    if not bn:
        return "No BN-only runs at width 784 with depth 4–14.", NOT_MEASURED, []
    st = {d: mean_ci(accuracies(v).values()) for d, v in sorted(bn.items())}
    outcomes = [_band(s, *BAND2) for s in st.values()]
    text = "; ".join(f"depth {d}: {fmt(s)}" for d, s in st.items()) + \
        f" ({outcomes.count(1)} of {len(st)} inside the band, {outcomes.count(-1)} outside it)."
    return text, _every(outcomes, list(st.values())), _used(bn)


def claim3(c):
    bn, rnd = _mlp(c, "bn"), _mlp(c, "random")
    depths = sorted(d for (w, d) in bn if w == 784 and 4 <= d <= 14 and (w, d) in rnd)
    if not depths:
        return "No width-784 depth 4–14 with both BN-only and random runs.", NOT_MEASURED, []
    gaps = {d: paired(accuracies(bn[(784, d)]), accuracies(rnd[(784, d)])) for d in depths}
    outcomes = [_above(g, GAP3) for g in gaps.values()]
    used = _used({d: bn[(784, d)] for d in depths}, {d: rnd[(784, d)] for d in depths})
    text = "bn − random: " + "; ".join(f"depth {d}: {fmt(g, True)}" for d, g in gaps.items())
    text += f" ({outcomes.count(1)} of {len(gaps)} above 10 points, {outcomes.count(-1)} at or below)."
    return text, _every(outcomes, list(gaps.values())), used


def claim4(c):
    a, b = _mlp(c, "all"), _mlp(c, "all-nobn")
    both = sorted(k for k in a if k in b)
    if not both:
        return "No (width, depth) with both all and all-nobn runs.", NOT_MEASURED, []
    gap_seeds = {k: differences(accuracies(a[k]), accuracies(b[k])) for k in both}
    gaps = {k: mean_ci(v.values()) for k, v in gap_seeds.items()}
    used = _used({k: a[k] for k in both}, {k: b[k] for k in both})
    if _few(gaps.values()):
        return FEW + " (paired by seed).", NOT_MEASURED, used
    helps = [_above(g, 0.0) for g in gaps.values()]
    text = (f"all − all-nobn: interval above 0 in {helps.count(1)} of {len(gaps)} cells, at or below 0 in "
            f"{helps.count(-1)}")
    by_width: dict[int, list[int]] = {}
    for w, d in both:
        by_width.setdefault(w, []).append(d)
    growth = {w: paired(gap_seeds[(w, max(ds))], gap_seeds[(w, min(ds))]) for w, ds in sorted(by_width.items())
              if len(ds) >= 2}
    growth = {w: g for w, g in growth.items() if g.n >= 2}
    if not growth:
        v = _most(helps)
        return (text + "; 'more so at depth' not measured (needs a width with ≥ 2 depths and ≥ 2 seeds).",
                NOT_HELD if v == NOT_HELD else NOT_MEASURED, used)
    grows = [_above(g, 0.0) for g in growth.values()]
    text += "; growth of the gap from the shallowest to the deepest depth: " + ", ".join(
        f"w{w}: {fmt(g, True)}" for w, g in growth.items()) + f" (above 0 at {grows.count(1)} of {len(growth)} widths)."
    return text, _both(_most(helps), _most(grows)), used


def _params(cell: dict) -> float | None:
    ps = [r.get("trainable_params") for r in cell.values() if r.get("trainable_params")]
    return float(ps[0]) if ps else None


def claim5(c):
    bn = _mlp(c, "bn")
    if not bn:
        return "No finished BN-only MLP runs.", NOT_MEASURED, []
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
            results.append(_above(st, 0.0))
            parts.append(f"width growth − depth growth per doubling of parameters {fmt(st, True)}")
    if len(results) == 0:
        parts.append("width vs depth not measured (needs ≥ 2 widths sharing a depth, a width with ≥ 2 depths, "
                     "trainable-parameter counts and ≥ 2 seeds)")
    below = [d for d in depths_of[wide] if d < 4]
    deeper = [d for d in depths_of[wide] if d > 4]
    rise = change = None
    if 4 in depths_of[wide] and below and deeper:
        rise = paired(acc[(wide, 4)], acc[(wide, below[0])])
        change = paired(acc[(wide, deeper[-1])], acc[(wide, 4)])
    if rise is not None and rise.n >= 2 and change.n >= 2:
        results.append(min(_above(rise, 0.0), _band(change, -LEVEL5, LEVEL5)))
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
    return "; ".join(parts) + "." + partial, verdict, _used(bn) if results else []


def claim6(c):
    lenet = {t: cell for (m, _, _, t), cell in c.items() if m == "lenet5"}
    if "bn" not in lenet or "random" not in lenet:
        return "Needs finished LeNet-5 runs with both bn and random.", NOT_MEASURED, []
    bn = mean_ci(accuracies(lenet["bn"]).values())
    gap = paired(accuracies(lenet["bn"]), accuracies(lenet["random"]))
    if bn.n < 2 or gap.n < 2:
        return FEW + ".", NOT_MEASURED, []
    in_gap = 1 if GAP6[0] < gap.lo and gap.hi <= GAP6[1] else (-1 if gap.hi <= GAP6[0] or gap.lo > GAP6[1] else 0)
    outcome = min(_band(bn, *BAND6), in_gap)
    verdict = {1: HELD, -1: NOT_HELD, 0: INCONCLUSIVE}[outcome]
    return (f"LeNet-5 BN-only {fmt(bn)}; bn − random {fmt(gap, True)}.", verdict,
            _used({"bn": lenet["bn"], "random": lenet["random"]}))


RULES = tuple(r + DECIDE for r in RULES)
CLAIM_RULES = (claim1, claim2, claim3, claim4, claim5, claim6)


def claims(runs, dataset: str = "mnist") -> list[dict]:
    """The six claims on one study's runs of one data set: dicts with id, claim, rule, measured, verdict."""
    c = cells(runs)
    out = []
    for i, rule in enumerate(CLAIM_RULES):
        cid = i + 1
        if cid in MNIST_ONLY and dataset not in ("mnist", None):
            measured, verdict = f"Its thresholds are the report's MNIST numbers; not applied to {dataset}.", NOT_APPLICABLE
        else:
            measured, verdict, used = rule(c)
            if verdict in (HELD, NOT_HELD, INCONCLUSIVE) and not used:
                raise AssertionError(f"claim {cid}: a verdict must name the runs it rests on")
            gaps = budget_gaps(used) if verdict in (HELD, NOT_HELD, INCONCLUSIVE) else None
            if gaps:
                measured += f" At this budget the rule gives '{verdict}', but {gaps}."
                verdict = NOT_TESTABLE
        out.append({"id": cid, "claim": CLAIMS[i], "rule": RULES[i], "measured": measured, "verdict": verdict})
    return out


# ----------------------------------------------------------------------------- Frankle et al.'s CIFAR-10 claims
# Their protocol (OpenLTH's cifar_resnet defaults, config.FAMILY_PRESETS): verdicts rest only on runs
# that followed it; on another data set or budget the claims are "not testable at this budget".
FRANKLE_PROTOCOL = {"dataset": "cifar10", "subset": 0, "val_fraction": 0.1, "max_epochs": 160, "patience": 0,
                    "lr": 0.1, "momentum": 0.9, "batch_size": 128, "weight_decay": 1e-4, "lr_drop_epoch": 0,
                    "lr_drop_epochs": "81,121", "lr_drop_factor": 0.1, "augment": True, "normalize": True,
                    "gamma_init": "uniform(0,1)", "hidden_beta": True, "random_placement": "per-unit"}
FRANKLE_PROTOCOL_TEXT = ("Frankle et al.'s protocol is CIFAR-10 (45,000 training images here), 160 epochs without "
                         "early stopping, SGD lr 0.1 (x0.1 after epochs 80 and 120), momentum 0.9, weight decay "
                         "1e-4, batch 128, augmentation, normalised inputs, gamma ~ U[0, 1), beta, two random weights per "
                         "channel")
FAR = 0.10  # "far higher": more than 10 points, the threshold of the report's claim 3

# BN-only test accuracies published for these models, with their source. The paper's per-depth table
# was not in the text available to us (the search tool holds its abstract and introduction); its
# abstract gives 82% for "sufficiently deep ResNets" (ResNet-866 is the deepest it trains). The
# unofficial TensorFlow reproduction (tensorflow/models pull request 9174, README) trains another
# layout (gamma ~ N(0, 1), no stem BatchNorm, no mean/std normalisation).
PUBLISHED = {
    "paper": ("Frankle et al., abstract", {"resnet866": 0.82}),
    "reproduction": ("TF reproduction (tensorflow/models#9174)",
                     {"resnet14": 0.4667, "resnet32": 0.5129, "resnet56": 0.5521, "resnet110": 0.6519,
                      "resnet218": 0.7009, "resnet434": 0.7367, "resnet866": 0.7783}),
}

FRANKLE_CLAIMS = (
    "In CIFAR-10 ResNets, BN-only is far above an equal number of random weights (two per output channel).",
    "The gap between BN-only and random weights grows with depth.",
)
FRANKLE_RULES = tuple(r + DECIDE for r in (
    f"For every standard-width ResNet (16/32/64 channels) with bn and random runs: the paired per-seed difference bn − random, 95% "
    f"interval over seeds. Held if its lower end exceeds {100 * FAR:.0f} points at every depth.",
    "Per seed, the difference bn − random at the deepest standard-width ResNet minus that at the shallowest: the "
    "paired growth of the gap, 95% interval over seeds. Held if the interval lies above 0.",
))


def resnets(c) -> dict[str, dict[str, dict]]:
    """{trainable: {model: cell}} of the study's standard-width CIFAR ResNets, shallowest first."""
    models = sorted({m for (m, _, _, _) in c if m in MODELS and MODELS[m].layers and MODELS[m].widen == 1
                     and m.startswith("resnet")}, key=lambda m: MODELS[m].layers)
    return {t: {m: c[(m, None, None, t)] for m in models if (m, None, None, t) in c} for t in ("all", "bn", "random")}


def frankle1(c):
    r = resnets(c)
    depths = [m for m in r["bn"] if m in r["random"]]
    if not depths:
        return "No standard-width ResNet with both bn and random runs.", NOT_MEASURED, []
    gaps = {m: paired(accuracies(r["bn"][m]), accuracies(r["random"][m])) for m in depths}
    outcomes = [_above(g, FAR) for g in gaps.values()]
    text = "bn − random: " + "; ".join(f"{m}: {fmt(g, True)}" for m, g in gaps.items())
    text += f" ({outcomes.count(1)} of {len(gaps)} above {100 * FAR:.0f} points, {outcomes.count(-1)} at or below)."
    return text, _every(outcomes, list(gaps.values())), _used({m: r["bn"][m] for m in depths},
                                                              {m: r["random"][m] for m in depths})


def frankle2(c):
    r = resnets(c)
    depths = [m for m in r["bn"] if m in r["random"]]
    if len(depths) < 2:
        return "Needs bn and random runs at two or more standard-width ResNet depths.", NOT_MEASURED, []
    lo, hi = depths[0], depths[-1]
    growth = paired(differences(accuracies(r["bn"][hi]), accuracies(r["random"][hi])),
                    differences(accuracies(r["bn"][lo]), accuracies(r["random"][lo])))
    used = _used({m: r["bn"][m] for m in (lo, hi)}, {m: r["random"][m] for m in (lo, hi)})
    if growth.n < 2:
        return FEW + " (paired by seed).", NOT_MEASURED, used
    verdict = {1: HELD, -1: NOT_HELD, 0: INCONCLUSIVE}[_above(growth, 0.0)]
    return f"growth of bn − random from {lo} to {hi}: {fmt(growth, True)}.", verdict, used


def frankle_claims(runs) -> list[dict]:
    """Frankle et al.'s two CIFAR-10 claims on one study's runs, judged as `claims` judges the report's."""
    c = cells(runs)
    out = []
    for i, rule in enumerate((frankle1, frankle2)):
        measured, verdict, used = rule(c)
        gaps = budget_gaps(used, FRANKLE_PROTOCOL, FRANKLE_PROTOCOL_TEXT) if verdict in (HELD, NOT_HELD, INCONCLUSIVE) else None
        if gaps:
            measured += f" At this budget the rule gives '{verdict}', but {gaps}."
            verdict = NOT_TESTABLE
        out.append({"id": f"F{i + 1}", "claim": FRANKLE_CLAIMS[i], "rule": FRANKLE_RULES[i], "measured": measured,
                    "verdict": verdict})
    return out

"""How a rule decides a claim, with both error rates controlled: a cell's one-sided t tests over
seeds, partial-conjunction tests for a part (how many of its cells are shown on each side of the
boundary, cells far on the claim's side set aside for a refutation), Holm's procedure across a
claim's parts, the power of an undecided verdict, and the budget, setting and scope every verdict
names.
claims.py (the report's claims) and frankle.py (Frankle et al.'s) decide with these; docs/study.md
states the rules and their sources; benchmarks/error_rates.py checks both error rates by simulation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .protocol import Protocol, budget_sentence, off_protocol, published, setting_text
from .stats import Stat, t_cdf, t_quantile

HELD, NOT_HELD, NOT_MEASURED = "held", "did not hold", "not measured"
NOT_TESTABLE, NOT_APPLICABLE = "not testable at this budget", "not applicable"
NOT_TESTABLE_DEPTH = "not testable at this depth"  # every run is shallower than the claim speaks of
INCONCLUSIVE = "inconclusive"  # neither side shown: more seeds would decide (the verdict says how many)
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE, NOT_TESTABLE, NOT_TESTABLE_DEPTH, NOT_MEASURED, NOT_APPLICABLE)
ALPHA = 0.025            # each error rate of a claim: false "did not hold" and false "held"
POWER = 0.8              # the power an inconclusive verdict's detectable effect and seeds are given at
CONDITION = 0.5          # refutation p-values above it are set aside (Zhao, Small & Su 2019)
MOST_SEEDS = 1000        # "seeds needed" beyond this: a mean on its boundary, no number decides it
FEW = "needs ≥ 2 seeds per cell for an interval"

# How every claim is decided, printed above the rules in the report and in docs/study.md word for
# word (a test checks it); decide() and judged() apply it.
DECIDING = (
    "Each cell is tested against the rule's boundary with a t test over its seeds, one-sided each way: a p-value "
    "that it lies on the claim's side and one that it lies off it (off a band on either side: the smaller, "
    "doubled). A part that needs every cell holds when every cell's 95% interval lies on the claim's side; a part that "
    "needs most cells holds when a Simes partial-conjunction test (Benjamini & Heller 2008) shows more than half "
    "of them on the claim's side. A part did not hold when the partial-conjunction test of the refutation p-values "
    "shows enough cells off the claim's side that it cannot hold (one for every cell, half or more for most), after "
    "setting aside, in a part of two or more cells, those whose refutation p-value exceeds 0.5 and doubling the "
    "rest (the conditional test of Zhao, Small & Su 2019, so that cells far on the claim's side do not dilute a clear failure); the parts' "
    "refutations are one family under Holm's procedure. So a true claim is refuted, and a false claim held, each at "
    "most 2.5% of the time however many cells and parts it has (checked by simulation). A claim did not hold when "
    "one of its parts did not, even where another cannot be measured; otherwise it is not measured while a part "
    "lacks its cells or seeds, inconclusive while a part is, and held when every part holds; a cell with one seed "
    "has no test. An inconclusive verdict names the smallest effect its seeds could tell from the boundary at the "
    "measured spread (80% power) and how many seeds would decide it at the observed means. A claim about a range "
    "of cells names those it was judged on. A verdict stands only for runs at the protocol (otherwise: not "
    "testable at this budget, with what the rule gave there); every verdict names its budget (data, epochs, how "
    "many runs ended at the epoch cap and how many diverged) and its setting, and is marked where that setting is "
    "outside the published ones.")


def runs_of(*cell_dicts) -> list[dict]:
    return [r for cd in cell_dicts for cell in cd.values() for r in cell.values()]


class Test:
    """One cell against a rule's boundary: the claim is `above` it, or inside `band` (lo, hi), lo
    excluded where `open_low`. `p_hold`: the p-value of 'not on the claim's side'; `p_refute`: of 'on
    the claim's side'; `outcome`: 1 where its own 95% interval lies on the claim's side, 0 otherwise,
    None with fewer than 2 seeds (no test: both p-values None)."""

    def __init__(self, s: Stat, above: float | None = None, band: tuple | None = None, open_low: bool = False):
        self.stat, self.above, self.band, self.open_low = s, above, band, open_low
        self.p_hold = self.p_refute = self.outcome = None
        if not self.measured:
            return
        m, se, df = s.mean, s.se, s.dof
        if band is None:
            if se == 0:  # every seed alike: the mean itself decides; exactly at the boundary, nothing does
                self.p_hold, self.p_refute = float(m <= above), float(m >= above)
            else:
                t = (m - above) / se
                self.p_hold, self.p_refute = t_cdf(-t, df), t_cdf(t, df)
        else:
            lo, hi = band
            if se == 0:
                inside = (lo < m if open_low else lo <= m) and m <= hi
                self.p_hold, self.p_refute = float(not inside), float(lo <= m <= hi)
            else:  # two one-sided tests to hold; off the band on either side to refute (the smaller, doubled)
                t_lo, t_hi = (m - lo) / se, (m - hi) / se
                self.p_hold = max(t_cdf(-t_lo, df), t_cdf(t_hi, df))
                self.p_refute = min(1.0, 2 * min(t_cdf(t_lo, df), t_cdf(-t_hi, df)))
        self.outcome = int(self.p_hold <= ALPHA)

    @property
    def measured(self) -> bool:
        return self.stat.n >= 2 and math.isfinite(self.stat.se) and math.isfinite(self.stat.mean)

    def distance(self) -> float:
        """How far the mean is from the nearer boundary: > 0 on the claim's side, < 0 off it."""
        m = self.stat.mean
        if self.band is None:
            return m - self.above
        lo, hi = self.band
        return min(m - lo, hi - m)

    def seeds_needed(self) -> int:
        """The seeds that would decide this cell at its measured spread if its mean stayed where it is:
        the fewest n with (t_{1-ALPHA} + t_{POWER}) sd / sqrt(n) <= |distance|, n - 1 degrees of
        freedom (MOST_SEEDS + 1 where none up to MOST_SEEDS do)."""
        sd, dist = self.stat.se * math.sqrt(self.stat.n), abs(self.distance())
        if dist == 0 or sd == 0:
            return MOST_SEEDS + 1 if dist == 0 else 2
        for n in range(2, MOST_SEEDS + 1):
            if (t_quantile(1 - ALPHA, n - 1) + t_quantile(POWER, n - 1)) * sd / math.sqrt(n) <= dist:
                return n
        return MOST_SEEDS + 1

    def detectable(self) -> float:
        """The smallest distance from the boundary its seeds tell at the measured spread (power POWER)."""
        df = self.stat.dof
        return (t_quantile(1 - ALPHA, df) + t_quantile(POWER, df)) * self.stat.se


def partial_conjunction(ps: list[float], u: int) -> float:
    """The p-value of 'fewer than u of these hypotheses are false', Simes' combination of the n - u + 1
    largest p-values (Benjamini & Heller 2008): min over i >= u of (n - u + 1) / (i - u + 1) p_(i)."""
    n = len(ps)
    if u <= 0:
        return 0.0
    if u > n:
        return 1.0
    p = sorted(ps)
    return min(1.0, min((n - u + 1) / (i - u + 1) * p[i - 1] for i in range(u, n + 1)))


def conditional_pc(ps: list[float], u: int, tau: float) -> float:
    """partial_conjunction after setting aside p-values above tau and dividing the rest by tau: a
    p-value of a one-sided test whose parameter lies inside its null is uniformly conservative, so
    given that it is below tau, p / tau is still at least uniform (Zhao, Small & Su 2019)."""
    kept = [p / tau for p in ps if p <= tau]
    return partial_conjunction(kept, u) if len(kept) >= u else 1.0


def most_shown(pc, ps: list[float], level: float) -> int:
    """The largest u with pc(ps, u) <= level (0 where none): partial conjunctions grow with u, so this is
    a lower confidence bound on how many of the hypotheses are false."""
    u = 0
    while u < len(ps) and pc(ps, u + 1) <= level:
        u += 1
    return u


@dataclass
class Part:
    """One part of a claim: its tests, and whether it needs `every` test on the claim's side or `most`
    of them (more than half). `unit` names what a test is about in the counts ('cells', 'widths')."""
    tests: list[Test]
    rule: str = "every"
    unit: str = "cells"
    where: str = "in"
    # filled in by decide():
    verdict: str = NOT_MEASURED
    held: int = 0       # tests whose own 95% interval lies on the claim's side
    shown: int = 0      # at least this many shown on the claim's side (partial conjunction, ALPHA)
    refuted: int = 0    # at least this many shown off it (conditional partial conjunction, Holm's level)
    p_held: float = 1.0
    p_refuted: float = 1.0
    level: float | None = None  # the level Holm's procedure refuted it at; None: not refuted

    @property
    def missing(self) -> int:
        return sum(not t.measured for t in self.tests)

    @property
    def needed(self) -> int:
        """How many tests must lie on the claim's side for the part to hold."""
        return len(self.tests) if self.rule == "every" else len(self.tests) // 2 + 1

    @property
    def tau(self) -> float:
        return CONDITION if len(self.tests) > 1 else 1.0

    def holds(self) -> list[float]:
        return [t.p_hold if t.measured else 1.0 for t in self.tests]

    def refutes(self) -> list[float]:
        return [t.p_refute if t.measured else 1.0 for t in self.tests]

    def counts(self) -> str:
        n = len(self.tests)
        unit = self.unit if n != 1 else self.unit.rstrip("s")
        if self.rule == "most":
            return (f"{self.shown} of {n} {unit} shown above 0 and {self.refuted} at or below it (partial conjunctions; "
                    f"{self.held} with their own interval above 0)")
        text = f"{self.held} of {n} {unit} hold{'s' if n == 1 else ''}, {self.refuted or 'none'} shown off the claim's side"
        return text + (f", {self.missing} with fewer than 2 seeds" if self.missing else "")

    def power(self) -> str:
        """For an undecided part: the smallest effect its seeds tell from the boundary, and the seeds
        that would decide it at the observed means."""
        live = [t for t in self.tests if t.measured]
        undecided = [t for t in live if not t.outcome]
        if not undecided:
            return ""
        needs = {id(t): t.seeds_needed() for t in undecided}
        seeds = sorted(needs.get(id(t), t.stat.n) for t in live)  # a decided test needs the seeds it has
        need = max(needs.values()) if self.rule == "every" else seeds[min(self.needed, len(seeds)) - 1]
        n = sorted({t.stat.n for t in undecided})
        worst = max(undecided, key=Test.detectable)
        sd = worst.stat.se * math.sqrt(worst.stat.n)
        unit = self.unit.rstrip("s")
        decide = (f"about {need} seeds per {unit} would decide it at the observed means" if need <= MOST_SEEDS else
                  "no number of seeds would decide it at the observed means (a mean on its boundary)")
        return (f"at the measured spread (sd up to {100 * sd:.1f} points per seed), {'/'.join(map(str, n))} seeds "
                f"tell a {unit} {100 * worst.detectable():.1f} points from the boundary ({100 * POWER:.0f}% power, "
                f"one-sided {100 * ALPHA:.1f}% per {unit}); {decide}")


def decide(*parts: Part) -> str:
    """A claim's verdict from its parts. A part is shown to hold when the partial conjunction of the
    hold p-values at `needed` is at most ALPHA (every: each test's interval on the claim's side, an
    intersection-union test); it is refuted
    when the conditional partial conjunction of the refutation p-values at len - needed + 1 is
    rejected by Holm's procedure across the claim's parts. So both a false 'did not hold' and a
    false 'held' stay within ALPHA. A part:
    - did not hold when refuted (and not also shown to hold: then inconclusive);
    - held when shown to hold;
    - not measured when neither and a test has one seed; else inconclusive.
    The claim: did not hold when a part did not; not measured when a part is; inconclusive when a
    part is; held when every part holds. A part without tests is not measured."""
    for p in parts:
        p.p_held = partial_conjunction(p.holds(), p.needed) if p.tests else 1.0
        p.p_refuted = conditional_pc(p.refutes(), len(p.tests) - p.needed + 1, p.tau) if p.tests else 1.0
        p.level = None
    order = sorted(range(len(parts)), key=lambda i: parts[i].p_refuted)
    for k, i in enumerate(order):  # Holm across the parts
        level = ALPHA / (len(parts) - k)
        if parts[i].p_refuted > level:
            break
        parts[i].level = level
    for p in parts:
        p.held = sum(t.outcome == 1 for t in p.tests)
        p.shown = most_shown(partial_conjunction, p.holds(), ALPHA)
        p.refuted = 0 if p.level is None else most_shown(lambda ps, u: conditional_pc(ps, u, p.tau), p.refutes(),
                                                         p.level)
        held, refuted = p.p_held <= ALPHA, p.level is not None
        p.verdict = (NOT_MEASURED if not p.tests else INCONCLUSIVE if held and refuted else NOT_HELD if refuted else
                     HELD if held else NOT_MEASURED if p.missing else INCONCLUSIVE)
    return combine(*(p.verdict for p in parts))


def combine(*verdicts: str) -> str:
    for v in (NOT_HELD, NOT_MEASURED, INCONCLUSIVE):
        if v in verdicts:
            return v
    return HELD


@dataclass
class Finding:
    """What a rule found: the measured text, its verdict at face value, the runs it rests on, and,
    for a claim about a range of cells, which of them it was judged on ('depths 4, 8 of 4–14')."""
    measured: str
    verdict: str
    used: list = field(default_factory=list)
    scope: str = ""
    parts: list = field(default_factory=list)  # the Parts it was decided on (an undecided one says its power)


def judged(f: Finding, protocol: Protocol) -> dict:
    """A finding as the report shows it: {measured, verdict, scope, setting}. A verdict names the
    budget and setting it rests on, an inconclusive one its power; it is "not testable at this budget"
    where its runs are off the protocol (what the rule gave at this budget said); `setting` is the published setting its runs
    are in (one of protocol.presets), "none" outside them, None without a verdict."""
    out = {"measured": f.measured, "verdict": f.verdict, "scope": f.scope, "setting": None}
    if f.verdict == NOT_TESTABLE_DEPTH and f.used:
        out["measured"] += " " + budget_sentence(f.used, protocol)
    if f.verdict not in (HELD, NOT_HELD, INCONCLUSIVE):
        return out
    if not f.used:
        raise AssertionError("a verdict must name the runs it rests on")
    if f.verdict == INCONCLUSIVE:
        said = [s for s in (p.power() for p in f.parts if p.verdict == INCONCLUSIVE) if s]
        out["measured"] += f" Power: {'; '.join(said)}." if said else ""
    out["measured"] += " " + budget_sentence(f.used, protocol) + " " + setting_text(f.used, protocol)
    out["setting"] = published(f.used, protocol)[0] or "none"
    off = off_protocol(f.used, protocol)
    if off:
        out["measured"] += f" At this budget the rule gives '{f.verdict}', but {off}."
        out["verdict"] = NOT_TESTABLE
    return out


def verdict_label(c: dict) -> str:
    """A claim's verdict as the report shows it: with its scope where a universal claim was judged on
    part of its cells ('held at depths 4, 8 of 4–14'), and marked where its runs are in neither
    published setting."""
    v = c["verdict"]
    if c.get("scope") and v in (HELD, NOT_HELD, INCONCLUSIVE, NOT_TESTABLE):
        v += f" at {c['scope']}"
    if c.get("setting") == "none":
        v += ", outside the published settings"
    return v

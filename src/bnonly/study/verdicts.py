"""How a rule decides a claim: a cell's one-sided test, Holm's procedure across every test of a
claim (its cells and its parts, one family), and the budget, setting and scope every verdict names.
claims.py (the report's claims) and frankle.py (Frankle et al.'s) decide with these; docs/study.md
states the rules.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .protocol import Protocol, budget_sentence, off_protocol, published, setting_text
from .stats import Stat, t_cdf

HELD, NOT_HELD, NOT_MEASURED = "held", "did not hold", "not measured"
NOT_TESTABLE, NOT_APPLICABLE = "not testable at this budget", "not applicable"
NOT_TESTABLE_DEPTH = "not testable at this depth"  # every run is shallower than the claim speaks of
INCONCLUSIVE = "inconclusive"  # an interval straddles the rule's boundary: more seeds would decide
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE, NOT_TESTABLE, NOT_TESTABLE_DEPTH, NOT_MEASURED, NOT_APPLICABLE)
ALPHA = 0.025            # one-sided: the tail of a 95% two-sided interval
FEW = "needs ≥ 2 seeds per cell for an interval"

# How every claim is decided, printed above the rules in the report and in docs/study.md word for
# word (a test checks it); decide() and judged() apply it.
DECIDING = (
    "A cell holds when its 95% interval over seeds lies wholly on the claim's side of the rule's boundary, and is "
    "refuted when a one-sided t test at 2.5% puts it on the other side; a cell with one seed has no interval. Every "
    "test of a claim, over its cells and its parts, is one family: Holm's procedure across all of them decides which "
    "are refuted, so a true claim is refuted at most 2.5% of the time however many cells and parts it has (checked "
    "by simulation). A part that needs every cell holds when every cell holds, did not hold when one is refuted, is "
    "not measured when a cell has one seed, and is inconclusive otherwise (more seeds would decide); a part that "
    "needs most cells holds when more than half hold, and did not hold when half or more are refuted (a majority is "
    "then out of reach). A claim did not hold when one of its parts did not, even where another cannot be measured; "
    "otherwise it is not measured while a part lacks its cells or seeds, inconclusive while a part is, and held when "
    "every part holds. A claim about a range of cells names those it was judged on where they are not all of them. "
    "A verdict stands only for runs at the protocol (otherwise: not testable at this budget, with what the rule gave "
    "there); every verdict names its budget (data, epochs, how many runs ended at the epoch cap and how many "
    "diverged) and its setting, and is marked where that setting is outside the published ones.")


def runs_of(*cell_dicts) -> list[dict]:
    return [r for cd in cell_dicts for cell in cd.values() for r in cell.values()]


class Test:
    """One cell against a rule's boundary: `outcome` +1 (its interval lies on the claim's side), -1
    (a one-sided t test at ALPHA puts it on the other side), 0 (undecided) or None (fewer than 2
    seeds); `p`: that test's p-value (the evidence against the claim in this cell)."""

    def __init__(self, s: Stat, above: float | None = None, band: tuple | None = None):
        self.stat, self.outcome, self.p = s, None, None
        if s.n < 2:
            return
        df, se = s.n - 1, s.se  # (a zero spread decides outright)
        if band is None:  # the claim: above the boundary
            self.p = (0.0 if s.mean <= above else 1.0) if se == 0 else t_cdf((s.mean - above) / se, df)
            held = s.lo > above
        else:             # the claim: inside the band
            lo, hi = band
            self.p = (float(lo <= s.mean <= hi) if se == 0 else
                      min(t_cdf((s.mean - lo) / se, df), 1 - t_cdf((s.mean - hi) / se, df)))
            held = lo <= s.lo and s.hi <= hi
        self.outcome = 1 if held else (-1 if self.p <= ALPHA else 0)


def holm(tests: list[Test]) -> set[int]:
    """The indices of the tests Holm's procedure refutes at family-wise level ALPHA."""
    order = sorted((t.p, i) for i, t in enumerate(tests) if t.outcome is not None)
    out = set()
    for k, (p, i) in enumerate(order):
        if p > ALPHA / (len(order) - k):
            break
        out.add(i)
    return out


@dataclass
class Part:
    """One part of a claim: its tests, and whether it needs `every` test to hold or `most` of them
    (more than half). `unit` names what a test is about in the counts ('cells', 'widths')."""
    tests: list[Test]
    rule: str = "every"
    unit: str = "cells"
    where: str = "in"
    # filled in by decide():
    verdict: str = NOT_MEASURED
    held: int = 0
    refuted: int = 0
    family: int = 0  # how many tests Holm's procedure ran across (the claim's with an interval)

    @property
    def missing(self) -> int:
        return sum(t.outcome is None for t in self.tests)

    def counts(self) -> str:
        n = len(self.tests)
        holm_ = f"Holm, across the claim's {self.family} test{'s' if self.family != 1 else ''}"
        if self.rule == "most":
            return (f"above 0 {self.where} {self.held} of {n} {self.unit}, refuted {self.where} {self.refuted} "
                    f"({holm_})")
        text = (f"{self.held} of {n} {self.unit if n != 1 else self.unit.rstrip('s')} hold, "
                f"{self.refuted} refuted ({holm_})")
        return text + (f", {self.missing} with fewer than 2 seeds" if self.missing else "")


def decide(*parts: Part) -> str:
    """A claim's verdict from its parts. Every test of every part is one family: Holm's procedure
    across all of them decides which are refuted, so the chance that a true claim is refuted stays
    ALPHA however many cells and parts it has. A part
    - 'every': did not hold when a test is refuted; held when every test holds (an intersection-union
      test: each at ALPHA, so the part at ALPHA); not measured when a test has one seed; else inconclusive;
    - 'most': did not hold when half or more are refuted (a majority is out of reach); held when more
      than half hold; not measured when neither and a test has one seed; else inconclusive.
    The claim: did not hold when a part did not; not measured when a part is; inconclusive when a
    part is; held when every part holds. A part without tests is not measured."""
    family = [t for p in parts for t in p.tests]
    refuted = holm(family)
    i = 0
    for p in parts:
        n = len(p.tests)
        p.refuted = sum(j in refuted for j in range(i, i + n))
        p.held = sum(t.outcome == 1 for t in p.tests)
        p.family = sum(t.outcome is not None for t in family)
        i += n
        if not n:
            p.verdict = NOT_MEASURED
        elif p.rule == "every":
            p.verdict = (NOT_HELD if p.refuted else NOT_MEASURED if p.missing else
                         HELD if p.held == n else INCONCLUSIVE)
        else:
            p.verdict = (NOT_HELD if p.refuted >= n / 2 else HELD if p.held > n / 2 else
                         NOT_MEASURED if p.missing else INCONCLUSIVE)
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


def judged(f: Finding, protocol: Protocol) -> dict:
    """A finding as the report shows it: {measured, verdict, scope, setting}. A verdict names the
    budget and setting it rests on; it is "not testable at this budget" where its runs are off the
    protocol (what the rule gave at this budget said); `setting` is the published setting its runs
    are in (one of protocol.presets), "none" outside them, None without a verdict."""
    out = {"measured": f.measured, "verdict": f.verdict, "scope": f.scope, "setting": None}
    if f.verdict not in (HELD, NOT_HELD, INCONCLUSIVE):
        return out
    if not f.used:
        raise AssertionError("a verdict must name the runs it rests on")
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

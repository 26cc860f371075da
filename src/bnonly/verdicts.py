"""How a rule decides a claim: verdicts, a cell's one-sided test, Holm's procedure across cells,
and the budget and setting every verdict names. claims.py (the report's claims) and frankle.py
(Frankle et al.'s) decide with these.

- A cell (an architecture) holds when its 95% interval lies wholly on the claim's side of the
  boundary, and is refuted when a one-sided t test at 2.5% (the interval's tail) puts it on the
  other side.
- "Every cell" holds when every cell holds (an intersection-union test: each at 2.5%, so the claim
  at 2.5%), and did not hold when Holm's procedure across the cells refutes one (the chance of a
  false refutation stays 2.5% however many cells there are); otherwise it is inconclusive.
- "Most cells" holds when more than half hold, and did not hold when Holm's procedure refutes half
  or more (a majority is then out of reach).
- A cell with one seed has no interval: it is "not measured", and so is the claim unless its
  measured cells already refute it.
- A verdict stands only for runs that followed the protocol; otherwise it is "not testable at this
  budget", with the reason and what the rule gave at this budget. Every verdict names its setting.
"""
from __future__ import annotations

from .stats import Protocol, Stat, budget_gaps, setting_text, t975, t_cdf

HELD, NOT_HELD, NOT_MEASURED = "held", "did not hold", "not measured"
NOT_TESTABLE, NOT_APPLICABLE = "not testable at this budget", "not applicable"
INCONCLUSIVE = "inconclusive"  # an interval straddles the rule's boundary: more seeds would decide
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE, NOT_TESTABLE, NOT_MEASURED, NOT_APPLICABLE)
ALPHA = 0.025            # one-sided: the tail of a 95% two-sided interval
FEW = "needs ≥ 2 seeds per cell for an interval"


def fmt(s: Stat, points: bool = False) -> str:
    """'95.1 ± 0.4% (n=3)', '+12.0 ± 0.3 points (n=3, 1 diverged)', '95.1% (n=1)' (one seed: no interval)."""
    spread = f" ± {100 * s.half:.1f}" if s.n >= 2 else ""
    diverged = f", {s.diverged} diverged" if s.diverged else ""
    return f"{100 * s.mean:{'+' if points else ''}.1f}{spread}{' points' if points else '%'} (n={s.n}{diverged})"


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
        df, se = s.n - 1, s.half / t975(s.n - 1)  # (a zero spread decides outright)
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


def every(tests: list[Test]) -> tuple[str, str]:
    """The 'every cell' verdict and its counts."""
    measured = [t for t in tests if t.outcome is not None]
    refuted = holm(tests)
    held = sum(t.outcome == 1 for t in measured)
    counts = f"{held} of {cells_text(len(tests))} hold, {len(refuted)} refuted (Holm, across {cells_text(len(measured))})"
    if len(measured) < len(tests):
        counts += f", {len(tests) - len(measured)} with one seed"
    if refuted:
        return NOT_HELD, counts
    if len(measured) < len(tests):
        return NOT_MEASURED, counts
    return (HELD if held == len(tests) else INCONCLUSIVE), counts


def cells_text(n: int) -> str:
    return f"{n} cell" + ("" if n == 1 else "s")


def most(tests: list[Test], unit: str = "cells", where: str = "in") -> tuple[str, str]:
    """The 'most cells' verdict (more than half hold) and its counts."""
    measured = [t for t in tests if t.outcome is not None]
    refuted, held = holm(tests), sum(t.outcome == 1 for t in measured)
    counts = f"above 0 {where} {held} of {len(tests)} {unit}, refuted {where} {len(refuted)} (Holm)"
    if len(refuted) >= len(tests) / 2:
        return NOT_HELD, counts
    if len(measured) < len(tests):
        return NOT_MEASURED, counts
    return (HELD if held > len(tests) / 2 else INCONCLUSIVE), counts


def one(test: Test) -> str:
    return {None: NOT_MEASURED, 1: HELD, -1: NOT_HELD, 0: INCONCLUSIVE}[test.outcome]


def both(*verdicts: str) -> str:
    for v in (NOT_HELD, NOT_MEASURED, INCONCLUSIVE):
        if v in verdicts:
            return v
    return HELD


def judged(measured: str, verdict: str, used: list[dict], protocol: Protocol) -> tuple[str, str]:
    """A rule's verdict with the setting it rests on named, and "not testable at this budget" where
    its runs are off the protocol (what the rule gave at this budget said)."""
    if verdict not in (HELD, NOT_HELD, INCONCLUSIVE):
        return measured, verdict
    if not used:
        raise AssertionError("a verdict must name the runs it rests on")
    measured += " " + setting_text(used, protocol)
    gaps = budget_gaps(used, protocol)
    if gaps:
        return measured + f" At this budget the rule gives '{verdict}', but {gaps}.", NOT_TESTABLE
    return measured, verdict

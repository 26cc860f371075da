"""The report's first section, the paper's central comparison: per architecture, BN-only's test
accuracy and its paired per-seed difference to an equal number of random weights, and its figure.
"""
from __future__ import annotations

from ..registry.models import MODELS, arch_name
from .protocol import budget_sentence
from .cells import accuracy, cells, difference
from .stats import show
from .verdicts import runs_of


def headline(runs) -> list[dict]:
    """Per architecture with bn and random runs (MLPs by width and depth, then the others): bn's and
    random's test accuracy and their paired per-seed difference, as Stats."""
    c = cells(runs)
    def order(k):
        m, w, d, _ = k
        return (m != "mlp", MODELS[m].layers if m in MODELS else 0, str(m), w or 0, d or 0)
    rows = []
    for k in sorted((k for k in c if k[3] == "bn" and (*k[:3], "random") in c), key=order):
        m, w, d, _ = k
        bn, rnd = c[k], c[(m, w, d, "random")]
        arch = arch_name({"model": m, "width": w, "depth": d})
        rows.append({"architecture": arch, "label": f"w{w} d{d}" if w is not None else arch,
                     "bn": accuracy(bn), "random": accuracy(rnd), "gap": difference(bn, rnd),
                     "runs": runs_of({0: bn, 1: rnd})})
    return rows


def headline_answer(rows) -> str:
    """The answer in one sentence, with the budget it rests on."""
    measured = [r for r in rows if r["gap"].n >= 2]
    above = sum(r["gap"].lo > 0 for r in measured)
    few = len(rows) - len(measured)
    return (f"In {above} of {len(measured)} architectures the paired 95% interval of BN-only − random lies above 0"
            + (f" ({few} more with fewer than 2 paired seeds have no interval)" if few else "") + ". "
            + budget_sentence([run for r in rows for run in r["runs"]]))


def headline_sentences(rows) -> list[str]:
    """One sentence per architecture: BN-only's accuracy and its paired difference to random weights."""
    def side(gap):  # '+5.1 ± 9.7 points (n=3) above', '0.2 ± 6.9 points (n=3) below'
        return (f"{show(gap, ' points', True)} above" if gap.mean >= 0
                else f"{show(gap, ' points', True).lstrip('-')} below")
    return [f"{r['architecture']}: BN-only {show(r['bn'])}, {side(r['gap'])} an equal number of random "
            f"weights ({show(r['random'])}), paired by seed." for r in rows]

"""The report's first section, the paper's central comparison: per architecture, BN-only's test
accuracy and its paired per-seed difference to an equal number of random weights, and its figure.
"""
from __future__ import annotations

from .models import MODELS, arch_name
from .render import figure, note, text
from .stats import accuracy, budget_sentence, cells, gap
from .verdicts import fmt, runs_of


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
                     "bn": accuracy(bn), "random": accuracy(rnd), "gap": gap(bn, rnd), "runs": runs_of({0: bn, 1: rnd})})
    return rows


def headline_answer(rows) -> str:
    """The answer in one sentence, with the budget it rests on."""
    above = sum(r["gap"].n >= 2 and r["gap"].lo > 0 for r in rows)
    return (f"In {above} of {len(rows)} architectures the paired 95% interval of BN-only − random lies above 0. "
            + budget_sentence([run for r in rows for run in r["runs"]]))


def headline_sentences(rows) -> list[str]:
    """One sentence per architecture: BN-only's accuracy and its paired difference to random weights."""
    def side(gap):  # '+5.1 ± 9.7 points (n=3) above', '0.2 ± 6.9 points (n=3) below'
        return f"{fmt(gap, True)} above" if gap.mean >= 0 else f"{fmt(gap, True).lstrip('-')} below"
    return [f"{r['architecture']}: BN-only {fmt(r['bn'])}, {side(r['gap'])} an equal number of random "
            f"weights ({fmt(r['random'])}), paired by seed." for r in rows]


def headline_section(rows, written: dict, skipped: str | None, chance_rate: float, chance_basis: str) -> dict:
    blocks = [{"kind": "question", "text": "Does training only BatchNorm's affine parameters beat training the same "
                                           "number of randomly chosen weights?"}]
    if rows:
        blocks.append({"kind": "answer", "text": headline_answer(rows)})
        blocks += [text(sentence) for sentence in headline_sentences(rows)]
        blocks.append(figure("bn_vs_random.png", "Test accuracy of bn and random per architecture: mean and 95% "
                             "t interval over seeds; above each pair, the paired per-seed difference bn − random in "
                             f"points with its 95% interval; dashed: chance ({100 * chance_rate:.2f}%, {chance_basis}).",
                             "bn_vs_random.svg"))
    else:
        blocks.append(note(skipped or "No architecture with both bn and random runs."))
        blocks.append(text("`bnonly sweep quick` trains bn and random on six MLPs at the report's protocol."))
    return {"title": "BN-only against random weights", "blocks": blocks}

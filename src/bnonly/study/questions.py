"""The report's open questions, answered from whatever runs one study holds.

Each question compares runs that differ in one setting (normalization kind, allocation of the
random baseline, data set) against the report's baseline. Runs are paired by seed within one
architecture and data set (they share weights and data order), and every architecture is answered
on its own: a paired per-seed difference with a 95% t interval over seeds. An answer counts the
architectures whose interval excludes zero, and names the budget its runs rest on; it never pools
architectures as if their spread were seed noise.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from ..registry.models import arch_name
from ..registry.sets import SETS
from .protocol import budget_sentence
from .cells import accuracy, config_of, counted, difference
from .stats import show


def is_baseline(r) -> bool:
    """The report's setting: BatchNorm (`all-nobn`: none), the random baseline spread evenly."""
    c = config_of(r)
    return c["norm"] in ("batchnorm", "none" if SETS[c["trainable"]].without_norm else "batchnorm") \
        and c["random_allocation"] == "even"


def by_setting(runs, trainable, key) -> dict:
    """{setting: {(arch, dataset): {seed: run}}} of the counted runs of `trainable`, setting = key(r)."""
    out = defaultdict(lambda: defaultdict(dict))
    for r in counted(runs):
        c = config_of(r)
        if c["trainable"] == trainable:
            cell = out[key(r)][(arch_name(c), c["dataset"])]
            if c["seed"] in cell:
                raise ValueError(f"two {trainable} runs of {arch_name(c)} seed {c['seed']}: configurations differ "
                                 "in more than the seed (split the store by study first)")
            cell[c["seed"]] = r
    return out


def label(arch: str, ds: str) -> str:
    return arch if ds == "mnist" else f"{arch} {ds}"


@dataclass
class Answer:
    """One comparison: its sentence (with its budget) and its table."""
    text: str
    header: list
    rows: list
    caption: str


@dataclass
class Question:
    """A question a study can answer, its answers, and what its figure compares: the `conditions`
    of `groups` (by_setting) for `trainable` (no figure where conditions is empty)."""
    key: str
    title: str
    question: str
    answers: list[Answer]
    groups: dict = field(default_factory=dict)
    conditions: list = field(default_factory=list)
    trainable: str = ""


def answer(groups, a, b, label_a: str, label_b: str) -> Answer | None:
    """Per architecture, a and b over the seeds they share and their paired difference a − b."""
    archs = sorted(set(groups.get(a, {})) & set(groups.get(b, {})))
    rows, used = [], []
    count: dict[str, list[int]] = {}  # per data set: [above 0, below 0, architectures with ≥ 2 seeds]
    for k in archs:
        common = sorted(set(groups[a][k]) & set(groups[b][k]))
        ca, cb = ({s: g[k][s] for s in common} for g in (groups[a], groups[b]))
        d = difference(ca, cb)
        if d.n == 0:
            continue
        used += list(ca.values()) + list(cb.values())
        n = count.setdefault(k[1], [0, 0, 0])
        n[0] += d.n >= 2 and d.lo > 0
        n[1] += d.n >= 2 and d.hi < 0
        n[2] += d.n >= 2
        rows.append([label(*k), show(accuracy(ca), "", count="one"), show(accuracy(cb), "", count="one"),
                     show(d, "", True, "one"), str(d.n)])
    if not rows:
        return None

    def counted_on(ds: str) -> str:
        up, down, measured = count[ds]
        where = f" on {ds}" if len(count) > 1 else ""
        return (f"above 0 in {up} and below 0 in {down} of {measured} architectures with ≥ 2 seeds{where}"
                + (f" (0 included in the other {measured - up - down})" if measured - up - down else ""))
    text = (f"{label_a} − {label_b}, paired by seed per architecture and data set: the 95% interval lies "
            + "; ".join(counted_on(ds) for ds in sorted(count)) + ". " + budget_sentence(used))
    caption = (f"Test accuracy (%) of {label_a} and {label_b}, mean ± 95% interval over seeds; difference = paired "
               "per-seed difference in points with its 95% t interval; n = seeds; (k diverged) where runs diverged "
               "(counted at their best weights).")
    return Answer(text, ["architecture", label_a, label_b, "difference (points)", "n"], rows, caption)


def questions(runs) -> list[Question]:
    """Every question that one study's runs can answer."""
    out = []
    norms = by_setting(runs, "bn", lambda r: config_of(r)["norm"])
    shift = all(config_of(r)["hidden_beta"] for r in counted(runs))  # without hidden beta, affine is a scale alone
    what = "a per-feature scale and shift" if shift else "a per-feature scale (no shift: this study has no hidden beta)"
    for kind, title, q in (
            ("affine", "Affine parameters without normalization",
             f"Does {what} alone, with no normalization, do what BatchNorm's gamma{' and beta' if shift else ''} do?"),
            ("layernorm", "LayerNorm's affine parameters",
             f"Does training only LayerNorm's gamma{' and beta' if shift else ''} work as well as training only "
             f"BatchNorm's{'' if shift else ' (no beta in this study)'}?")):
        a = answer(norms, kind, "batchnorm", f"bn with {kind}", "bn with BatchNorm")
        if a:
            out.append(Question(kind, title, q, [a], norms, ["batchnorm", kind], "bn"))
    allocs = by_setting([r for r in runs if config_of(r)["norm"] == "batchnorm"], "random",
                        lambda r: config_of(r)["random_allocation"])
    found = {a: answer(allocs, a, "even", f"random, {a}", "random, even") for a in ("proportional", "first", "last")}
    found = {a: v for a, v in found.items() if v}
    if found:
        out.append(Question("allocation", "Uneven allocation of the random parameters",
                            "Does it matter how the random baseline's trainable weights are spread over the hidden "
                            "layers (the report spread them evenly)?", list(found.values()), allocs,
                            ["even", *found], "random"))
    base = [r for r in runs if is_baseline(r)]
    found = []
    for ds in sorted({config_of(r)["dataset"] for r in counted(base)} - {"mnist"}):
        of_ds = [r for r in base if config_of(r)["dataset"] == ds]
        sets = {**by_setting(of_ds, "bn", lambda r: "bn"), **by_setting(of_ds, "random", lambda r: "random")}
        a = answer(sets, "bn", "random", f"bn only on {ds}", f"random weights on {ds}")
        if a:
            a.text += f" The claims table for {ds} is in the section 'Claims on {ds}'."
            found.append(a)
    if found:
        out.append(Question("datasets", "Other data sets", "Do the report's findings hold beyond MNIST? BN-only "
                            "against an equal number of random weights, per architecture.", found))
    return out

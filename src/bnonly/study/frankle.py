"""Frankle, Schwab & Morcos' CIFAR-10 claims, each with its rule, their protocol, and their published
numbers, labelled as what they are. Decided as the report's claims are (verdicts.py).
"""
from __future__ import annotations

from ..registry.models import MODELS
from .protocol import Protocol
from .cells import accuracies, cells, difference, diverged_seeds
from .stats import differences, paired, show
from .verdicts import (FEW, NOT_MEASURED, NOT_TESTABLE_DEPTH, Finding, Part, Test, decide, judged, runs_of,
                       verdict_label)

# Their protocol (OpenLTH's cifar_resnet defaults, config.FAMILY_PRESETS), their random baseline
# (two weights per output channel) included: verdicts rest only on runs that followed it.
FRANKLE = Protocol("Frankle et al.'s protocol", {
    "dataset": "cifar10", "subset": 0, "val_fraction": 0.1, "max_epochs": 160, "patience": 0, "lr": 0.1,
    "momentum": 0.9, "batch_size": 128, "weight_decay": 1e-4, "precision": "fp32", "augment": True,
    "normalize": True, "random_placement": "per-unit"},
    (((81, 121), 0.1),),
    "Frankle et al.'s protocol is CIFAR-10 (45,000 training images here), 160 epochs without early stopping, SGD "
    "lr 0.1 (x0.1 after epochs 80 and 120), momentum 0.9, weight decay 1e-4, batch 128, fp32, augmentation, "
    "normalised inputs, two random weights per output channel",
    presets=("frankle",),
    notes={("random_norm", "inference"): "random's BatchNorm runs in inference mode (its normalization in effect "
                                         "removed): a weaker baseline than Frankle et al.'s"})
FAR = 0.10  # bnonly's reading of "far higher": more than 10 points (the report's claim 3 threshold)
# "Sufficiently deep": the abstract names no depth. bnonly reads it as ResNet-110 and deeper: the
# deepest of He et al. (2016)'s standard CIFAR ResNets, the shallowest of the paper's extra-deep
# range (110, 218, 434, 866: tensorflow/models#9174 lists the paper's depths), and the deepest of the
# `frankle` study. Shallower ResNets cannot test the claim.
DEEP = 110
PAPER_DEPTHS = (110, 218, 434, 866)  # the paper's ResNets from DEEP on

# Published BN-only test accuracies, labelled as what they are. The paper's abstract gives 82% for
# "sufficiently deep ResNets" (CIFAR-10); bnonly places it at ResNet-866, the deepest the paper
# trains, by inference (its per-depth table was not in the text available here). The TensorFlow
# reproduction is an unmerged community pull request (tensorflow/models#9174), one run per model, of
# another layout (gamma ~ N(0, 1), no stem BatchNorm, no mean/std normalisation). Neither text
# available here says whether the output layer trained; in OpenLTH, Frankle et al.'s code, the
# BN-only flag `others_frozen` leaves it trainable unless `output_frozen` is also set
# (models/registry.py), so the numbers stand beside `bn+out` and `bn` alike.
PUBLISHED = {
    "paper": ("Frankle et al.'s abstract: 82% for 'sufficiently deep ResNets', placed at ResNet-866",
              {"resnet866": 0.82}),
    "reproduction": ("unmerged TF pull request tensorflow/models#9174, one run each",
                     {"resnet14": 0.4667, "resnet32": 0.5129, "resnet56": 0.5521, "resnet110": 0.6519,
                      "resnet218": 0.7009, "resnet434": 0.7367, "resnet866": 0.7783}),
}

FRANKLE_CLAIMS = (
    "In sufficiently deep CIFAR-10 ResNets, BN-only is far above an equal number of random weights "
    "(two per output channel).",
    "bnonly's hypothesis (not a claim of the paper's abstract): the gap between BN-only and random weights "
    "grows with depth.",
)
FRANKLE_RULES = (
    f"At every standard-width ResNet (16/32/64 channels) of at least {DEEP} layers with bn and random runs "
    "(bnonly's reading of 'sufficiently deep': the paper's abstract names no depth; ResNet-110 is the deepest of "
    "He et al.'s standard CIFAR ResNets and the shallowest of the paper's deep range, 110 to 866): the paired "
    f"per-seed difference bn − random, 95% interval over seeds. Held if its lower end exceeds {100 * FAR:.0f} "
    "points at every such depth (bnonly's threshold for 'far': the paper gives none). A study whose ResNets are "
    f"all shallower than {DEEP} layers is 'not testable at this depth'; shallower depths are listed, not judged.",
    "Per seed, the difference bn − random at the deepest standard-width ResNet minus that at the shallowest: the "
    "paired growth of the gap, 95% interval over seeds. Held if the interval lies above 0.",
)


def resnets(c) -> dict[str, dict[str, dict]]:
    """{trainable: {model: cell}} of the study's standard-width CIFAR ResNets, shallowest first."""
    models = sorted({m for (m, _, _, _) in c if m in MODELS and MODELS[m].layers and MODELS[m].widen == 1
                     and m.startswith("resnet")}, key=lambda m: MODELS[m].layers)
    return {t: {m: c[(m, None, None, t)] for m in models if (m, None, None, t) in c}
            for t in ("all", "bn", "bn+out", "random")}


def wide_resnets(c) -> list[str]:
    """The study's wide ResNets (x2, x4): F1 and F2 speak of standard-width ones and do not judge them."""
    return sorted({m for (m, _, _, _) in c if m in MODELS and m.startswith("resnet") and MODELS[m].widen != 1},
                  key=lambda m: (MODELS[m].layers, MODELS[m].widen))


def _not_judged(c) -> str:
    wide = wide_resnets(c)
    return (f"; not judged, wider than the standard 16/32/64 channels the claim is read at: {', '.join(wide)}"
            if wide else "")


def frankle1(c) -> Finding:
    r = resnets(c)
    depths = [m for m in r["bn"] if m in r["random"]]
    if not depths:
        return Finding("No standard-width ResNet with both bn and random runs" + _not_judged(c) + ".", NOT_MEASURED)
    gaps = {m: difference(r["bn"][m], r["random"][m]) for m in depths}
    deep = [m for m in depths if MODELS[m].layers >= DEEP]
    shallow = "; ".join(f"{m}: {show(g, ' points', True)}" for m, g in gaps.items() if m not in deep)
    if not deep:
        return Finding(f"bn − random, all shallower than ResNet-{DEEP} (not judged): {shallow}{_not_judged(c)}.",
                       NOT_TESTABLE_DEPTH, runs_of({m: r["bn"][m] for m in depths}, {m: r["random"][m] for m in depths}))
    part = Part([Test(gaps[m], above=FAR) for m in deep], unit="depths")
    verdict = decide(part)
    text = "bn − random: " + "; ".join(f"{m}: {show(gaps[m], ' points', True)}" for m in deep) + f" ({part.counts()})"
    if shallow:
        text += f"; shallower than ResNet-{DEEP}, not judged: {shallow}"
    run_depths = [MODELS[m].layers for m in deep]
    scope = "" if set(PAPER_DEPTHS) <= set(run_depths) else f"ResNet-{', '.join(map(str, run_depths))} of {DEEP}–866"
    return Finding(text + _not_judged(c) + ".", verdict,
                   runs_of({m: r["bn"][m] for m in deep}, {m: r["random"][m] for m in deep}), scope, [part])


def frankle2(c) -> Finding:
    r = resnets(c)
    depths = [m for m in r["bn"] if m in r["random"]]
    if len(depths) < 2:
        return Finding("Needs bn and random runs at two or more standard-width ResNet depths.", NOT_MEASURED)
    lo, hi = depths[0], depths[-1]
    growth = paired(differences(accuracies(r["bn"][hi]), accuracies(r["random"][hi])),
                    differences(accuracies(r["bn"][lo]), accuracies(r["random"][lo])))
    cells_ = [r[t][m] for t in ("bn", "random") for m in (lo, hi)]
    seeds = set.intersection(*(set(cl) for cl in cells_))
    growth = growth._replace(diverged=diverged_seeds(*cells_, seeds=seeds))
    used = runs_of({m: r["bn"][m] for m in (lo, hi)}, {m: r["random"][m] for m in (lo, hi)})
    if growth.n < 2:
        return Finding(FEW + " (paired by seed).", NOT_MEASURED, used)
    part = Part([Test(growth, above=0.0)])
    return Finding(f"growth of bn − random from {lo} to {hi}: {show(growth, ' points', True)}{_not_judged(c)}.",
                   decide(part), used, parts=[part])


def frankle_claims(runs) -> list[dict]:
    """Frankle et al.'s CIFAR-10 claims on one study's runs, judged as `claims` judges the report's."""
    c = cells(runs)
    out = []
    for i, rule in enumerate((frankle1, frankle2)):
        out.append({"id": f"F{i + 1}", "claim": FRANKLE_CLAIMS[i], "rule": FRANKLE_RULES[i],
                    **(j := judged(rule(c), FRANKLE)),
                    "label": verdict_label(j)})
    return out

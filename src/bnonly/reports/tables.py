"""The report's tables of test accuracy: MLPs by width and depth, LeNet-5 by set, and Frankle et
al.'s CIFAR models beside their published numbers. Each cell is a mean ± 95% interval over seeds.
"""
from __future__ import annotations

from collections import defaultdict

from ..registry.models import MODELS
from ..registry.sets import ordered
from ..study.frankle import PUBLISHED
from ..study.cells import accuracy, cells, counted, difference
from ..study.stats import show

FRANKLE_SETS = ("all", "bn", "bn+out", "random")


def mlp_table(mlp) -> tuple[list[str], list[list[str]]]:
    """One row per (width, depth), one column per trainable set, cells 'mean ± half' in percent."""
    sets = ordered(t for _, _, t in mlp)
    rows = []
    for w, d in sorted({(w, d) for w, d, _ in mlp}):
        ns = [mlp[(w, d, t)].n for t in sets if (w, d, t) in mlp]
        n = str(min(ns)) if min(ns) == max(ns) else f"{min(ns)}–{max(ns)}"
        rows.append([str(w), str(d)] + [show(mlp.get((w, d, t)), "", count="one") for t in sets] + [n])
    return ["width", "depth"] + sets + ["n seeds"], rows


def lenet_table(runs, lenet) -> tuple[list[str], list[list[str]]]:
    params = defaultdict(set)
    for r in counted(runs):
        if r.get("model") == "lenet5" and r.get("trainable_params") is not None:
            params[r["trainable"]].add(int(r["trainable_params"]))
    rows = [[t, show(s, "", count="one"), str(s.n), "/".join(f"{p:,}" for p in sorted(params[t])) or "–"]
            for t, s in lenet.items()]
    return ["trainable set", "test accuracy (%)", "n", "trainable params"], rows


def cifar_models(runs) -> list[str]:
    """The study's models of Frankle et al.'s CIFAR family, ResNets by depth and width, then VGG."""
    ms = {r.get("model") for r in runs if r.get("model") in MODELS and MODELS[r.get("model")].family == "cifar"}
    return sorted(ms, key=lambda m: (not m.startswith("resnet"), MODELS[m].widen, MODELS[m].layers))


def frankle_table(runs) -> tuple[list[str], list[list[str]]]:
    """Per CIFAR model: the measured accuracy of each set, the paired bn − random gap, the BN
    parameter count, and the published BN-only numbers (paper, reproduction) beside them."""
    c = cells(runs)
    sets = [t for t in FRANKLE_SETS if any(k[3] == t for k in c)]
    rows = []
    for m in cifar_models(counted(runs)):
        got = {t: c[(m, None, None, t)] for t in sets if (m, None, None, t) in c}
        n_bn = {int(r["trainable_params"]) for r in got.get("bn", {}).values() if r.get("trainable_params")}
        rows.append([m, "/".join(f"{n:,}" for n in sorted(n_bn)) or "–"]
                    + [show(accuracy(got[t]), "", count="one") if t in got else "–" for t in sets]
                    + [show(difference(got["bn"], got["random"]), "", True, "one") if "bn" in got and "random" in got
                       else "–"]
                    + [f"{100 * PUBLISHED[k][1][m]:.1f}" if m in PUBLISHED[k][1] else "–"
                       for k in ("paper", "reproduction")])
    return (["model", "BN params"] + [f"{t} (%)" for t in sets] + ["bn − random (points, paired)",
             f"published BN-only: {PUBLISHED['paper'][0]}", f"published BN-only: {PUBLISHED['reproduction'][0]}"], rows)

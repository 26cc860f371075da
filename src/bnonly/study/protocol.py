"""The protocol a claim was made under and the setting it names: every RunConfig field is the grid,
the replicate, the protocol or the setting (tests/test_claims.py checks that none is left out).
A run off the protocol cannot test a claim made under it; every conclusion names its budget
(budget_sentence) and its setting (setting_text), marked where it is outside the published ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from ..config.layers import resolve
from ..registry.data import TRAIN_SIZES
from ..registry.models import MODELS
from ..registry.sets import SETS, ordered
from .cells import config_of

# Every RunConfig field is in one of four groups (tests/test_claims.py checks that none is left out):
# - the grid (config.GRID_FIELDS): what a cell is (model, width, depth, set, norm, allocation, data
#   set) and which seed;
# - the replicate (REPLICATE): which draw of the protocol a run is, like its seed;
# - the protocol (a Protocol below): how it was trained, its budget; a run off it cannot test a claim
#   made under the protocol, whose verdict is then "not testable at this budget", with the reason;
# - the setting (SETTING, less what a protocol checks): what the models are beyond the grid; every
#   claim names it in its measured text.
REPLICATE = ("data_seed",)
SETTING = ("gamma_init", "hidden_beta", "hidden_bias", "bn_momentum", "bn_eps", "random_placement", "random_norm",
           "frozen_trunk_norm")
SCHEDULE = ("lr_drop_epoch", "lr_drop_epochs", "lr_drop_factor")  # checked together, as a schedule


def schedule(c: dict) -> tuple:
    """A configuration's learning-rate schedule: () without drops, else ((drop epochs), factor)."""
    drops = sorted({int(e) for e in str(c["lr_drop_epochs"]).split(",") if e.strip()}
                   | ({int(c["lr_drop_epoch"])} if c["lr_drop_epoch"] else set()))
    return () if not drops else (tuple(drops), float(c["lr_drop_factor"]))


@dataclass(frozen=True)
class Protocol:
    name: str
    values: dict               # field -> the value the protocol trains with
    schedules: tuple           # the learning-rate schedules it allows (schedule())
    text: str
    presets: tuple = ()        # the published settings (config.PRESETS) its claims were made in
    notes: dict = field(default_factory=dict)  # (setting field, value) -> what it does to a comparison

    @property
    def setting(self) -> tuple:
        return tuple(f for f in SETTING if f not in self.values)

    def off(self, c: dict) -> list[str]:
        """The fields in which a configuration (config_of) is off this protocol."""
        off = [k for k, v in self.values.items() if c[k] != v]
        return off + (["learning-rate schedule"] if schedule(c) not in self.schedules else [])


# The report's protocol (its section 3 and its code): 48,000 training images (MNIST's 60,000 less a
# 20% validation split), early stopping on validation loss with patience 3 within 100 epochs, SGD lr
# 0.01, momentum 0.9, batch 128, no weight decay, fp32, pixels in [0, 1] without augmentation; a
# constant learning rate, or the published code's x0.1 from the 71st epoch. Its claims were made in
# two published settings: its text (preset `report`) and its code (`report-code`).
REPORT = Protocol("the report's protocol", {
    "subset": 0, "val_fraction": 0.2, "max_epochs": 100, "patience": 3, "lr": 0.01, "momentum": 0.9,
    "batch_size": 128, "weight_decay": 0.0, "precision": "fp32", "augment": False, "normalize": False},
    ((), ((71,), 0.1)),
    "the report's protocol is early stopping (patience 3) within 100 epochs on 48,000 training images, SGD lr "
    "0.01 (constant, or x0.1 from epoch 71 as in its code), momentum 0.9, batch 128, no weight decay, fp32, no "
    "augmentation or input normalisation",
    presets=("report", "report-code"),
    notes={
        ("random_norm", "batch"): "random keeps BatchNorm with batch statistics (Frankle et al.'s matched "
                                  "baseline): a stronger baseline than the one behind the report's numbers, whose "
                                  "code ran random's BatchNorm in inference mode",
        ("random_norm", "inference"): "random's BatchNorm runs in inference mode, as in the report's code (its "
                                      "normalization in effect removed): a weaker baseline than Frankle et al.'s",
        ("random_placement", "neuron"): "random trains whole output units",
        ("random_placement", "report-code"): "random trains two whole output units of every layer whose fan-in "
                                             "equals its width (the report's notebook)",
    })


def off_protocol(runs, protocol: Protocol = REPORT) -> str | None:
    """None when every run followed the protocol (the report's unless given); else why not, in one clause."""
    off = [(r, c, protocol.off(c)) for r in runs for c in [config_of(r)] if protocol.off(c)]
    if not off:
        return None
    parts = []
    caps = sorted({c["max_epochs"] for _, c, g in off if "max_epochs" in g})
    if caps:
        capped = [r for r, c, g in off if "max_epochs" in g and (r.get("epochs_run") or 0) >= c["max_epochs"]]
        parts.append(f"{len(capped)} of {len(runs)} runs stopped by max_epochs = {'/'.join(map(str, caps))} (the "
                     f"protocol's is {protocol.values['max_epochs']})")
    subsets = sorted({c["subset"] for _, c, g in off if "subset" in g and c["subset"]})
    if subsets:
        parts.append(f"trained on a subset of {'/'.join(f'{n:,}' for n in subsets)} images")
    other = sorted({k for _, _, g in off for k in g if k not in ("max_epochs", "subset")})
    if other:
        parts.append("other than the protocol in " + ", ".join(
            f"{k} ({'/'.join(sorted({_show(c, k) for _, c, g in off if k in g}))})" for k in other))
    return "; ".join(parts) + f"; {protocol.text}"


def _images(c: dict) -> str:
    """The training data of a configuration: 'all 48,000 training images', 'a subset of 1,000
    images (800 to train on)'."""
    if c["subset"]:
        return (f"a subset of {c['subset']:,} images "
                f"({c['subset'] - round(c['subset'] * c['val_fraction']):,} to train on)")
    n = TRAIN_SIZES.get(c["dataset"])
    return (f"all {n - round(n * c['val_fraction']):,} training images" if n else
            f"the whole training set less a {100 * c['val_fraction']:g}% validation split")


def _epochs(c: dict) -> str:
    return (f"early stopping (patience {c['patience']}) within {c['max_epochs']} epochs" if c["patience"] else
            f"{c['max_epochs']} epochs without early stopping")


def budget_sentence(runs, protocol: Protocol = REPORT) -> str:
    """The budget a conclusion rests on, as one sentence: the data and epochs of its runs, whether
    that is the protocol (and where not, in which fields), how many of its runs ended at the epoch
    cap and how many diverged. '' without runs."""
    if not runs:
        return ""
    cfgs = [(r, config_of(r)) for r in runs]
    data = " / ".join(sorted({_images(c) for _, c in cfgs}))
    epochs = " / ".join(sorted({_epochs(c) for _, c in cfgs}))
    off = sorted({k for _, c in cfgs for k in protocol.off(c)})
    where = protocol.name if not off else f"off {protocol.name} in {', '.join(off)}"
    stopping = [(r, c) for r, c in cfgs if c["patience"]]
    capped = sum((r.get("epochs_run") or 0) >= c["max_epochs"] for r, c in stopping)
    diverged = sum(r.get("status") == "diverged" for r in runs)
    cap = (f"{capped} of {len(stopping)} runs ended at the epoch cap" if len(stopping) == len(cfgs) else
           f"{capped} of {len(stopping)} early-stopping runs ended at the epoch cap" if stopping else
           "every run trained to its last epoch")
    return (f"Budget: {data}, {epochs} ({where}); {cap}, "
            f"{diverged or 'none'} diverged.")


def _show(c: dict, field: str) -> str:
    if field == "learning-rate schedule":
        s = schedule(c)
        return "constant" if not s else f"x{s[1]:g} at epochs {', '.join(map(str, s[0]))}"
    return str(c[field]).lower() if isinstance(c[field], bool) else str(c[field])


def _shown(c: dict, protocol: Protocol) -> list[str]:
    """The setting fields that apply to a run: the random baseline's to `random` (whose gamma is 1 and
    beta 0, frozen: gamma_init and hidden_beta do not apply to it), frozen_trunk_norm to the sets
    with a frozen trunk, hidden_bias to the sets built without normalization."""
    s = SETS.get(c["trainable"])
    random = c["trainable"] == "random"
    return [f for f in protocol.setting
            if (not f.startswith("random_") or random)
            and (f not in ("gamma_init", "hidden_beta") or not random)
            and (f != "frozen_trunk_norm" or (s is not None and not s.trains_trunk))
            and (f != "hidden_bias" or (s is not None and s.without_norm))]


@lru_cache(maxsize=None)
def _preset_values(preset: str, model: str, trainable: str) -> dict:
    return resolve(preset, model=model, trainable=trainable).__dict__ if model in MODELS else {}


def published(runs, protocol: Protocol = REPORT) -> tuple[str | None, dict[str, list[str]]]:
    """The published setting (one of protocol.presets) whose values every run's setting fields have,
    else None and, per published setting, the fields in which the runs differ from it."""
    cfgs = [config_of(r) for r in runs]
    off: dict[str, list[str]] = {}
    for p in protocol.presets:
        off[p] = sorted({f for c in cfgs for f in _shown(c, protocol) if c["trainable"] in SETS
                         and c[f] != _preset_values(p, c["model"], c["trainable"]).get(f, c[f])})
        if not off[p]:
            return p, {}
    return None, off


def setting_text(runs, protocol: Protocol = REPORT) -> str:
    """The setting of the runs a verdict rests on, every field with its value(s) (and which sets have
    which, where they differ), what a value does to the comparison where it changes what a label
    means, and whether it is a published setting."""
    cfgs = [config_of(r) for r in runs]
    if not cfgs:
        return ""
    fields_ = [f for f in protocol.setting if any(f in _shown(c, protocol) for c in cfgs)]
    parts, notes = [], []
    for f in fields_:
        by_value: dict[str, set] = {}
        for c in cfgs:
            if f in _shown(c, protocol):
                by_value.setdefault(_show(c, f), set()).add(c["trainable"])
        parts.append(f"{f} = " + (next(iter(by_value)) if len(by_value) == 1 else " / ".join(
            f"{v} ({', '.join(ordered(ts))})" for v, ts in sorted(by_value.items()))))
        notes += [protocol.notes[(f, v)] for v in sorted(by_value) if (f, v) in protocol.notes]
    note = "; ".join(notes)
    out = "Setting: " + ", ".join(parts) + "." + (f" {note[0].upper()}{note[1:]}." if note else "")
    preset, differ = published(runs, protocol)
    if protocol.presets and preset is None:
        out += (" Outside the published settings: it differs from " + " and from ".join(
            f"`{p}` in {', '.join(fs)}" for p, fs in differ.items())
            + ", so the verdict is about this setting, not theirs.")
    return out

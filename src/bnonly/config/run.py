"""A run's typed configuration, the presets, and the canonical hash that names a run.

A run is a function of one `RunConfig` (its seed included). Every field is a flag of `bnonly
train` (`--gamma-init`, `--max-epochs`, ...) and a TOML key of the same name; config/layers.py puts
defaults, preset, file and flags together.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, fields

from ..errors import ConfigError
from ..registry.data import DATASETS
from ..registry.models import GAMMA_INITS, MODELS
from ..registry.norms import NORMS
from ..registry.sets import SETS

RANDOM_PLACEMENTS = ("scattered", "per-unit", "neuron", "report-code")
RANDOM_NORMS = ("batch", "inference")
RANDOM_ALLOCATIONS = ("even", "proportional", "first", "last")
PRECISIONS = ("fp32", "tf32", "bf16")
SEEDS_BELOW = 2 ** 32  # torch's generator takes seeds modulo 2**32
FLOAT32_MAX = 3.4028234663852886e38  # the largest finite fp32: a float setting beyond it cannot reach a tensor


# The allowed values of each string field, most of them read from their registries.
CHOICES = {"model": tuple(MODELS), "norm": tuple(NORMS), "gamma_init": tuple(GAMMA_INITS), "trainable": tuple(SETS),
           "random_placement": RANDOM_PLACEMENTS, "random_norm": RANDOM_NORMS, "precision": PRECISIONS,
           "random_allocation": RANDOM_ALLOCATIONS, "dataset": tuple(DATASETS)}


def _field(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class RunConfig:
    """One run. Each field's help is its --help text (cli.py) and its line in docs/study.md."""
    # --- model ---
    model: str = _field("mlp", "the architecture (registry/models.py)")
    width: int = _field(784, "hidden units per layer (MLP)")
    depth: int = _field(4, "hidden blocks (MLP)")
    norm: str = _field("batchnorm", "the layer after each hidden linear/conv layer")
    gamma_init: str = _field("uniform(-1,1)", "how gamma starts")
    hidden_beta: bool = _field(False, "hidden normalization layers have a shift beta")
    hidden_bias: bool = _field(True, "models built without normalization give their hidden layers a bias")
    bn_momentum: float = _field(0.1, "BatchNorm running-statistics momentum, PyTorch's convention (Keras 0.99 is 0.01)")
    bn_eps: float = _field(1e-5, "BatchNorm epsilon")
    # --- what trains ---
    trainable: str = _field("bn", "what trains")
    random_placement: str = _field("scattered", "where `random`'s entries sit in a layer: scattered, exactly k per "
                                                "output unit, whole units, or report-code (whole units where a "
                                                "layer's fan-in equals its width, else scattered)")
    random_norm: str = _field("batch", "`random`'s BatchNorm: batch statistics, or inference mode (normalization "
                                       "in effect removed)")
    random_allocation: str = _field("even", "how `random`'s entries are spread over the layers: as bn's (even), "
                                            "in proportion to each layer's weights, all in the first or the last")
    frozen_trunk_norm: bool = _field(True, "out and none keep the normalization layers (false builds them without)")
    # --- optimisation ---
    lr: float = _field(0.01, "SGD learning rate")
    momentum: float = _field(0.9, "SGD momentum")
    weight_decay: float = _field(0.0, "weight decay (masked like the gradients)")
    batch_size: int = _field(128, "mini-batch size")
    max_epochs: int = _field(100, "at most this many epochs")
    patience: int = _field(3, "early stopping on validation loss, best weights restored (0: none, every run "
                              "trains max_epochs and keeps its last weights)")
    lr_drop_epoch: int = _field(0, "multiply lr by lr_drop_factor from this epoch on, counted from 1 (0: never)")
    lr_drop_epochs: str = _field("", "more such epochs, comma-separated (\"81,121\": Frankle et al.'s schedule)")
    lr_drop_factor: float = _field(0.1, "the factor of each drop")
    precision: str = _field("fp32", "fp32, tf32 (CUDA matmuls in TF32) or bf16 (the training forward under autocast)")
    # --- data ---
    dataset: str = _field("mnist", "the data set (idx: any directory of IDX files, with --data-dir)")
    val_fraction: float = _field(0.2, "held out of the training set for early stopping")
    data_seed: int = _field(0, "fixes the train/validation split")
    subset: int = _field(0, "use only this many training images (0: all)")
    augment: bool = _field(False, "random crop (4 pixels of padding) and horizontal flip of every training batch, "
                                  "drawn from the seed")
    normalize: bool = _field(False, "inputs normalised per channel with the data set's mean and std (data.NORMALIZE); "
                                    "otherwise pixels in [0, 1]")
    # --- replicate ---
    seed: int = _field(0, "initial weights, random-set masks and data order")

    def __post_init__(self):
        def check(ok, name, msg):
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r}: {msg}")
        for f in fields(self):  # type check (TOML and CLI both end up here)
            v = getattr(self, f.name)
            want = {"int": int, "float": (int, float), "bool": bool, "str": str}[f.type]
            if not isinstance(v, want) or (f.type in ("int", "float") and isinstance(v, bool)):
                raise ConfigError(f"{f.name}={v!r}: expected {f.type}")
            if f.type == "int" and not abs(v) < 2 ** 63:  # what torch's sizes and the store's SQLite integers hold
                raise ConfigError(f"{f.name}={v!r}: must be below 2**63")
            if f.type == "float":
                if not math.isfinite(v) or abs(v) > FLOAT32_MAX:  # the step multiplies fp32 tensors by it
                    raise ConfigError(f"{f.name}={v!r}: must be a finite number (at most {FLOAT32_MAX:.3g})")
                object.__setattr__(self, f.name, float(v))
        for name, allowed in CHOICES.items():
            check(getattr(self, name) in allowed, name, f"must be one of {', '.join(allowed)}")
        check(self.width >= 1, "width", "must be >= 1")
        check(self.depth >= 1, "depth", "must be >= 1")
        check(0 < self.bn_momentum <= 1, "bn_momentum", "must be in (0, 1]")
        check(self.bn_eps > 0, "bn_eps", "must be > 0")
        check(self.lr > 0, "lr", "must be > 0")
        check(0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check(self.batch_size >= 2, "batch_size", "must be >= 2 (BatchNorm needs a batch)")
        check(self.max_epochs >= 1, "max_epochs", "must be >= 1")
        check(self.patience >= 0, "patience", "must be >= 0 (0 = no early stopping)")
        check(self.lr_drop_epoch >= 0, "lr_drop_epoch", "must be >= 0 (0 = never)")
        check(self.lr_drop_factor > 0, "lr_drop_factor", "must be > 0")
        check(all(e.strip().isdecimal() and int(e) >= 1 for e in self.lr_drop_epochs.split(",")) if self.lr_drop_epochs
              else True, "lr_drop_epochs", "must be epochs >= 1, comma-separated (e.g. \"81,121\")")
        check(0 < self.val_fraction < 1, "val_fraction", "must be in (0, 1)")
        check(self.subset >= 0, "subset", "must be >= 0 (0 = all)")
        n_val = round(self.subset * self.val_fraction)  # (registry/data.py's split of a subset)
        check(not self.subset or (n_val >= 1 and self.subset - n_val >= 2), "subset",
              f"is too small for a validation split of {self.val_fraction} (one validation and two training images "
              "at least)")
        for name in ("seed", "data_seed"):  # torch's generator takes no negative seed (the bound above caps them)
            check(getattr(self, name) >= 0, name, "must be >= 0")
        # torch's CPU generator keeps a seed modulo 2**32: seed 2**32 would train seed 0's run under another id
        check(self.seed < SEEDS_BELOW, "seed", "must be below 2**32 (a larger seed repeats seed mod 2**32)")
        s = SETS[self.trainable]
        if s.needs_beta and not self.hidden_beta and self.norm != "none":
            raise ConfigError(f"trainable={self.trainable!r} needs hidden_beta=true "
                              "(this preset has no beta in hidden layers)")
        if s.same_without_beta and not self.hidden_beta and self.norm != "none":
            raise ConfigError(f"trainable={self.trainable!r} trains what {s.same_without_beta!r} trains without hidden "
                              f"beta (this preset has none): one computation is one run; use "
                              f"trainable={s.same_without_beta!r}, or hidden_beta=true")
        if s.needs_norm and self.norm == "none":
            raise ConfigError(f"trainable={self.trainable!r} needs normalization layers, but norm='none'")

    def lr_at(self, epoch: int) -> float:
        """The learning rate of an epoch (counted from 1): lr times lr_drop_factor once for each drop
        epoch (lr_drop_epoch and lr_drop_epochs) it has reached."""
        drops = ([int(e) for e in self.lr_drop_epochs.split(",") if e.strip()]
                 + [self.lr_drop_epoch] * bool(self.lr_drop_epoch))
        try:
            lr = self.lr * self.lr_drop_factor ** sum(epoch >= e for e in drops)
        except OverflowError:
            lr = math.inf
        return min(lr, FLOAT32_MAX)  # a schedule that grows past fp32 steps at its largest (and diverges)

    # ---- identity ----
    @property
    def effective_norm(self) -> str:
        """`all-nobn` builds the model without normalization whatever `norm` says; so do `out` and
        `none` with frozen_trunk_norm=false (the report's published code)."""
        s = SETS[self.trainable]
        return "none" if s.without_norm or (not s.trains_trunk and not self.frozen_trunk_norm) else self.norm

    def canonical(self) -> str:
        """The canonical string of a run: every field, sorted, as JSON. Fields added after the first
        release are left out while they hold their default, so that the runs of older stores keep
        their run_id."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @property
    def run_id(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:16]

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)


# The fields a sweep grid varies, each under the plural key a sweep file lists its values by; every
# other field defines a study (study/cells.py: studies).
GRID_KEYS = {"models": "model", "widths": "width", "depths": "depth", "trainable": "trainable", "seeds": "seed",
             "norms": "norm", "random_allocations": "random_allocation", "datasets": "dataset"}
GRID_FIELDS = tuple(GRID_KEYS.values())

# Fields added after the first release, with the default that older run_ids were computed under.
LATER_FIELDS = {"frozen_trunk_norm": True, "lr_drop_epochs": "", "augment": False, "normalize": False,
                "hidden_bias": True}

FIELD_TYPES = {f.name: f.type for f in fields(RunConfig)}

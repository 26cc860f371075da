"""The trainable sets, one entry each, which every other module reads (config validation, masks,
stack kinds, the grid's rules, the report's colours and order, the analysis, `--help`). A set names
the parts of a model that train: `hidden` weights, `gamma`, `beta`, `head`; `random` trains random
entries of the hidden weights instead, as many as `bn` trains.
"""
from __future__ import annotations

from dataclasses import dataclass

PARTS = ("hidden", "gamma", "beta", "head")


@dataclass(frozen=True)
class TrainableSet:
    name: str
    help: str
    color: str                      # its line colour in every figure
    parts: frozenset = frozenset()  # which parts of the model train (see PARTS)
    random_entries: bool = False    # trains random hidden-weight entries matched to `bn`'s count
    without_norm: bool = False      # the model is built without normalization layers
    same_without_beta: str | None = None  # the set it trains the same parameters as where there is no hidden beta

    @property
    def trains_trunk(self) -> bool:
        """Whether anything before the head trains (hidden weights, their random entries, gamma or
        beta). Decides the `head` stack kind (sweeps/grouping.py: stack_kind) and, with
        RunConfig.frozen_trunk_norm = false, that `out` and `none` are built without normalization."""
        return bool(self.parts - {"head"}) or self.random_entries

    @property
    def trains_affine(self) -> bool:
        """Whether gamma or beta train: the runs the gamma/beta analysis looks at (a set built
        without normalization has none to train)."""
        return bool(self.parts & {"gamma", "beta"}) and not self.without_norm

    @property
    def trains_nothing(self) -> bool:
        """`none`: the engine makes one pass (BatchNorm gets its statistics), evaluates it and stops."""
        return not self.parts and not self.random_entries

    @property
    def needs_norm(self) -> bool:
        """Sets defined by the normalization layer's parameters need one (bn, bn+out, gamma, beta,
        random): config validation refuses them with norm 'none', and a sweep grid leaves them out."""
        return self.random_entries or (self.trains_affine and "hidden" not in self.parts)

    @property
    def needs_beta(self) -> bool:
        """A set that trains beta and nothing else is empty without hidden beta (config validation)."""
        return self.parts == frozenset({"beta"})


def _set(name, help, color, *parts, **kw) -> TrainableSet:
    return TrainableSet(name, help, color, frozenset(parts), **kw)


# In report order (tables, legends); colours are matplotlib's tab10.
SETS: dict[str, TrainableSet] = {s.name: s for s in (
    _set("all", "every parameter, with BatchNorm", "#1f77b4", *PARTS),
    _set("all-nobn", "every parameter, model built without BatchNorm (hidden layers get a bias instead)",
         "#ff7f0e", *PARTS, without_norm=True),
    _set("bn", "BatchNorm gamma and beta only; output layer frozen at its random init", "#2ca02c", "gamma", "beta"),
    _set("bn+out", "BatchNorm gamma, beta and the output layer", "#d62728", "gamma", "beta", "head"),
    _set("random", "as many random hidden weights as `bn` trains, per layer; BN kept with gamma=1, beta=0 frozen",
         "#9467bd", random_entries=True),
    _set("out", "only the output layer", "#8c564b", "head"),
    _set("none", "nothing: the random network as initialised (BN statistics still estimated)", "#7f7f7f"),
    _set("gamma", "BatchNorm gamma only (needs hidden beta: without it, bn trains gamma alone)", "#e377c2", "gamma",
         same_without_beta="bn"),
    _set("beta", "BatchNorm beta only", "#17becf", "beta"),
)}


def color(name: str) -> str:
    """A set's plot colour (black for a name this version does not know, e.g. from an old store)."""
    return SETS[name].color if name in SETS else "black"


def ordered(names) -> list[str]:
    """Set names in registry order, unknown names last (sorted)."""
    names = set(names)
    return [s for s in SETS if s in names] + sorted(names - set(SETS))

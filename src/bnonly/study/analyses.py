"""Each run's gamma analysis (study/gamma.py: analyze_run) computed once and kept in its store, keyed
by the analysis code, the model and the data, so that every later report and analyze reads it back;
with progress while it computes.
"""
from __future__ import annotations

import hashlib
import sys
import time

from tqdm.auto import tqdm

from ..engine.masks import ArtefactError
from ..registry.data import data_mismatch, fingerprint
from ..store import Store
from . import gamma
from .cells import config_of


class Paced:
    """Where stderr is not a terminal (no bar: nohup, a batch job), a line at most once a minute
    while analyses are computed: how many runs are done, and the time left at the pace so far."""

    def __init__(self, total: int, every: float = 60.0):
        self.total, self.every, self.seen, self.done = total, every, 0, 0
        self.bar_shows = sys.stderr.isatty()  # (then the bar says it)
        self.started = self.last = time.monotonic()

    def next(self):
        self.seen += 1

    def computed(self):
        self.done += 1
        now = time.monotonic()
        if self.bar_shows or now - self.last < self.every:
            return
        self.last = now
        left = (now - self.started) / self.done * (self.total - self.seen)
        print(f"gamma analysis: {self.seen} of {self.total} runs, about {max(1, round(left / 60))} min left",
              file=sys.stderr, flush=True)


def analyze_store(store: Store, data_dir=None, run_ids: set | None = None) -> tuple[list[dict], dict[str, str]]:
    """Every counted run of a set that trains gamma/beta, with a normalization layer and a stored
    model (only those of `run_ids` when given); and {run_id: why} of those left out: a stored model
    that is missing or does not load, or a run trained on other data than data_dir's (its stored
    fingerprint). A model deliberately not kept (an empty one) is not analysed and not damaged; its
    analysis, kept from before it was emptied by the same analysis code on the same data, is used.
    Each run's analysis is computed once and kept in the store, keyed by the analysis code, the model
    and the data (so a later report or analyze reads it back), with a progress bar while it computes."""
    out, left_out, todo = [], {}, []
    for row in store.runs(status=("finished", "diverged")):
        if run_ids is not None and row["run_id"] not in run_ids:
            continue
        c = config_of(row)
        if c["trainable"] in gamma.ANALYZED_SETS and c["norm"] != "none":
            todo.append(row)
    kept = store.analyses() if todo else {}
    log = Paced(len(todo))
    for row in tqdm(todo, desc="gamma analysis", unit="run", file=sys.stderr, disable=None, leave=False,
                    dynamic_ncols=True):
        log.next()
        blob = store.artefact(row["run_id"])
        if blob is None:
            left_out[row["run_id"]] = "its stored model is missing"
            continue
        if why := data_mismatch(row["config"]["dataset"], (row.get("versions") or {}).get("data"), data_dir):
            left_out[row["run_id"]] = f"trained on {why}: pass the --data-dir it was trained with"
            continue
        data = fingerprint(row["config"]["dataset"], data_dir)
        if not blob:  # a model not kept (pruned from a store carried in git): its analysis, where kept
            k = kept.get(row["run_id"])
            if k and k[0].startswith(gamma.analysis_code() + "-") and k[0].endswith("-" + data):
                out.append(k[1])
            continue
        key = "-".join((gamma.analysis_code(), hashlib.sha256(blob).hexdigest()[:16], data))
        if row["run_id"] in kept and kept[row["run_id"]][0] == key:
            out.append(kept[row["run_id"]][1])
            continue
        try:
            result = gamma.analyze_run(row, blob, data_dir)
        except ArtefactError as e:
            left_out[row["run_id"]] = str(e)
            continue
        store.keep_analysis(row["run_id"], key, result)
        log.computed()
        out.append(result)
    return out, left_out

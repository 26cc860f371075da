"""The Python API: what the command line does, as functions for notebooks and scripts.

    import bnonly
    r = bnonly.train(width=100, depth=2, trainable="bn", max_epochs=5)   # one run -> Result
    df = bnonly.sweep("quick", "runs/q", widths=[10], max_epochs=5)       # a grid -> DataFrame
    df = bnonly.results("runs/q")                                        # the store -> DataFrame
    html = bnonly.report("runs/q")                                       # figures, claims -> report.html
    model = bnonly.load_model("runs/q", df.run_id[0])                    # a trained nn.Module

The command line (cli.py) parses its flags and calls these same functions, so a keyword argument
is checked exactly as its flag is and fails with the same one-line message, raised as a
`bnonly.BnonlyError` (ConfigError for bad input, DataError, StoreError, OutputError).
"""
from __future__ import annotations

import dataclasses
import inspect
import multiprocessing as mp
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from .config import DEFAULT_PRESET, FIELD_TYPES, ConfigError, RunConfig, parse_value, resolve
from .data import load
from .device import describe_device, resolve_device
from .engine import Hooks, Result
from .engine import train as train_group
from .errors import out_of_memory
from .executors import SweepOptions
from .store import COLUMNS, INDEX_COLUMNS, Store, StoreError
from .sweep import SweepConfig, load_sweep, run_sweep, shipped_configs


def as_path(value, what: str) -> Path:
    """A path argument (str or os.PathLike, not empty), or a one-line ConfigError naming it."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value).strip():
        raise ConfigError(f"{what} {value!r}: expected a path")
    return Path(value)


@contextmanager
def memory_errors():
    """An allocation failure inside becomes the one-line OutOfMemory (a BnonlyError)."""
    try:
        yield
    except (RuntimeError, MemoryError) as e:
        err = out_of_memory(e)
        if err is None:
            raise
        raise err from None


# ---------------------------------------------------------------------------- one run
def train(config: RunConfig | None = None, *, preset: str | None = None, device: str = "auto",
          data_dir: str | None = None, progress: bool = True, **fields) -> Result:
    """Train one run and return its Result: test_accuracy, history (one dict per epoch), best_epoch,
    trainable_params, trainable_by_layer, status, device and `model`, the trained nn.Module.

    Give the run's fields as keywords (`width=100, trainable="bn"`, any RunConfig field), on top of
    a preset (default 'report'), or a RunConfig (keywords then change it). device 'auto' (default)
    takes the GPU when there is one. progress=False trains silently."""
    if config is not None:
        if preset is not None:
            raise ConfigError("give a RunConfig or a preset, not both")
        if not isinstance(config, RunConfig):
            raise ConfigError(f"config: expected a RunConfig, got {type(config).__name__}")
        cfg = resolve(DEFAULT_PRESET, **{**dataclasses.asdict(config), **fields})
    else:
        cfg = resolve(preset or DEFAULT_PRESET, **fields)
    device = resolve_device(device)
    data_dir = None if data_dir is None else str(as_path(data_dir, "--data-dir"))
    load(cfg.dataset, cfg.val_fraction, cfg.data_seed, cfg.subset, device, data_dir, cfg.normalize)  # cached: a data error comes first
    if progress:
        tqdm.write(describe_device(device), file=sys.stderr)
    bar = tqdm(total=0, unit="batch", file=sys.stderr, disable=not progress or None, leave=False, dynamic_ncols=True)

    def on_batch(epoch, b, n, m):
        if b == 1:
            bar.reset(total=n)
            bar.set_description(f"epoch {epoch}/{cfg.max_epochs}")
        bar.update(1)

    try:
        with memory_errors():
            (r,) = train_group([cfg], device=device, data_dir=data_dir, hooks=Hooks(batch=on_batch))
    finally:
        bar.close()
    return r


# ---------------------------------------------------------------------------- sweeps
def check_out_dir(out: str | os.PathLike) -> Path:
    """A results directory that is (or can become) a directory we can write."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a directory")
    existing = next((q for q in [p, *p.parents] if q.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ConfigError(f"--out {out}: cannot create or write it ({existing} is not a writable directory)")
    return p


def writable(path: str | os.PathLike, what: str) -> Path:
    """An output file path that can be written: checked before any work starts."""
    p = as_path(path, what)
    if p.is_dir():
        raise ConfigError(f"{what} {path}: is a directory; give a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"{what} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ConfigError(f"{what} {path}: not writable")
    return p


def sweep_config(config: str | os.PathLike | SweepConfig, overrides: list[str] | dict | None = None) -> SweepConfig:
    """A sweep: a shipped study, a TOML path or a SweepConfig, with overrides: `--set key=value`
    strings, or a dict of keys and values (the Python API's keywords)."""
    if isinstance(config, SweepConfig):
        return SweepConfig.from_dict({**config.to_dict(), **dict(overrides)}, source="sweep()") if overrides else config
    if isinstance(config, (str, os.PathLike)):
        return load_sweep(str(config), overrides, source="sweep()" if isinstance(overrides, dict) else "--set")
    raise ConfigError(f"config {type(config).__name__}: expected a shipped study name ({', '.join(shipped_configs())}), "
                      "a TOML path or a SweepConfig")


def run(config: str | os.PathLike | SweepConfig = "quick", out: str | os.PathLike | None = None,
        overrides: list[str] | dict | None = None, options: SweepOptions | None = None,
        progress: bool = True) -> tuple[Path, dict]:
    """Train the runs of a sweep (sweep_config) that the store in `out` (default runs/NAME) lacks:
    what `bnonly sweep` and bnonly.sweep() do; returns (out, stats)."""
    spec = sweep_config(config, overrides)
    out = check_out_dir(as_path(out, "--out") if out is not None else f"runs/{spec.name}")
    with memory_errors():
        return out, run_sweep(spec, out, options, quiet=not progress)


def check_main_guard(workers: int, caller) -> None:
    """workers > 1 starts processes that import the calling script again (multiprocessing's spawn):
    a script that calls sweep() at its top level, unguarded, would sweep again in every one of them
    and never finish. Refuse that in one line instead."""
    if workers <= 1 or caller is None or caller.f_code.co_name != "<module>":
        return
    name = caller.f_globals.get("__name__")
    message = ("bnonly.sweep(workers > 1) starts processes that import your script again: put the call "
               "under `if __name__ == \"__main__\":`")
    if name == "__mp_main__" or (mp.parent_process() is not None and name != "__main__"):
        raise ConfigError(message)  # we are such a process: stop before training anything
    try:
        source = inspect.getsource(caller)
    except (OSError, TypeError):
        return  # a notebook or the interactive prompt: nothing is imported again
    if name == "__main__" and "__name__" not in source:
        raise ConfigError(message)


OPTIONS = tuple(f.name for f in dataclasses.fields(SweepOptions))


def sweep(config: str | os.PathLike | SweepConfig = "quick", out: str | os.PathLike | None = None, *,
          progress: bool = True, **keywords):
    """Run (or resume) a sweep and return its runs as a DataFrame (see `results`).

    config: a shipped study (`bnonly sweep --help` lists them), a TOML path, or a SweepConfig.
    Keywords are SweepOptions (device, data_dir, workers, group_size, threads, estimate, executor,
    address, cpus_per_task, gpus_per_task: the flags of `bnonly sweep`) or override the config's
    keys, as `--set` does: `widths=[10, 100]`, `seeds=[0, 1]`, `max_epochs=5`. The store, the
    grouping, resuming and every check are the command line's (`run`)."""
    options = SweepOptions(**{k: v for k, v in keywords.items() if k in OPTIONS})  # typed: one line, before anything
    pandas()  # before any training: the result is a DataFrame
    check_main_guard(options.workers, inspect.currentframe().f_back)
    spec = sweep_config(config, {k: v for k, v in keywords.items() if k not in OPTIONS})
    out, _ = run(spec, out, options=options, progress=progress)
    return results(out, run_ids={c.run_id for c in spec.runs()})


# ---------------------------------------------------------------------------- results
def open_store(out: str | os.PathLike) -> Store:
    """The results store in a results directory, checked; one line when there is none."""
    return Store(Path(out) / "results.sqlite", create=False)


def pandas():
    try:
        import pandas as pd  # optional: the 'pandas' extra
    except ImportError:
        raise ConfigError("bnonly.results and bnonly.sweep return a pandas DataFrame: pip install "
                          "'bnonly[pandas]'") from None
    return pd


RESULT_COLUMNS = tuple(c for c in COLUMNS if c not in ("run_id", "config", *INDEX_COLUMNS))  # (the config's own columns)


def results(out: str | os.PathLike, run_ids=None):
    """The runs of a results directory as a pandas DataFrame, one row per run (ordered by run_id):
    run_id, every configuration field (model, width, depth, trainable, seed, lr, ...), then the
    metrics and bookkeeping of RESULT_COLUMNS. `history` holds the run's list of per-epoch dicts
    (pd.DataFrame(df.history[i]) is its curve) and `trainable_by_layer` a dict of counts per layer."""
    pd = pandas()
    rows = open_store(as_path(out, "out")).runs()
    if run_ids is not None:
        rows = [r for r in rows if r["run_id"] in run_ids]
    fields = [f.name for f in dataclasses.fields(RunConfig)]
    table = [{"run_id": r["run_id"], **{k: (r["config"] or {}).get(k) for k in fields},
              **{k: r.get(k) for k in RESULT_COLUMNS}} for r in rows]
    return pd.DataFrame(table, columns=["run_id", *fields, *RESULT_COLUMNS])


def check_where(where) -> dict:
    """`--where` as {field: value}: from "FIELD=VALUE" strings (the command line's) or a dict
    (values as typed, or as text); each field a run field, each value parsed as that field's type."""
    if where is None:
        return {}
    items = where.items() if isinstance(where, dict) else None
    if items is None:
        if isinstance(where, str):
            where = [where]
        if not isinstance(where, (list, tuple)) or not all(isinstance(w, str) for w in where):
            raise ConfigError(f"where {where!r}: expected a dict of field values or FIELD=VALUE strings")
        items = []
        for item in where:
            key, sep, value = item.partition("=")
            items.append((key.strip() if sep else None, value.strip(), item))
    else:
        items = [(k, v, f"{k}={v}") for k, v in items]
    out = {}
    for key, value, item in items:
        if key not in FIELD_TYPES:
            raise ConfigError(f"--where {item!r}: expected FIELD=VALUE with a run field ({', '.join(FIELD_TYPES)})")
        out[key] = parse_value(key, value if isinstance(value, str) else str(value))
    return out


def report(out: str | os.PathLike, where=None, data_dir: str | None = None, to: str | os.PathLike | None = None) -> Path:
    """Write the report of a results directory (figures, report.md/.html/.json, results.csv,
    the gamma analysis of the runs with stored models) into it, or into the directory `to`;
    returns the path of report.html. where={"max_epochs": 10} (or ["max_epochs=10"]) reports only
    the runs with those values."""
    from .reporting import write_report  # matplotlib: loaded when a report is asked for
    where = check_where(where)
    data_dir = None if data_dir is None else str(as_path(data_dir, "--data-dir"))
    store = open_store(as_path(out, "out"))
    dest = Path(out) if to is None else as_path(to, "--out")
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"--out {dest}: is a file; give a directory")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {dest}: {e.strerror or e}") from None
    if not os.access(dest, os.W_OK):
        raise ConfigError(f"--out {dest}: not writable")
    written = write_report(dest, where=where, analyze=True, data_dir=data_dir, store=store)
    return written["report.html"]


def load_model(out: str | os.PathLike, run_id: str):
    """The trained model of a stored run, as a plain nn.Module in eval mode (on the CPU)."""
    from .trainable import ArtefactError, rebuild
    store = open_store(as_path(out, "out"))
    if not isinstance(run_id, str):
        raise ConfigError(f"run {run_id!r}: expected a run id (a string)")
    rows = store.runs(run_id=run_id)
    if run_id in store.damaged:
        raise StoreError(f"{store.path}: run {run_id} is damaged ({store.damaged[run_id]})")
    blob = store.artefact(run_id)
    if not rows or blob is None:
        raise ConfigError(f"run {run_id!r}: no finished run with a stored model in {store.path}")
    try:
        return rebuild(RunConfig(**rows[0]["config"]), blob).eval()
    except ArtefactError as e:
        raise StoreError(f"{store.path}: run {run_id}: {e}") from None

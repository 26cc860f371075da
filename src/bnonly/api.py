"""The Python API: each operation of the command line as one function, for notebooks and scripts.

    import bnonly
    r = bnonly.train(width=100, depth=2, trainable="bn", max_epochs=5)   # one run -> Result
    s = bnonly.sweep("quick", "runs/q", widths=[10], max_epochs=5)       # a grid -> Sweep
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
from dataclasses import dataclass
from pathlib import Path

from .config.layers import SweepConfig
from .config.layers import load_sweep, parse_where, path_arg, run_config
from .config.options import OPTIONS, SweepOptions
from .config.run import RunConfig
from .errors import ConfigError, out_of_memory
from .store import COLUMNS, INDEX_COLUMNS, Store, StoreError

# The engine, the sweeps and the report load torch (and matplotlib): each function imports them
# after its arguments are checked, so a usage error answers at once.


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
          data_dir: str | None = None, progress: bool = True, **fields):
    """Train one run and return its Result: test_accuracy, history (one dict per epoch), best_epoch,
    trainable_params, trainable_by_layer, status, device and `model`, the trained nn.Module.

    Give the run's fields as keywords (`width=100, trainable="bn"`, any RunConfig field), on top of
    a preset (default 'report'), or a RunConfig (keywords then change it). device 'auto' (default)
    takes the GPU when there is one. progress=False trains silently."""
    cfg = run_config(config, preset, **fields)
    from tqdm.auto import tqdm

    from .engine.resident import load
    from .engine.device import describe_device, resolve_device
    from .engine import loop
    device = resolve_device(device)
    data_dir = None if data_dir is None else str(path_arg(data_dir, "--data-dir"))
    load(cfg.dataset, cfg.val_fraction, cfg.data_seed, cfg.subset, device, data_dir,
         cfg.normalize)  # cached: a data error comes first
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
            (r,) = loop.train([cfg], device=device, data_dir=data_dir, hooks=loop.Hooks(batch=on_batch))
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
    p = path_arg(path, what)
    if p.is_dir():
        raise ConfigError(f"{what} {path}: is a directory; give a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"{what} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ConfigError(f"{what} {path}: not writable")
    return p


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


@dataclass
class Sweep:
    """What bnonly.sweep() did: its results directory, the runs of its grid, and how many it trained
    (trained, failed, skipped: already in the store, by_others: trained by another sweep on it)."""
    out: Path
    run_ids: list
    stats: dict

    def results(self):
        """The grid's runs as a pandas DataFrame (see bnonly.results)."""
        return results(self.out, run_ids=set(self.run_ids))


def sweep(config: str | os.PathLike | SweepConfig = "quick", out: str | os.PathLike | None = None, *,
          sets: list[str] | None = None, progress: bool = True, **keywords) -> Sweep:
    """Run (or resume) a sweep: train the runs of its grid that the store in `out` (default
    runs/NAME) lacks. `bnonly sweep` and `bnonly reproduce` call this.

    config: a shipped study (`bnonly sweep --help` lists them), a TOML path, or a SweepConfig. `sets`:
    `--set KEY=VALUE` strings (TOML values). Keywords are SweepOptions (device, data_dir, workers,
    group_size, threads, estimate, executor, address, cpus_per_task, gpus_per_task: the flags of
    `bnonly sweep`), or override the config's keys as `sets` does: `widths=[10, 100]`, `max_epochs=5`."""
    options = SweepOptions(**{k: v for k, v in keywords.items() if k in OPTIONS})  # typed: one line, before anything
    check_main_guard(options.workers, inspect.currentframe().f_back)
    spec = load_sweep(config, sets, {k: v for k, v in keywords.items() if k not in OPTIONS})
    out = check_out_dir(path_arg(out, "--out") if out is not None else f"runs/{spec.name}")
    from .sweeps import driver
    with memory_errors():
        stats = driver.run(spec, out, options, quiet=not progress)
    return Sweep(out, [c.run_id for c in spec.runs()], stats)


# ---------------------------------------------------------------------------- results
def open_store(out: str | os.PathLike) -> Store:
    """The results store in a results directory, checked; one line when there is none."""
    return Store(Path(out) / "results.sqlite", create=False)


def pandas():
    try:
        import pandas as pd  # optional: the 'pandas' extra
    except ImportError:
        raise ConfigError("bnonly.results and Sweep.results return a pandas DataFrame: pip install "
                          "'bnonly[pandas]'") from None
    return pd


RESULT_COLUMNS = tuple(c for c in COLUMNS
                       if c not in ("run_id", "config", *INDEX_COLUMNS))  # (the config's own columns)


def results(out: str | os.PathLike, run_ids=None):
    """The runs of a results directory as a pandas DataFrame, one row per run (ordered by run_id):
    run_id, every configuration field (model, width, depth, trainable, seed, lr, ...), then the
    metrics and bookkeeping of RESULT_COLUMNS. `history` holds the run's list of per-epoch dicts
    (pd.DataFrame(df.history[i]) is its curve) and `trainable_by_layer` a dict of counts per layer."""
    pd = pandas()
    rows = open_store(path_arg(out, "out")).runs()
    if run_ids is not None:
        rows = [r for r in rows if r["run_id"] in run_ids]
    fields = [f.name for f in dataclasses.fields(RunConfig)]
    table = [{"run_id": r["run_id"], **{k: (r["config"] or {}).get(k) for k in fields},
              **{k: r.get(k) for k in RESULT_COLUMNS}} for r in rows]
    return pd.DataFrame(table, columns=["run_id", *fields, *RESULT_COLUMNS])


def report(out: str | os.PathLike, where=None, data_dir: str | None = None,
           to: str | os.PathLike | None = None) -> Path:
    """Write the report of a results directory (figures, report.md/.html/.json, results.csv,
    the gamma analysis of the runs with stored models) into it, or into the directory `to`;
    returns the path of report.html. where={"max_epochs": 10} (or ["max_epochs=10"]) reports only
    the runs with those values."""
    from .reports.build import write_report  # matplotlib: loaded when a report is asked for
    where = parse_where(where)
    data_dir = None if data_dir is None else str(path_arg(data_dir, "--data-dir"))
    store = open_store(path_arg(out, "out"))
    dest = output_dir(Path(out) if to is None else path_arg(to, "--out"))
    written = write_report(dest, where=where, analyze=True, data_dir=data_dir, store=store)
    return written["report.html"]


def output_dir(dest: Path) -> Path:
    """A directory to write into, made where missing; one line where it cannot be."""
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"--out {dest}: is a file; give a directory")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {dest}: {e.strerror or e}") from None
    if not os.access(dest, os.W_OK):
        raise ConfigError(f"--out {dest}: not writable")
    return dest


def analyze(out: str | os.PathLike, data_dir: str | None = None, to: str | os.PathLike | None = None) -> dict:
    """The gamma analysis of every analysable run of a results directory, on its own: figures into
    `to` (default OUT/analysis; staged, and replacing only what the previous analysis wrote, never a
    report's files), and {'runs', 'table' (header, rows), 'answers', 'figures', 'left_out' (runs
    whose model does not load), 'damaged' (rows that do not parse)}."""
    from .reports.build import write_analysis  # matplotlib: loaded when an analysis is asked for
    data_dir = None if data_dir is None else str(path_arg(data_dir, "--data-dir"))
    store = open_store(path_arg(out, "out"))
    dest = output_dir(Path(out) / "analysis" if to is None else path_arg(to, "--out"))
    result = write_analysis(dest, store, data_dir)
    return {**result, "damaged": store.read()[1], "dir": dest}


def export(out: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Every stored run as one table: Parquet where `path` ends in .parquet (the 'parquet' extra), CSV
    otherwise; never over the store's own file. Returns the path written."""
    dest = writable(path, "export")
    not_the_store(dest, out, "export")
    store = open_store(path_arg(out, "out"))
    return store.export_parquet(dest) if dest.suffix.lower() == ".parquet" else store.export_csv(dest)


def not_the_store(path: str | os.PathLike, store_dir, what: str) -> None:
    """An output path that is the store's own file (or its journal) would overwrite every result."""
    target = Path(path).resolve()
    store = (Path(store_dir) / "results.sqlite").resolve()
    if target == store or target.name.startswith(store.name + "-") and target.parent == store.parent:
        raise ConfigError(f"{what} {path}: is the results store itself; give another path")


def load_model(out: str | os.PathLike, run_id: str):
    """The trained model of a stored run, as a plain nn.Module in eval mode (on the CPU)."""
    from .engine.masks import ArtefactError, rebuild
    store = open_store(path_arg(out, "out"))
    if not isinstance(run_id, str):
        raise ConfigError(f"run {run_id!r}: expected a run id (a string)")
    rows, damaged = store.read(run_id=run_id)
    if run_id in damaged:
        raise StoreError(f"{store.path}: run {run_id} is damaged ({damaged[run_id]})")
    blob = store.artefact(run_id)
    if not rows or blob is None:
        raise ConfigError(f"run {run_id!r}: no finished run with a stored model in {store.path}")
    try:
        return rebuild(RunConfig(**rows[0]["config"]), blob).eval()
    except ArtefactError as e:
        raise StoreError(f"{store.path}: run {run_id}: {e}") from None

"""The results store: one SQLite file, one row per run, keyed by the run's config hash.

Rows are written only for ended runs (finished, diverged or failed), a whole group in one
transaction, so an interrupted sweep (Ctrl-C, kill -9, power loss) never leaves a half-written row.
Several processes may write the same store (SQLite locks; WAL journal).

A store checks itself when opened: a file that is not SQLite, fails SQLite's quick_check, lacks
the runs table, or carries a schema version this bnonly does not know is a `StoreError` (one line
naming the file), and nothing is written to it. The schema version lives in the meta table
(`schema_version`), so a later change can migrate older stores instead of misreading them.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import sqlite3
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

from . import files
from .config.run import RunConfig
from .errors import BnonlyError, ConfigError
from .registry.sets import SETS

# The runs table, column by column with its SQL type: the one statement of a result's fields. A
# run's summary (engine.Result.summary(), `bnonly train --json`) holds the RESULT_FIELDS; the
# store adds INDEX_COLUMNS (copied from the config, to query by), the error of a failed run and
# when the row was written. bnonly.results() has a column for each, and every config field.
COLUMNS = {
    "run_id": "TEXT PRIMARY KEY",
    "status": "TEXT NOT NULL",              # finished | diverged | failed
    "model": "TEXT", "width": "INTEGER", "depth": "INTEGER", "trainable": "TEXT", "seed": "INTEGER",
    "dataset": "TEXT",
    "test_accuracy": "REAL", "test_loss": "REAL", "val_accuracy": "REAL", "val_loss": "REAL",
    "best_epoch": "INTEGER", "epochs_run": "INTEGER",
    "trainable_params": "INTEGER", "total_params": "INTEGER",
    "seconds": "REAL", "group_size": "INTEGER", "device": "TEXT",
    "config": "TEXT NOT NULL",              # JSON: the full resolved RunConfig
    "trainable_by_layer": "TEXT",           # JSON: trained entries per module
    "history": "TEXT",                      # JSON: per-epoch train/val loss and accuracy, lr
    "versions": "TEXT",                     # JSON: library versions and the processor
    "error": "TEXT",                        # for failed runs
    "finished_at": "TEXT",
}
JSON_COLUMNS = ("config", "trainable_by_layer", "history", "versions")
INDEX_COLUMNS = ("model", "width", "depth", "trainable", "seed", "dataset")
RESULT_FIELDS = tuple(c for c in COLUMNS if c not in INDEX_COLUMNS + ("error", "finished_at"))
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs ({", ".join(f"{c} {t}" for c, t in COLUMNS.items())});
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
-- what each finished run trained (trainable.pack), written in the same transaction as its row
CREATE TABLE IF NOT EXISTS artefacts (run_id TEXT PRIMARY KEY, blob BLOB NOT NULL);
-- each run's gamma analysis (study/gamma.py), computed once and reused while its analysis code, its
-- model and its data are the same (`key`: their hashes)
CREATE TABLE IF NOT EXISTS analyses (run_id TEXT PRIMARY KEY, key TEXT NOT NULL, result TEXT NOT NULL);
-- runs being trained: a sweep claims each run before it trains it and keeps the claim alive (the column
-- keeps its first name, group_id, so that stores of every version share one layout; it holds a run_id)
CREATE TABLE IF NOT EXISTS leases (group_id TEXT PRIMARY KEY, owner TEXT NOT NULL, heartbeat REAL NOT NULL);
"""
ENDED = ("finished", "diverged")  # a re-launch skips these; failed runs are tried again
# A row replaces a stored one unless it would put a failed run over an ended one: a sweep whose group
# crashed never undoes the same run finished by another sweep on the store.
UPSERT = (f"INSERT INTO runs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
          f"ON CONFLICT(run_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in COLUMNS if c != 'run_id')} "
          f"WHERE excluded.status IN {ENDED} OR runs.status NOT IN {ENDED}")
SCHEMA_VERSION = 1  # stores written before versioning have the same layout: they are version 1


class StoreError(BnonlyError, RuntimeError):
    """A results store that cannot be used: corrupt, foreign, from a newer bnonly, or not writable."""


JSON_TYPES = {"config": dict, "trainable_by_layer": dict, "history": list, "versions": dict}
FRACTIONS = ("test_accuracy", "val_accuracy")
COUNTS = ("best_epoch", "epochs_run", "trainable_params", "total_params", "group_size")


def parse_row(raw: dict) -> tuple[dict | None, str | None]:
    """A stored row with its JSON columns decoded and its fields checked: (row, None), or (None,
    why) for a row whose fields do not parse or are out of range."""
    row = dict(raw)
    for c, kind in JSON_TYPES.items():
        if row.get(c) is None:
            continue
        try:
            row[c] = json.loads(row[c])
        except (TypeError, ValueError):
            return None, f"{c} is not JSON"
        if row[c] is not None and not isinstance(row[c], kind):
            return None, f"{c} is not a JSON {kind.__name__}"
    if row.get("status") not in ("finished", "diverged", "failed"):
        return None, f"unknown status {row.get('status')!r}"
    if row.get("trainable") is not None and row["trainable"] not in SETS:
        return None, f"unknown trainable set {row['trainable']!r}"
    if row.get("config") is None:
        return None, "it has no config"
    try:
        cfg = RunConfig(**row["config"])
    except (TypeError, ValueError) as e:  # (ConfigError is a ValueError)
        return None, f"its config is not a run's ({str(e).splitlines()[0]})"
    if row.get("run_id") != cfg.run_id:
        return None, f"run_id {row.get('run_id')!r} is not its config's ({cfg.run_id})"
    for c in INDEX_COLUMNS:  # copies of the config's fields, which every table groups by
        if row.get(c) != getattr(cfg, c):
            return None, f"{c} {row.get(c)!r} is not its config's ({getattr(cfg, c)!r})"
    if row["status"] == "finished" and row.get("test_accuracy") is None:
        return None, "a finished run without a test accuracy"
    for c in FRACTIONS:
        v = row.get(c)
        if v is not None and (isinstance(v, (str, bytes, bool)) or not (v != v or 0 <= v <= 1)):
            return None, f"{c} {v!r} is not a fraction in [0, 1]"
    for c in COUNTS:
        v = row.get(c)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            return None, f"{c} {v!r} is not a count"
    return row, None


def parse_json(text):
    """A JSON value, or None where the text is not JSON."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def read_csv(path: str | Path) -> tuple[list[dict], dict]:
    """A CSV that Store.export_csv wrote (a published results.csv) read back as stored rows: each
    column typed as COLUMNS says, then parse_row; (rows, {run_id: why} of those that do not parse)."""
    kinds = {c: int if t.startswith("INTEGER") else float if t.startswith("REAL") else str for c, t in COLUMNS.items()}
    raws, untyped = [], {}
    with open(path, newline="", encoding="utf-8") as fh:
        for record in csv.DictReader(fh):
            try:
                raws.append({c: None if record.get(c) in (None, "") else kinds[c](record[c]) for c in COLUMNS})
            except ValueError as e:
                untyped[record.get("run_id")] = str(e)
    rows, damaged = parse_rows(raws)
    return rows, {**untyped, **damaged}


def parse_rows(raws) -> tuple[list[dict], dict]:
    """(the rows that parse_row takes, {run_id: why} of those it does not)."""
    rows, damaged = [], {}
    for raw in raws:
        row, why = parse_row(raw)
        if why:
            damaged[raw.get("run_id")] = why
        else:
            rows.append(row)
    return rows, damaged


class Store:
    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path)
        existed = self.path.exists()
        # a store this process may not write (a read-only directory or file) is read as it is, and
        # anything that would write it is one line (_writing)
        self.read_only = existed and not (os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK))
        if existed:
            wal = self.path.with_name(self.path.name + "-wal")
            if self.read_only and wal.exists() and wal.stat().st_size > 0:  # (immutable reads would miss its rows)
                raise StoreError(f"{self.path}: read-only here, and its write-ahead log ({wal.name}) holds rows not yet "
                                 "in the file; copy the directory somewhere writable and read it there")
            self.check()
            if self.read_only:
                return
        elif not create:
            raise StoreError(f"{self.path}: no results store here (run `bnonly sweep` first)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"{self.path.parent}: cannot create the results directory ({e.strerror or e})") from None
        for attempt in range(200):  # WAL mode is stored in the file; switching waits for no busy timeout
            try:
                with self._tx() as db:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.executescript(SCHEMA)
                    if not existed or db.execute("SELECT 1 FROM meta WHERE key='schema_version'").fetchone() is None:
                        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                                   (json.dumps(SCHEMA_VERSION),))
                break
            except sqlite3.OperationalError as e:
                if "locked" in str(e) and attempt < 199:
                    time.sleep(0.05)
                    continue
                raise StoreError(f"{self.path}: cannot write the results store ({e})") from None
            except sqlite3.DatabaseError as e:
                raise StoreError(f"{self.path}: not a usable results store ({e})") from None

    def check(self) -> None:
        """The file is a bnonly store of a known schema version and passes SQLite's quick_check."""
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a directory, not a results store")
        # The file is read through SQLite only: a plain open()/close() of a database file would drop
        # the POSIX locks of any SQLite connection this process holds on it (SQLite's documented
        # "close() clears locks" hazard), and a WAL store can then be checkpointed under a reader.
        try:
            db = self._connect()  # read-write where it may: a killed writer's WAL is recovered
            try:
                ok = db.execute("PRAGMA quick_check").fetchall()
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                meta = dict(db.execute("SELECT key, value FROM meta").fetchall()) if "meta" in tables else {}
            finally:
                db.close()
        except sqlite3.DatabaseError as e:
            if "not a database" in str(e):
                raise StoreError(f"{self.path}: not a results store (not an SQLite file); move it away or use "
                                 "another --out") from None
            raise StoreError(f"{self.path}: corrupt results store ({e}); nothing was written to it") from None
        if ok != [("ok",)]:
            said = " ".join(" ".join(str(r[0]).split()) for r in ok)  # (its report spans lines: one line here)
            raise StoreError(f"{self.path}: corrupt results store (SQLite quick_check: "
                             f"{said if len(said) <= 200 else said[:200] + '...'}); nothing was written to it")
        if tables and "runs" not in tables:
            raise StoreError(f"{self.path}: an SQLite file, but not a bnonly results store (no runs table)")
        version = self._meta_values(meta).get("schema_version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise StoreError(f"{self.path}: damaged results store (meta schema_version {version!r} is not a version "
                             "number); nothing was written to it")
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: written by a newer bnonly (schema version {version}, this one reads "
                             f"{SCHEMA_VERSION}); upgrade bnonly")

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:  # immutable: SQLite takes no lock and writes no -shm file beside it
            return sqlite3.connect(f"{self.path.resolve().as_uri()}?immutable=1", uri=True)
        return sqlite3.connect(self.path, timeout=120)

    @contextmanager
    def _writing(self):
        """Around every write: a read-only store, a full disk or a lock held past the timeout is a
        StoreError in one line (SQLite rolls the transaction back: the rows stored before are intact)."""
        if self.read_only:
            raise StoreError(f"{self.path}: read-only here (the file or its directory cannot be written); copy the "
                             "store to a writable directory, or use another --out")
        try:
            yield
        except sqlite3.OperationalError as e:
            raise StoreError(f"{self.path}: cannot write the results store ({e}); the runs stored before are "
                             "intact") from None

    @contextmanager
    def _tx(self, immediate: bool = False):
        """A connection whose statements commit together (or not at all), closed afterwards; with
        `immediate`, the transaction holds the write lock from its first read (BEGIN IMMEDIATE), so
        that a read-then-write is atomic across processes."""
        db = self._connect()
        try:
            db.execute("PRAGMA synchronous=FULL")
            with db:
                if immediate:
                    db.execute("BEGIN IMMEDIATE")
                yield db
        finally:
            db.close()

    def ended_ids(self) -> set[str]:
        """The runs a re-launch skips: finished or diverged, not damaged, with their model."""
        return {r["run_id"] for r in self.read(status=ENDED, models=True)[0]}

    # ---------------------------------------------------------------- leases (concurrent sweeps)
    def claim(self, run_ids: list[str], owner: str, stale: float, gone=lambda owner: False) -> list[str]:
        """Take the leases of those runs that no other owner holds with a heartbeat newer than `stale`
        seconds (unless `gone(owner)`): the ids taken, in order; atomic across processes (BEGIN
        IMMEDIATE). A lease is per run, so two sweeps that group runs differently never train one twice."""
        now = time.time()
        with self._writing(), self._tx(immediate=True) as db:
            held = {}
            for i in range(0, len(run_ids), 500):  # (SQLite's limit on parameters per statement)
                part = run_ids[i:i + 500]
                held.update((r[0], (r[1], r[2])) for r in db.execute(
                    f"SELECT group_id, owner, heartbeat FROM leases WHERE group_id IN ({','.join('?' * len(part))})",
                    part))
            taken = [r for r in run_ids if r not in held or held[r][0] == owner or now - held[r][1] >= stale
                     or gone(held[r][0])]
            db.executemany("INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", [(r, owner, now) for r in taken])
        return taken

    def heartbeat(self, owner: str) -> None:
        with self._writing(), self._tx() as db:
            db.execute("UPDATE leases SET heartbeat = ? WHERE owner = ?", (time.time(), owner))

    def release(self, owner: str, run_ids: list[str] | None = None) -> None:
        """Give up the owner's leases: all of them, or those of run_ids."""
        with self._writing(), self._tx() as db:
            if run_ids is None:
                db.execute("DELETE FROM leases WHERE owner = ?", (owner,))
            else:
                db.executemany("DELETE FROM leases WHERE owner = ? AND group_id = ?", [(owner, r) for r in run_ids])

    def ids_since(self, since: str) -> set[str]:
        """Runs written at or after `since` (a finished_at timestamp), whatever their status."""
        with self._tx() as db:
            return {r[0] for r in db.execute("SELECT run_id FROM runs WHERE finished_at >= ?", (since,))}

    def write(self, rows: list[dict], owner: str | None = None):
        """Insert/replace whole rows (summary dicts from `engine.Result.summary()`), atomically, and
        give up `owner`'s leases of these runs in the same transaction. A failed row never
        replaces a finished or diverged one (UPSERT)."""
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        values = []
        for r in rows:
            cfg = r["config"]
            row = {**{k: cfg.get(k) for k in INDEX_COLUMNS}, **r, "finished_at": now}
            values.append([json.dumps(row.get(c)) if c in JSON_COLUMNS else row.get(c) for c in COLUMNS])
        # (an empty model is one deliberately not kept: rows made by hand, dense models kept out of git)
        blobs = [(r["run_id"], r["artefact"]) for r in rows if r.get("artefact") is not None and r.get("status") in ENDED]
        with self._writing(), self._tx() as db:  # one transaction: a row is never stored without its artefact
            db.executemany(UPSERT, values)
            db.executemany("INSERT OR REPLACE INTO artefacts VALUES (?, ?)", blobs)
            db.executemany("DELETE FROM analyses WHERE run_id = ?", [b[:1] for b in blobs])  # (of the model it replaced)
            if owner:
                db.executemany("DELETE FROM leases WHERE owner = ? AND group_id = ?", [(owner, r["run_id"]) for r in rows])

    def artefact(self, run_id: str) -> bytes | None:
        with self._tx() as db:
            row = db.execute("SELECT blob FROM artefacts WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def analyses(self) -> dict[str, tuple[str, dict]]:
        """{run_id: (key, analysis)} of the stored gamma analyses (one that does not parse is left out:
        it is computed again)."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'analyses'").fetchone() is None:
                return {}  # (a read-only store of an older bnonly has no such table)
            rows = db.execute("SELECT run_id, key, result FROM analyses").fetchall()
        return {run_id: (key, got) for run_id, key, result in rows if (got := parse_json(result)) is not None}

    def keep_analysis(self, run_id: str, key: str, result: dict) -> None:
        """Store a run's gamma analysis under `key`; a store that cannot be written here keeps none."""
        if self.read_only:
            return
        with self._writing(), self._tx() as db:
            db.execute("INSERT OR REPLACE INTO analyses VALUES (?, ?, ?)", (run_id, key, json.dumps(result)))

    def not_kept(self) -> set[str]:
        """The runs whose model was deliberately not kept (an empty one: prune_models, rows made by hand)."""
        with self._tx() as db:
            return {r[0] for r in db.execute("SELECT run_id FROM artefacts WHERE length(blob) = 0")}

    def prune_models(self, max_bytes: int) -> list[str]:
        """Keep a store small enough to carry in git: the stored models over max_bytes (dense ones:
        `all` at width 784 is about 20 MB) emptied, i.e. not kept (their runs stay ended and counted;
        their gamma analysis and export-model need them trained again); the WAL folded into the file
        and the file compacted (VACUUM). Returns the run ids pruned now. Safe beside a running sweep
        (SQLite's locks)."""
        with self._writing(), self._tx() as db:
            ids = [r[0] for r in db.execute("SELECT run_id FROM artefacts WHERE length(blob) > ?", (max_bytes,))]
            db.executemany("UPDATE artefacts SET blob = X'' WHERE run_id = ?", [(i,) for i in ids])
        with self._writing(), contextlib.closing(self._connect()) as db:
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return ids

    def set_meta(self, key: str, value):
        with self._writing(), self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def append_meta(self, key: str, item) -> None:
        """Append to a list in the meta table in one transaction (two sweeps ending together keep both)."""
        with self._writing(), self._tx(immediate=True) as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            items = parse_json(row[0]) if row else []
            items = (items if isinstance(items, list) else []) + [item]
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(items)))

    def meta(self) -> dict:
        with self._tx() as db:
            return self._meta_values(dict(db.execute("SELECT key, value FROM meta").fetchall()))

    def _meta_values(self, raw: dict) -> dict:
        """The meta table's JSON values; one that does not parse makes the store damaged (StoreError)."""
        out = {}
        for k, v in raw.items():
            try:
                out[k] = json.loads(v)
            except (TypeError, ValueError):
                raise StoreError(f"{self.path}: damaged results store (meta {k!r} is not JSON); nothing was written "
                                 "to it") from None
        return out

    def read(self, status: tuple[str, ...] | None = None, run_id: str | None = None,
             models: bool = False) -> tuple[list[dict], dict]:
        """(stored runs as dicts, JSON columns decoded, ordered by run_id; optionally only some, and
        {run_id: why} of the rows left out: whose fields do not parse or are out of range, a
        hand-edited or damaged row, which a re-launched sweep trains again). With `models`, a
        finished or diverged run whose stored model is missing or damaged (its compressed stream
        fails zlib's checksum) is left out too, and trained again by the next sweep; an empty one
        is a model deliberately not kept (prune_models) and counts."""
        rows, damaged = parse_rows(self._raw_rows(status, run_id))
        hurt, ended = {}, {r["run_id"] for r in rows if models and r["status"] in ENDED}
        if ended:
            with self._tx() as db:  # one pass over the models, one at a time in memory
                for i, blob in db.execute("SELECT run_id, blob FROM artefacts"):
                    if i in ended:
                        ended.discard(i)
                        try:
                            zlib.decompress(blob) if blob else None
                        except zlib.error as e:
                            hurt[i] = f"its stored model is damaged (zlib: {e})"
            hurt.update((i, "its stored model is missing") for i in ended)
        return [r for r in rows if r["run_id"] not in hurt], {**damaged, **hurt}

    def runs(self, status: tuple[str, ...] | None = None, run_id: str | None = None) -> list[dict]:
        """The stored runs that parse (read() says which did not)."""
        return self.read(status, run_id)[0]

    def _raw_rows(self, status=None, run_id=None) -> list[dict]:
        where, args = [], []
        if status:
            where.append(f"status IN ({','.join('?' * len(status))})")
            args += list(status)
        if run_id:
            where.append("run_id = ?")
            args.append(run_id)
        q = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        with self._tx() as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(q + " ORDER BY run_id", args)]

    def export_csv(self, path: str | Path) -> Path:
        """Every stored row as it is (damaged ones too: an export is a copy, not a statistic)."""
        rows = self._raw_rows()

        def produce(fh):
            w = csv.writer(fh)
            w.writerow(COLUMNS)
            for r in rows:
                w.writerow([r.get(c) for c in COLUMNS])
        return files.write(path, produce, "export", mode="w")

    def export_parquet(self, path: str | Path) -> Path:
        """Needs the optional 'parquet' extra (pandas and pyarrow), imported here only."""
        try:
            import pandas as pd
            import pyarrow  # noqa: F401
        except ImportError as e:
            raise ConfigError(f"Parquet export needs the 'parquet' extra ({e.name} is missing): "
                             "pip install 'bnonly[parquet]'") from None
        df = pd.DataFrame([{c: r.get(c) for c in COLUMNS} for r in self._raw_rows()], columns=list(COLUMNS))
        return files.write(path, df.to_parquet, "export")

"""The results store: one SQLite file, one row per run, keyed by the run's config hash.

Rows are written only for ended runs (finished, diverged or failed), a whole group in one
transaction, so an interrupted sweep (Ctrl-C, kill -9, power loss) never leaves a half-written row.
Several processes may write the same store (SQLite locks; WAL journal).
"""
from __future__ import annotations

import csv
import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,              -- finished | diverged | failed
    model TEXT, width INTEGER, depth INTEGER, trainable TEXT, seed INTEGER, dataset TEXT,
    test_accuracy REAL, test_loss REAL, val_accuracy REAL, val_loss REAL,
    best_epoch INTEGER, epochs_run INTEGER,
    trainable_params INTEGER, total_params INTEGER,
    seconds REAL, group_size INTEGER, device TEXT,
    config TEXT NOT NULL,              -- JSON: the full resolved RunConfig
    trainable_by_layer TEXT,           -- JSON
    history TEXT,                      -- JSON: per-epoch train/val loss and accuracy
    versions TEXT,                     -- JSON: library versions
    error TEXT,                        -- for failed runs
    finished_at TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
-- what each finished run trained (trainable.pack), written in the same transaction as its row
CREATE TABLE IF NOT EXISTS artefacts (run_id TEXT PRIMARY KEY, blob BLOB NOT NULL);
"""
COLUMNS = ["run_id", "status", "model", "width", "depth", "trainable", "seed", "dataset",
           "test_accuracy", "test_loss", "val_accuracy", "val_loss", "best_epoch", "epochs_run",
           "trainable_params", "total_params", "seconds", "group_size", "device",
           "config", "trainable_by_layer", "history", "versions", "error", "finished_at"]
JSON_COLUMNS = ("config", "trainable_by_layer", "history", "versions")
ENDED = ("finished", "diverged")  # a re-launch skips these; failed runs are tried again


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(200):  # WAL mode is stored in the file; switching waits for no busy timeout
            try:
                with self._tx() as db:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.executescript(SCHEMA)
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or attempt == 199:
                    raise
                time.sleep(0.05)

    @contextmanager
    def _tx(self):
        """A connection whose statements commit together (or not at all), closed afterwards."""
        db = sqlite3.connect(self.path, timeout=120)
        try:
            db.execute("PRAGMA synchronous=FULL")
            with db:
                yield db
        finally:
            db.close()

    def ended_ids(self) -> set[str]:
        with self._tx() as db:
            return {r[0] for r in db.execute(f"SELECT run_id FROM runs WHERE status IN {ENDED}")}

    def write(self, rows: list[dict]):
        """Insert/replace whole rows (summary dicts from `engine.Result.summary()`), atomically."""
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        values = []
        for r in rows:
            cfg = r["config"]
            row = {**{k: cfg.get(k) for k in ("model", "width", "depth", "trainable", "seed", "dataset")},
                   **r, "finished_at": now}
            values.append([json.dumps(row.get(c)) if c in JSON_COLUMNS else row.get(c) for c in COLUMNS])
        blobs = [(r["run_id"], r["artefact"]) for r in rows if r.get("artefact")]
        with self._tx() as db:  # one transaction: a row is never stored without its artefact
            db.executemany(f"INSERT OR REPLACE INTO runs ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})",
                           values)
            db.executemany("INSERT OR REPLACE INTO artefacts VALUES (?, ?)", blobs)

    def artefact(self, run_id: str) -> bytes | None:
        with self._tx() as db:
            row = db.execute("SELECT blob FROM artefacts WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_meta(self, key: str, value):
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self) -> dict:
        with self._tx() as db:
            return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}

    def runs(self, status: tuple[str, ...] | None = None, run_id: str | None = None) -> list[dict]:
        """Stored runs as dicts (JSON columns decoded), ordered by run_id; optionally only some."""
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
            rows = [dict(r) for r in db.execute(q + " ORDER BY run_id", args)]
        for r in rows:
            for c in JSON_COLUMNS:
                r[c] = json.loads(r[c]) if r[c] is not None else None
        return rows

    def export_csv(self, path: str | Path) -> Path:
        rows = self.runs()
        path = Path(path)
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(COLUMNS)
            for r in rows:
                w.writerow([json.dumps(r[c]) if c in JSON_COLUMNS else r[c] for c in COLUMNS])
        return path

    def export_parquet(self, path: str | Path) -> Path:
        try:
            import pandas as pd
        except ImportError:
            from .config import ConfigError
            raise ConfigError("Parquet export needs the 'parquet' extra: pip install 'bnonly[parquet]'") from None
        rows = self.runs()
        df = pd.DataFrame([{c: (json.dumps(r[c]) if c in JSON_COLUMNS else r[c]) for c in COLUMNS} for r in rows])
        df.to_parquet(path)
        return Path(path)

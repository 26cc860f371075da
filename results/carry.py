"""Stage a study computed in place under results/ (results/claims: its sweep runs with --out there,
across allocations) for a commit, while its sweep may still be writing it: a consistent copy of its
store (SQLite's online backup, so no write of the running sweep is torn or half in the WAL) with the
stored models over 1 MB emptied (the dense width-784 `all`/`all-nobn` models, 1.2 to 4.9 million
weights: not kept in git; the report counts them, and their gamma analyses stay) and compacted, staged as the store's content; beside it the
checkpoints of groups in progress that are small enough to carry (the frozen-weight ones; a dense
group's is tens of MB and stays here: that group starts again in the next allocation) and the
study's other files. The store here keeps its models, and git ignores its changes from then on
(skip-worktree: a `git add -A` never commits the live file), so this script is the way it is committed.

    python results/carry.py claims && git commit -m "claims study: ..."
    python results/carry.py claims-report-code --no-dense-models   # (a second study: its store stays small)
"""
from __future__ import annotations

import argparse
import sqlite3
import subprocess
import tempfile
from pathlib import Path

from bnonly.registry.sets import SETS
from bnonly.store import Store

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent  # (results/ is at the repository's root)
IGNORED = """# a study computed in place (results/carry.py stages what is carried)
checkpoints/
results.sqlite-wal
results.sqlite-shm
*.svg
report.html
analysis/
.report-*/
.analysis-*/
"""  # what git leaves out of a study's directory (its .gitignore, written by the first carry)
MODEL_BYTES = 1 << 20       # models over this are not kept in git
CHECKPOINT_BYTES = 5 << 20  # checkpoints over this are not carried


def git(*args: str) -> str:
    """git in the checkout that holds this script, paths relative to its root."""
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True, cwd=ROOT).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", help="its directory under results/ (e.g. claims)")
    ap.add_argument("--no-dense-models", action="store_true",
                    help="carry no model of a set that trains hidden weights (`all`, `all-nobn`), however small: "
                         "their runs count, and a gamma analysis computed before (a report on the live store) stays")
    args = ap.parse_args()
    study = HERE / args.study
    live = Store(study / "results.sqlite", create=False)  # (checked, and its schema made)
    if not (study / ".gitignore").exists():  # a study's first carry: its live files stay out of git
        (study / ".gitignore").write_text(IGNORED)
    # the checkpoints first: a group that ends while this runs then has its rows in the store's copy
    # (a checkpoint is written by a rename, so each file read here is whole; one that vanished is skipped)
    carried, too_large = [], 0
    for path in sorted((study / "checkpoints").glob("*.ckpt")):
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            continue
        if len(blob) > CHECKPOINT_BYTES:
            too_large += 1
            continue
        rel = str(path.relative_to(ROOT))
        sha = subprocess.run(["git", "hash-object", "-w", "--stdin", f"--path={rel}"], input=blob, check=True,
                             capture_output=True, cwd=ROOT).stdout.decode().strip()
        carried.append((sha, rel))
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "results.sqlite"
        source, target = sqlite3.connect(live.path, timeout=120), sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        with sqlite3.connect(copy) as db:  # the running sweep's claims are its own, not the commit's
            db.execute("DELETE FROM leases")
        if args.no_dense_models:
            dense = [name for name, s in SETS.items() if "hidden" in s.parts]
            with sqlite3.connect(copy) as db:
                db.execute(f"UPDATE artefacts SET blob = X'' WHERE run_id IN (SELECT run_id FROM runs WHERE trainable "
                           f"IN ({','.join('?' * len(dense))}))", dense)
        store = Store(copy)
        pruned = store.prune_models(MODEL_BYTES)
        done = len(store.runs(status=("finished", "diverged")))
        store_path = str((study / "results.sqlite").relative_to(ROOT))
        blob = git("hash-object", "-w", f"--path={store_path}", str(copy))
    git("add", "-A", "--", str(study.relative_to(ROOT)), f":!{store_path}")  # the report and the rest; deletions too
    git("update-index", "--add", "--cacheinfo", f"100644,{blob},{store_path}")
    # the live store (with its dense models, written by the sweep) never goes into git by a `git add -A`:
    # git takes the path's content from the index until this checkout says otherwise
    git("update-index", "--skip-worktree", store_path)
    for sha, rel in carried:  # (checkpoints/ is ignored: only these are carried)
        git("update-index", "--add", "--cacheinfo", f"100644,{sha},{rel}")
    print(f"{study}: {done} runs stored; {len(pruned)} model(s) over 1 MB not carried"
          f"{' (nor any dense one)' if args.no_dense_models else ''}; {len(carried)} checkpoint(s) "
          f"staged, {too_large} too large to carry (their groups start again)")


if __name__ == "__main__":
    main()

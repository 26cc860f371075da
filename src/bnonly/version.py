"""The code's version: the package version (setuptools-scm derives it from the repository's history
when bnonly is installed) and, in a git checkout, the commit and whether the tree had uncommitted
changes. Every run stores it (engine/loop.py: versions), so a store says which code made each number.
"""
from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

try:
    __version__ = metadata.version("bnonly")
except metadata.PackageNotFoundError:  # a source tree on PYTHONPATH, never installed
    __version__ = "0+unknown"

CHECKOUT = Path(__file__).resolve().parents[2]  # the repository root, where bnonly runs from a checkout


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(CHECKOUT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@lru_cache(maxsize=None)
def code_version() -> dict:
    """{'bnonly': the package version, 'commit': the checkout's commit or None, 'dirty': whether
    tracked files differ from it (None outside a checkout)}; read once per process. A copy of the
    tree without its git history (a remote machine's) names its commit in BNONLY_COMMIT."""
    if (CHECKOUT / ".git").exists():
        commit = _git("rev-parse", "HEAD")
        dirty = None if commit is None else bool(_git("status", "--porcelain", "--untracked-files=no"))
    else:
        commit, dirty = os.environ.get("BNONLY_COMMIT") or None, None
    return {"bnonly": __version__, "commit": commit, "dirty": dirty}


def label(versions: dict | None) -> str:
    """A run's code version in one phrase: 'commit 24731ec', 'commit 24731ec with uncommitted
    changes', 'bnonly 0.1.dev3+g24731ec' (no checkout), 'bnonly 0.1.0' (a store of older runs)."""
    versions = versions or {}
    if versions.get("commit"):
        return f"commit {versions['commit'][:7]}" + (" with uncommitted changes" if versions.get("dirty") else "")
    return f"bnonly {versions.get('bnonly', 'unknown')}"

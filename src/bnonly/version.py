"""The code's provenance, stored with every run (engine/loop.py: versions) and in published made.json:
- `code`: a hash of the code this process imports, bnonly's .py files and its shipped studies by
  relative path: the same for a checkout, a wheel or a Ray worker that run the same code, whatever
  installed it;
- `commit` and `dirty`, where bnonly runs from a git checkout that tracks its own files: the commit,
  and whether src/, configs/ or pyproject.toml differ from it, untracked files included (docs/ and
  results/ do not count); a copy of the tree without its history (a remote machine's) is told its
  commit in BNONLY_COMMIT, and its `dirty` is unknown;
- `bnonly`: the package version from the same place: in a checkout, setuptools-scm's scheme read
  from git now (install-time metadata goes stale as commits land), else the installed distribution's.
Nothing here runs git until code_version() is called: `bnonly --help` and `--version` run none.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path

try:
    __version__ = metadata.version("bnonly")
except metadata.PackageNotFoundError:  # a source tree on PYTHONPATH, never installed
    __version__ = "0+unknown"

PACKAGE = Path(__file__).resolve().parent
WHAT_COUNTS = ("src", "configs", "pyproject.toml")  # what makes a checkout dirty, from its root


def configs_dir() -> Path:
    """The shipped studies: the package data `bnonly.configs` of an install (a wheel's too); from a
    source tree on PYTHONPATH (no install), the repository's configs/ folder."""
    try:
        return Path(str(resources.files("bnonly.configs")))
    except ModuleNotFoundError:
        return PACKAGE.parents[1] / "configs"


@lru_cache(maxsize=None)
def code_hash() -> str:
    """SHA-256 (16 hex digits) of bnonly's .py files and shipped .toml studies, each by its path
    relative to its folder: the code a process runs, not how it got there."""
    h = hashlib.sha256()
    configs = configs_dir()  # a checkout's configs/ beside src/, a wheel's bnonly/configs/: named alike
    files = [(f"bnonly/{p.relative_to(PACKAGE).as_posix()}", p) for p in PACKAGE.rglob("*.py")
             if p.parent.resolve() != configs.resolve()]
    files += [(f"configs/{p.name}", p) for p in configs.iterdir() if p.suffix in (".toml", ".py")]
    for name, p in sorted(set(files)):
        h.update(name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@lru_cache(maxsize=None)
def checkout() -> Path | None:
    """The root of the git repository that tracks this very file (a source checkout), else None: a
    wheel in site-packages, or a copy inside another repository that does not track it."""
    top = _git(PACKAGE, "rev-parse", "--show-toplevel")
    if top is None:
        return None
    try:
        rel = Path(__file__).resolve().relative_to(Path(top).resolve())
    except ValueError:
        return None
    return Path(top) if _git(Path(top), "ls-files", "--error-unmatch", rel.as_posix()) is not None else None


def _scm_version(root: Path, commit: str, dirty: bool) -> str:
    """setuptools-scm's version of the commit (no tags: the fallback's next patch, .devN with N the
    commit count, +g and the short hash), read from git now."""
    count = _git(root, "rev-list", "--count", "HEAD") or "0"
    base = re.match(r"\d+\.\d+\.\d+", __version__)
    return f"{base.group(0) if base else '0.1.1'}.dev{count}+g{commit[:9]}" + (".dirty" if dirty else "")


@lru_cache(maxsize=None)
def code_version() -> dict:
    """{'bnonly', 'commit', 'dirty', 'code'} (the module docstring says what each is); read once per
    process."""
    root = checkout()
    if root is None:
        return {"bnonly": __version__, "commit": os.environ.get("BNONLY_COMMIT") or None, "dirty": None,
                "code": code_hash()}
    commit = _git(root, "rev-parse", "HEAD")
    project = PACKAGE.parents[1]  # src/bnonly -> the project's root (the repository's, or a vendored copy's)
    paths = [str(project / p) for p in WHAT_COUNTS]
    dirty = None if commit is None else bool(_git(root, "status", "--porcelain", "--untracked-files=all", "--",
                                                 *paths))
    return {"bnonly": _scm_version(root, commit, dirty) if commit else __version__, "commit": commit,
            "dirty": dirty, "code": code_hash()}


def label(versions: dict | None) -> str:
    """A run's code version in one phrase: 'commit 24731ec', 'commit 24731ec with uncommitted
    changes (code 1f0c2a9b)' (two dirty trees are two versions), 'bnonly 0.1.dev3+g24731ec' (no
    checkout), 'bnonly 0.1.0' (a store of older runs)."""
    versions = versions or {}
    if versions.get("commit"):
        changed = versions.get("dirty") and (f" with uncommitted changes (code {versions['code'][:8]})"
                                             if versions.get("code") else " with uncommitted changes")
        return f"commit {versions['commit'][:7]}" + (changed or "")
    return f"bnonly {versions.get('bnonly', 'unknown')}"

"""The code's version in every run: stored, printed by `bnonly train --json`, said by a sweep that
adds runs of another version to a store, and listed by the report."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from bnonly.cli import main
from bnonly.store import Store
from bnonly.version import checkout, code_hash, code_version, label
from bnonly.sweeps.driver import stamped

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import json, bnonly.version as v; print(json.dumps(v.code_version()))"


TINY = ["--set", 'models=["mlp"]', "--set", "widths=[8]", "--set", "depths=[1]", "--set", 'trainable=["bn"]',
        "--set", "subset=600", "--set", "max_epochs=1", "--no-estimate"]


def test_the_version_is_the_checkouts_commit():
    v = code_version()
    assert v["bnonly"] and v["code"] == code_hash() and len(v["code"]) == 16
    if checkout() is not None:  # a clone, as CI runs: the commit and whether the tree is dirty
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert v["commit"] == head.stdout.strip() and isinstance(v["dirty"], bool)
        assert v["bnonly"].endswith("+g" + v["commit"][:9] + (".dirty" if v["dirty"] else ""))  # git's, not pip's
    assert label({"commit": "0123456789", "dirty": True}) == "commit 0123456 with uncommitted changes"
    assert label({"commit": "0123456789", "dirty": True, "code": "abcdef0123456789"}) == \
        "commit 0123456 with uncommitted changes (code abcdef01)"
    assert label({"bnonly": "0.1.0"}) == "bnonly 0.1.0" and label(None) == "bnonly unknown"


def probe(src: Path, cwd: Path) -> dict:
    """code_version() of the bnonly under src, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    env.pop("BNONLY_COMMIT", None)
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_dirty_means_the_code_changed_and_only_then(tmp_path):
    """In a clone: an untracked .py file under src/ makes the tree dirty; edits under docs/ or
    results/ do not (they used to, and new files did not)."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    for part in ("src", "configs"):  # this code, committed in the clone (this checkout's may not be yet)
        shutil.rmtree(clone / part)
        shutil.copytree(ROOT / part, clone / part, ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-C", str(clone), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run(git + ["add", "-A", "src", "configs"], check=True)
    subprocess.run(git + ["commit", "-qm", "this code", "--allow-empty"], check=True)
    v = probe(clone / "src", tmp_path)
    assert v["dirty"] is False and v["commit"] == subprocess.run(
        ["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (clone / "docs" / "study.md").write_text("edited\n")
    (clone / "results" / "new.json").write_text("{}\n")
    assert probe(clone / "src", tmp_path)["dirty"] is False
    (clone / "src" / "bnonly" / "extra.py").write_text("X = 1\n")
    changed = probe(clone / "src", tmp_path)
    assert changed["dirty"] is True and changed["code"] != v["code"]


def test_a_copy_inside_another_repository_names_no_commit(tmp_path):
    """bnonly vendored into a repository that does not track it: no commit (it reported the host's,
    clean), and its code hash is the code's."""
    host = tmp_path / "host"
    subprocess.run(["git", "init", "-q", str(host)], check=True)
    (host / "README").write_text("host\n")
    subprocess.run(["git", "-C", str(host), "add", "README"], check=True)
    subprocess.run(["git", "-C", str(host), "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x"],
                   check=True)
    vendored = host / "vendor"
    shutil.copytree(ROOT / "src", vendored / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "configs", vendored / "configs", ignore=shutil.ignore_patterns("__pycache__"))
    v = probe(vendored / "src", tmp_path)
    assert v["commit"] is None and v["dirty"] is None and v["code"] == code_hash()


def test_help_and_version_run_no_git(tmp_path):
    """A `git` first on PATH that leaves a mark: `bnonly --help` and `--version` never call it."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text(f"#!/bin/sh\ntouch {tmp_path / 'called'}\nexit 1\n")
    (fake / "git").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    for argv in (["--help"], ["--version"], ["sweep", "--help"]):
        r = subprocess.run([sys.executable, "-m", "bnonly", *argv], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    assert not (tmp_path / "called").exists()
    r = subprocess.run([sys.executable, "-m", "bnonly", "--version"], env=env, capture_output=True, text=True)
    assert r.stdout.strip().endswith(f"(code {code_hash()})")


def test_a_sweep_row_names_the_drivers_code_and_the_workers_machine():
    worker = {"code": "0" * 16, "commit": None, "dirty": None, "bnonly": "0.1.0", "cpu_capability": "AVX2",
              "device_name": "a worker"}
    row = stamped({"run_id": "r", "versions": worker})
    assert {k: row["versions"][k] for k in code_version()} == code_version()
    assert row["versions"]["worker_code"] == "0" * 16 and row["versions"]["device_name"] == "a worker"
    assert "worker_code" not in stamped({"versions": {**worker, "code": code_hash()}})["versions"]


def test_train_json_shows_the_code_version(capsys):
    assert main(["train", "--width", "8", "--depth", "1", "--subset", "600", "--epochs", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {k: res["versions"][k] for k in code_version()} == code_version()
    assert res["versions"]["cpu_capability"] and res["versions"]["threads"] >= 1


def test_a_store_of_two_code_versions_is_said_by_the_sweep_and_listed_by_the_report(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sweep", "quick", "--out", str(out), "--set", "seeds=[0]"] + TINY) == 0
    (row,) = Store(out / "results.sqlite").runs()
    with sqlite3.connect(out / "results.sqlite") as db:  # the run as an older bnonly wrote it: no commit
        db.execute("UPDATE runs SET versions = ? WHERE run_id = ?",
                   (json.dumps({**row["versions"], "bnonly": "0.1.0", "commit": None, "dirty": None}), row["run_id"]))
    capsys.readouterr()
    assert main(["sweep", "quick", "--out", str(out), "--set", "seeds=[0,1]"] + TINY) == 0
    err = capsys.readouterr().err
    mine = label(code_version())
    assert f"holds runs of other code versions (bnonly 0.1.0: 1 run); this sweep adds runs of {mine}" in err
    assert main(["report", str(out)]) == 0
    doc = json.loads((out / "report.json").read_text())
    assert doc["code_versions"] == {"bnonly 0.1.0": 1, mine: 1}
    assert "These runs mix 2 code versions: " in (out / "report.md").read_text()


def test_a_sweep_records_the_environment_that_changes_how_it_runs(tmp_path, monkeypatch, capsys):
    """BNONLY_* variables decide how groups stack, what they cache, the leases' timing: each sweep
    names them and keeps them in its store's meta."""
    monkeypatch.setenv("BNONLY_ONE_STACK_WEIGHTS", "20000")  # the CPU default: the same runs, said
    out = tmp_path / "s"
    assert main(["sweep", "quick", "--out", str(out), "--set", "seeds=[0]"] + TINY) == 0
    assert "environment (recorded with the sweep): " in capsys.readouterr().err
    assert Store(out / "results.sqlite").meta()["environment"]["BNONLY_ONE_STACK_WEIGHTS"] == "20000"

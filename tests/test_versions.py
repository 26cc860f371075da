"""The code's version in every run: stored, printed by `bnonly train --json`, said by a sweep that
adds runs of another version to a store, and listed by the report."""
import json
import sqlite3
import subprocess

from bnonly.cli import main
from bnonly.store import Store
from bnonly.version import CHECKOUT, code_version, label

TINY = ["--set", 'models=["mlp"]', "--set", "widths=[8]", "--set", "depths=[1]", "--set", 'trainable=["bn"]',
        "--set", "subset=600", "--set", "max_epochs=1", "--no-estimate"]


def test_the_version_is_the_checkouts_commit():
    v = code_version()
    assert v["bnonly"]
    if (CHECKOUT / ".git").exists():  # a clone, as CI runs: the commit and whether the tree is dirty
        head = subprocess.run(["git", "-C", str(CHECKOUT), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert v["commit"] == head.stdout.strip() and isinstance(v["dirty"], bool)
    assert label({"commit": "0123456789", "dirty": True}) == "commit 0123456 with uncommitted changes"
    assert label({"bnonly": "0.1.0"}) == "bnonly 0.1.0" and label(None) == "bnonly unknown"


def test_train_json_shows_the_code_version(capsys):
    assert main(["train", "--width", "8", "--depth", "1", "--subset", "600", "--epochs", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {k: res["versions"][k] for k in ("bnonly", "commit", "dirty")} == code_version()


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

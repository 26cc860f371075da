"""The study's own results, kept as data under results/: the README's headline and times are their
numbers, and each published study says which code, machine and command made it."""
import csv
import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
README = (ROOT / "README.md").read_text()


def publish():
    spec = importlib.util.spec_from_file_location("publish", RESULTS / "publish.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def published() -> list[Path]:
    return sorted(p.parent for p in RESULTS.glob("*/made.json"))


@pytest.mark.parametrize("study", published(), ids=lambda p: p.name)
def test_a_published_study_has_its_report_its_runs_and_its_maker(study):
    made = json.loads((study / "made.json").read_text())
    doc = json.loads((study / "report.json").read_text())
    assert (study / "report.md").is_file() and (study / "results.csv").is_file()
    assert made["command"] and made["machines"] and made["commit"]
    if len(made["code"]) > 1:  # computed in parts whose code changed: every run trained again shows it did not move
        recheck = json.loads((study / "recheck.json").read_text())
        assert recheck["differ"] == 0 and recheck["identical"] == made["runs"] and recheck["epochs"] >= 1
        with (study / "results.csv").open(newline="") as fh:  # ... these very runs
            assert {i for g in recheck["checked"] for i in g["run_ids"]} == {r["run_id"] for r in csv.DictReader(fh)}
    with (study / "results.csv").open(newline="") as fh:
        assert made["runs"] == len(list(csv.DictReader(fh))) > 0
    assert doc["code_versions"] == made["code"]  # the report names the code version its runs share
    for image in re.findall(r"\(([\w.-]+\.(?:png|svg))\)", (study / "report.md").read_text()):
        assert (study / image).is_file(), image  # every linked figure is published (the SVGs are not linked)


def test_the_readme_headline_is_results_quick():
    doc = json.loads((RESULTS / "quick" / "report.json").read_text())
    made = json.loads((RESULTS / "quick" / "made.json").read_text())
    assert publish().headline_table(doc) in README
    minutes = made["wall_seconds"] / 60
    assert f"at commit\n{made['commit'][:7]}" in README or f"at commit {made['commit'][:7]}" in README
    assert f"in {minutes:.1f} minutes" in README and f"| {minutes:.1f} min (`make reproduce`) |" in README
    assert f"takes about {minutes:.0f} minutes" in README
    labels = {c["id"]: c["label"] for c in doc["claims"]}
    assert labels[1] == "held at 4 of the report's 49 cells (widths 10, 100; depths 2, 4)"
    assert labels[4] == "inconclusive" and all(labels[i] == "not measured" for i in (2, 3, 5, 6))
    assert "results/quick/bn_vs_random.png" in README and (RESULTS / "quick" / "bn_vs_random.png").is_file()


def test_the_six_verdicts_table_and_the_readme_once_the_claims_study_is_published():
    """publish.verdicts_table gives the README's six verdicts from a report.json (each claim's label and
    measurement); once results/claims is published (its made.json), the README carries its table."""
    table = publish().verdicts_table(json.loads((RESULTS / "quick" / "report.json").read_text())).splitlines()
    assert len(table) == 2 + 6 and table[2].startswith("| 1 | BN-only is consistently above chance")
    assert "**held at 4 of the report's 49 cells (widths 10, 100; depths 2, 4)**" in table[2]
    assert all("**not measured**" in table[2 + i - 1] for i in (2, 3, 5, 6))
    if (RESULTS / "claims" / "made.json").is_file():
        doc = json.loads((RESULTS / "claims" / "report.json").read_text())
        assert publish().verdicts_table(doc) in README
        assert all(c["verdict"] != "not measured" for c in doc["claims"])  # every claim judged at the protocol
        assert publish().cells_table(doc) in (ROOT / "docs" / "study.md").read_text()
        made = json.loads((RESULTS / "claims" / "made.json").read_text())
        recheck = json.loads((RESULTS / "claims" / "recheck.json").read_text())
        text = re.sub(r"\s+", " ", README)
        assert f"{made['compute_seconds'] / 3600:.1f} h of compute" in text and f"in {len(made['sweeps'])} sweep parts" in text
        assert f"mix {len(made['code'])} code versions" in text
        assert f"first {recheck['epochs']} epochs, float for float, for {recheck['identical']} of the {recheck['runs']} runs" in text


def test_the_readme_times_of_the_studies_are_the_files():
    estimates = json.loads((RESULTS / "estimates.json").read_text())["studies"]
    questions = json.loads((RESULTS / "questions" / "made.json").read_text())
    rows = {line.split("|")[1].strip(" `"): line for line in README.splitlines() if line.startswith("| `")}
    assert f"estimated {estimates['claims']['seconds'] / 3600:.1f} h" in rows["claims"]
    assert f"estimated {estimates['report']['seconds'] / 3600:.0f} h" in rows["report"]
    assert f"estimated {estimates['frankle']['seconds'] / 3600:.0f} h" in rows["frankle"]
    assert f"{questions['wall_seconds'] / 60:.1f} min" in rows["questions"]
    assert all(estimates[s]["runs"] == int(rows[s].split("|")[2].replace(",", "")) for s in estimates)


def test_the_readme_says_how_far_numbers_move_between_cpus():
    r = json.loads((RESULTS / "two-cpus-quick.json").read_text())
    text = re.sub(r"\s+", " ", README)
    assert (f"{r['identical']} of the {r['runs']} runs bit for bit, {r['differ']} others by a median of "
            f"{r['median_points']:.2f} and at most {r['largest_points']:.1f} points") in text
    assert f"({r['epochs_differ']} early stops at another epoch)" in text
    assert f"moved by at most {max(r['headline_largest_move_points'].values()):.1f} points" in text
    assert r["same_verdicts"] and "every verdict stayed the same" in text


def test_a_published_results_csv_reads_back_as_the_stores_rows(tmp_path):
    """store.read_csv (what results/compare.py and benchmarks/error_rates.py read published runs with)
    is export_csv's inverse: the rows of a store, exported and read back, are the store's rows."""
    from bnonly.store import Store, read_csv
    published, damaged = read_csv(RESULTS / "quick" / "results.csv")
    assert len(published) == 48 and damaged == {}
    store = Store(tmp_path / "results.sqlite")
    store.write(published)
    store.export_csv(tmp_path / "back.csv")
    assert read_csv(tmp_path / "back.csv") == (store.runs(), {})


def test_compare_counts_what_moved_between_two_machines():
    """results/compare.py on the published quick runs against a copy with two `bn` runs of one cell
    1 point higher and one early stop an epoch later: 46 identical, 2 differ by 1 point, one epoch
    count differs, the cell's bn mean (3 seeds) moves by two thirds of a point, random's not at all."""
    from bnonly.store import read_csv
    spec = importlib.util.spec_from_file_location("compare", RESULTS / "compare.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    there, _ = read_csv(RESULTS / "quick" / "results.csv")
    here = [dict(r) for r in there]
    moved = [r for r in here if r["trainable"] == "bn" and r["width"] == 100 and r["depth"] == 2][:2]
    for r in moved:
        r["test_accuracy"] += 0.01
    moved[0]["epochs_run"] += 1
    c = compare.compare(here, there)
    assert (c["runs"], c["identical"], c["differ"], c["epochs_differ"]) == (48, 46, 2, 1)
    assert c["largest_points"] == pytest.approx(1.0) and c["median_points"] == 0.0
    assert c["headline_largest_move_points"]["bn"] == pytest.approx(2 / 3)
    assert c["headline_largest_move_points"]["random"] == pytest.approx(0.0)


def test_recheck_finds_a_run_whose_numbers_moved(tmp_path, monkeypatch):
    """results/recheck.py on a tiny sweep's store: every group trained again for its first epoch
    gives its stored histories float for float (a bn+random stack and a dense one); a stored loss
    then moved by one float step is found, in its one run, by a pass that does not reuse what the
    first said of that group; a third pass, nothing stored having changed, trains nothing."""
    import math
    import sqlite3
    from bnonly.cli import main
    sweep = tmp_path / "tiny.toml"
    sweep.write_text('name = "tiny"\nmodels = ["mlp"]\nwidths = [8]\ndepths = [1]\n'
                     'trainable = ["all-nobn", "bn", "random"]\nseeds = [0, 1]\nsubset = 1000\nmax_epochs = 2\n')
    out = tmp_path / "s"
    assert main(["sweep", str(sweep), "--out", str(out), "--threads", "1", "--no-estimate"]) == 0
    spec = importlib.util.spec_from_file_location("recheck", RESULTS / "recheck.py")
    recheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recheck)
    recheck.main([str(out), str(sweep), "--epochs", "1"])
    doc = json.loads((out / "recheck.json").read_text())
    assert (doc["groups"], doc["runs"], doc["identical"], doc["differ"]) == (2, 6, 6, 0)
    with sqlite3.connect(out / "results.sqlite") as db:  # one stored loss, one float step off
        run_id, history = db.execute("SELECT run_id, history FROM runs WHERE trainable = 'bn' AND seed = 1").fetchone()
        h = json.loads(history)
        h[0]["val_loss"] = math.nextafter(h[0]["val_loss"], math.inf)
        db.execute("UPDATE runs SET history = ? WHERE run_id = ?", (json.dumps(h), run_id))
    recheck.main([str(out), str(sweep), "--epochs", "1"])  # (its group's rows changed: checked again, not reused)
    doc = json.loads((out / "recheck.json").read_text())
    assert (doc["identical"], doc["differ"]) == (5, 1)
    moved = [g for g in doc["checked"] if g["differ"]]
    assert len(moved) == 1 and moved[0]["first_difference"] == [run_id, 1]
    calls = []
    monkeypatch.setattr(recheck, "recheck", lambda *a: calls.append(a))
    recheck.main([str(out), str(sweep), "--epochs", "1"])  # nothing new: nothing trained again
    assert calls == [] and json.loads((out / "recheck.json").read_text())["differ"] == 1

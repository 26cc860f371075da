"""A hostile user's inputs, each the case an adversarial pass found: huge seeds, files that are not
UTF-8, writes that fail at the end, damaged artefacts and rows, a damaged meta, a report that fails
half-way, and odd API arguments. Each gives one line on stderr and its documented exit code, and
loses or tears nothing."""
import errno
import io
import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import zlib
from pathlib import Path

import pytest
import torch

import bnonly
from bnonly.cli import main
from bnonly.store import Store

DEV_FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not DEV_FULL.exists(), reason="no /dev/full on this system")
GRID = ["--set", "widths=[8]", "--set", "depths=[1]", "--set", 'trainable=["bn","all"]', "--set", "seeds=[0]",
        "--set", "subset=1000", "--set", "max_epochs=1", "--set", 'models=["mlp"]', "--no-estimate"]


def one_line(capsys, expected: int, code: int, needle: str) -> str:
    err = capsys.readouterr().err
    err = err.split("\n", 1)[1] if err.startswith("device: ") else err  # (train names its device first)
    assert code == expected, err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err, err
    return err


def last_line(capsys, expected: int, code: int, needle: str) -> None:
    """A sweep that said its plan and then stopped: its error is one line, the last."""
    err = capsys.readouterr().err
    assert code == expected and "Traceback" not in err and err.count("bnonly: error") == 1, err
    assert needle in err.splitlines()[-1], err


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "good"
    assert main(["sweep", "quick", "--out", str(out)] + GRID) == 0
    return out


@pytest.fixture
def good(built, tmp_path, capsys):
    """A copy of a small good store: a bn and an all run with their models."""
    out = tmp_path / "good"
    shutil.copytree(built, out)
    capsys.readouterr()
    return out


def run_ids(out: Path) -> dict[str, str]:
    return {r["trainable"]: r["run_id"] for r in Store(out / "results.sqlite").runs()}


def edit(out: Path, sql: str, *args):
    Store(out / "results.sqlite")  # (checkpoints the WAL)
    with sqlite3.connect(out / "results.sqlite") as db:
        db.execute(sql, args)


def test_1_seeds_too_large_for_torch(tmp_path, capsys):
    one_line(capsys, 2, main(["train", "--width", "8", "--depth", "1", "--seed", str(2 ** 64)]), "seed=18446744073709551616")
    with pytest.raises(bnonly.ConfigError, match=r"seed=18446744073709551616: must be below 2\*\*(63|32)"):
        bnonly.train(seed=2 ** 64, progress=False)
    with pytest.raises(bnonly.ConfigError, match="data_seed"):
        bnonly.train(data_seed=2 ** 63, progress=False)


def test_2_a_seed_that_aliases_is_refused_before_training_and_the_largest_is_stored(tmp_path, capsys):
    """Seed 2**32 trained seed 0's run (torch's generator keeps seeds modulo 2**32) under another run id,
    and a report counted the two as two seeds: refused in one line; 2**32 - 1 is stored as it is."""
    out = tmp_path / "s"
    one_line(capsys, 2, main(["sweep", "quick", "--out", str(out), *GRID, "--set", f"seeds=[{2 ** 32}]"]),
             "seed=4294967296: must be below 2**32")
    assert not out.exists()  # nothing trained, nothing written
    assert main(["sweep", "quick", "--out", str(out), *GRID, "--set", f"seeds=[{2 ** 32 - 1}]"]) == 0
    rows = Store(out / "results.sqlite").runs()
    assert len(rows) == 2 and {r["seed"] for r in rows} == {2 ** 32 - 1} and all(r["config"]["seed"] == 2 ** 32 - 1 for r in rows)


def test_2b_tf32_on_a_cpu_is_refused(tmp_path, capsys):
    """precision tf32 on a CPU computed fp32 under another run id: one line, before anything trains."""
    one_line(capsys, 2, main(["train", "--width", "8", "--depth", "1", "--precision", "tf32", "--device", "cpu"]),
             "precision='tf32' is a CUDA matmul mode")
    out = tmp_path / "t"
    one_line(capsys, 2, main(["sweep", "quick", "--out", str(out), *GRID, "--set", "precision=tf32", "--device", "cpu"]),
             "precision='tf32'")
    assert not out.exists()


def test_3_a_config_file_that_is_not_utf8(tmp_path, capsys):
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"width = 8\n\xff\xfe\x00garbage")
    one_line(capsys, 2, main(["train", "--config", str(bad)]), "not UTF-8")
    one_line(capsys, 2, main(["sweep", str(bad), "--out", str(tmp_path / "o")]), "not UTF-8")
    assert not (tmp_path / "o").exists()


@needs_dev_full
def test_4_writes_that_fail_at_the_end(good, tmp_path, capsys):
    before = (good / "results.sqlite").read_bytes()
    one_line(capsys, 1, main(["export", str(good), str(DEV_FULL)]), "No space left on device")
    one_line(capsys, 1, main(["export-model", str(good), run_ids(good)["bn"], str(DEV_FULL)]), "No space left on device")
    code = main(["train", "--width", "8", "--depth", "1", "--subset", "1000", "--epochs", "1", "--json", "--save",
                 str(DEV_FULL)])
    out, err = capsys.readouterr()
    err = err.split("\n", 1)[1]  # (after the device line)
    assert code == 1 and '"test_accuracy"' in out and err.count("\n") == 1 and "No space left on device" in err
    assert (good / "results.sqlite").read_bytes() == before  # the store is untouched


def test_4_a_failed_write_leaves_the_old_file_whole_and_no_temporary_one(tmp_path):
    from bnonly import files
    target = tmp_path / "out.csv"
    files.write(target, lambda fh: fh.write("old, whole\n"), "export", mode="w")

    def torn(fh):
        fh.write("new, half")
        raise OSError(28, "No space left on device")
    with pytest.raises(bnonly.OutputError, match="export .*out.csv: cannot write it \\(No space left on device\\)"):
        files.write(target, torn, "export", mode="w")
    assert target.read_text() == "old, whole\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def evil_blob() -> bytes:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    return zlib.compress(pickle.dumps(Evil()))


def wrong_shape_blob() -> bytes:
    buf = io.BytesIO()
    torch.save({"input_shape": torch.tensor([1, 28, 28]), "blocks.0.norm.weight": torch.zeros(3)}, buf)
    return zlib.compress(buf.getvalue())


GARBAGE = bytes.fromhex("00010203")


@pytest.mark.parametrize("blob", [GARBAGE, wrong_shape_blob(), evil_blob()],
                         ids=["garbage", "wrong-shape", "malicious-pickle"])
def test_5_a_damaged_model_artefact(good, blob, capsys):
    bn = run_ids(good)["bn"]
    edit(good, "UPDATE artefacts SET blob = ? WHERE run_id = ?", blob, bn)
    err = one_line(capsys, 1, main(["export-model", str(good), bn, str(good / "m.pt")]), "stored model does not load")
    assert bn in err and "results.sqlite" in err and not (good / "m.pt").exists()
    one_line(capsys, 0, main(["analyze", str(good)]), f"1 damaged run(s) left out: {bn}")
    one_line(capsys, 0, main(["report", str(good)]), f"1 damaged run(s) left out: {bn}")
    assert "1 stored run(s) left out of every statistic as damaged" in (good / "report.md").read_text()
    # ... and it is: its cell has no run left (the report counted it in its cell and headline before)
    doc = json.loads((good / "report.json").read_text())
    assert bn in doc["damaged"] and bn not in json.dumps({k: v for k, v in doc.items() if k not in ("damaged", "sections")})
    # a model that fails zlib's checksum (a damaged file, not a crafted one) is trained again by the next sweep
    assert main(["sweep", "quick", "--out", str(good)] + GRID) == 0
    retrained = capsys.readouterr().err
    assert ("1 to train" in retrained) == (blob == GARBAGE), retrained
    if blob == GARBAGE:
        assert Store(good / "results.sqlite").read(models=True)[1] == {}


def test_a_missing_model_is_left_out_and_trained_again(good, capsys):
    bn = run_ids(good)["bn"]
    edit(good, "DELETE FROM artefacts WHERE run_id = ?", bn)
    one_line(capsys, 0, main(["report", str(good)]), f"{bn} (its stored model is missing)")
    assert main(["sweep", "quick", "--out", str(good)] + GRID) == 0
    assert "2 runs, 1 already in" in capsys.readouterr().err
    assert Store(good / "results.sqlite").artefact(bn)


def test_a_store_reused_with_other_data_is_refused_and_not_analysed_on_it(tmp_path, capsys):
    """Two IDX directories of other images: a sweep over a store trained on the first refuses the
    second (it used to skip the stored runs as if done), and analyze leaves the runs out instead of
    evaluating A's models on B's images."""
    from bnonly.registry.data import load_mnist
    from test_data import write_idx
    r = load_mnist()
    dirs = {}
    for name, start in (("A", 0), ("B", 1000)):
        d = dirs[name] = tmp_path / name
        d.mkdir()
        write_idx(d / "train-images-idx3-ubyte", r.x_train[start:start + 400, 0])
        write_idx(d / "train-labels-idx1-ubyte", r.y_train[start:start + 400])
        write_idx(d / "t10k-images-idx3-ubyte", r.x_test[start:start + 100, 0])
        write_idx(d / "t10k-labels-idx1-ubyte", r.y_test[start:start + 100])
    out = tmp_path / "s"
    grid = GRID + ["--set", "subset=0", "--set", 'datasets=["idx"]']  # (the later --set of subset wins)
    assert main(["sweep", "quick", "--out", str(out), "--data-dir", str(dirs["A"])] + grid) == 0, capsys.readouterr().err
    capsys.readouterr()
    err = one_line(capsys, 2, main(["sweep", "quick", "--out", str(out), "--data-dir", str(dirs["B"])] + grid),
                   "were trained on other idx data")
    assert "2 runs" in err and "--data-dir" in err
    assert main(["sweep", "quick", "--out", str(out), "--data-dir", str(dirs["A"])] + grid) == 0  # same data: done
    assert "0 to train" in capsys.readouterr().err
    one_line(capsys, 0, main(["analyze", str(out), "--data-dir", str(dirs["B"])]), "trained on other idx data")


@pytest.mark.parametrize("column,value,why", [("config", "{bad", "config is not JSON"),
                                              ("history", "[1,2", "history is not JSON"),
                                              ("test_accuracy", "abc", "test_accuracy 'abc' is not a fraction"),
                                              ("test_accuracy", 7.5, "test_accuracy 7.5 is not a fraction"),
                                              ("trainable", "bogus", "unknown trainable set 'bogus'"),
                                              ("width", "ten", "width 'ten' is not its config's (8)"),
                                              ("depth", 3, "depth 3 is not its config's (1)"),
                                              ("test_accuracy", None, "a finished run without a test accuracy")])
def test_6_7_11_a_hand_edited_row_is_left_out_by_run_id(good, column, value, why, capsys):
    bn = run_ids(good)["bn"]
    edit(good, f"UPDATE runs SET {column} = ? WHERE run_id = ?", value, bn)
    one_line(capsys, 0, main(["report", str(good)]), f"1 damaged run(s) left out: {bn} ({why}")
    md = (good / "report.md").read_text()
    assert f"{bn} ({why}" in md and "381.3" not in md and "1 finished" in md
    assert main(["export", str(good), str(good / "all.csv")]) == 0  # an export copies every row, as stored
    assert (good / "all.csv").read_text().count("\n") == 3
    capsys.readouterr()
    err = one_line(capsys, 1, main(["export-model", str(good), bn, str(good / "m.pt")]), f"run {bn} is damaged ({why}")
    assert str(good / "results.sqlite") in err  # the store is named; exit 1 (a store problem, not usage)
    # a re-launch trains the damaged run again (the row is replaced; nothing else is trained)
    assert main(["sweep", "quick", "--out", str(good)] + GRID) == 0
    store = Store(good / "results.sqlite")
    assert len(store.runs()) == 2 and store.read()[1] == {}


def test_a_row_whose_run_id_is_not_its_configs_hash_is_left_out(good, capsys):
    edit(good, "UPDATE runs SET run_id = 'abc' WHERE run_id = ?", run_ids(good)["bn"])
    one_line(capsys, 0, main(["report", str(good)]), "1 damaged run(s) left out: abc (run_id 'abc' is not its config's (")


@pytest.mark.parametrize("value", ['"x"', "{", "[1]"])
def test_8_a_hand_edited_schema_version_is_a_damaged_store(good, value, capsys):
    edit(good, "UPDATE meta SET value = ? WHERE key = 'schema_version'", value)
    for argv in (["report", str(good)], ["export", str(good), str(good / "x.csv")],
                 ["sweep", "quick", "--out", str(good)] + GRID):
        one_line(capsys, 1, main(argv), "damaged results store")


def test_9_a_failed_report_leaves_the_previous_one_as_it_was(good, monkeypatch, capsys):
    assert main(["report", str(good)]) == 0
    before = {p.name: p.read_bytes() for p in good.iterdir() if p.is_file() and p.suffix != ".sqlite-wal"}
    from bnonly.reports import build

    def half_way(*a, **k):  # the figures of the new report are written, then it fails
        raise bnonly.DataError("the analysis could not read the data")
    monkeypatch.setattr(build, "analyze_store", half_way)
    one_line(capsys, 1, main(["report", str(good)]), "could not read the data")
    after = {p.name: p.read_bytes() for p in good.iterdir() if p.is_file() and p.suffix != ".sqlite-wal"}
    assert after.keys() == before.keys() and all(after[k] == before[k] for k in before if not k.startswith("results.sqlite"))
    assert not [p for p in good.iterdir() if p.name.startswith(".report-")]


def test_10_api_arguments_are_checked_first(tmp_path):
    with pytest.raises(bnonly.ConfigError, match="--workers '2': expected an integer"):
        bnonly.sweep("quick", tmp_path / "x", workers="2")
    with pytest.raises(bnonly.ConfigError, match="--data-dir 3: expected a path"):
        bnonly.sweep("quick", tmp_path / "x", data_dir=3)
    with pytest.raises(bnonly.ConfigError, match="config int: expected a shipped study name"):
        bnonly.load_sweep(5)
    assert bnonly.load_sweep(Path("quick")).name == "quick"  # a path-like is still a path
    assert not (tmp_path / "x").exists()


def test_11_empty_output_paths_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line(capsys, 2, main(["train", "--width", "8", "--depth", "1", "--save", ""]), "--save '': expected a path")
    one_line(capsys, 2, main(["sweep", "quick", "--out", ""] + GRID), "--out '': expected a path")
    one_line(capsys, 2, main(["export", str(tmp_path), ""]), "export '': expected a path")
    assert list(tmp_path.iterdir()) == []


def test_second_pass_export_onto_the_store_itself(good, capsys):
    """`export DIR DIR/results.sqlite` would write CSV over every result."""
    store = good / "results.sqlite"
    before = store.read_bytes()
    one_line(capsys, 2, main(["export", str(good), str(store)]), "is the results store itself")
    one_line(capsys, 2, main(["export-model", str(good), run_ids(good)["bn"], str(store)]), "is the results store itself")
    assert store.read_bytes() == before and len(Store(store).runs()) == 2


@pytest.mark.parametrize("flags, needle", [
    (["--width", str(10 ** 20)], "width=100000000000000000000: must be below 2**63"),  # torch's sizes, SQLite's integers
    (["--lr", "1e39"], "lr=1e+39: must be a finite number"),                          # beyond fp32
    (["--weight-decay", "1e308"], "weight_decay=1e+308: must be a finite number"),
    (["--lr-drop-factor", "-1"], "lr_drop_factor=-1.0: must be > 0"),
])
def test_second_pass_numbers_torch_cannot_hold(flags, needle, capsys):
    one_line(capsys, 2, main(["train", "--subset", "500", "--max-epochs", "1", *flags]), needle)


def test_second_pass_a_schedule_past_fp32_steps_at_the_largest_float():
    from bnonly.config.layers import resolve
    from bnonly.config.run import FLOAT32_MAX
    c = resolve("report", lr=1e30, lr_drop_epoch=1, lr_drop_factor=1e30)
    assert c.lr_at(1) == FLOAT32_MAX and resolve("report", lr=0.1, lr_drop_epoch=2).lr_at(2) == pytest.approx(0.01)


def test_second_pass_far_too_many_threads_or_workers(tmp_path, capsys):
    for flag in ("--threads", "--workers"):  # torch segfaults on 99,999 threads
        one_line(capsys, 2, main(["sweep", "quick", "--out", str(tmp_path / "s"), flag, "99999"] + GRID), f"{flag} 99999")
    assert not (tmp_path / "s" / "results.sqlite").exists() or not Store(tmp_path / "s" / "results.sqlite").runs()


def test_a_failed_row_never_replaces_a_finished_one(tmp_path):
    """Two sweeps on one store, one of them crashing in a group the other finished: the finished run
    stays (with its artefact); a failed run is replaced by a later failure or by a finished run."""
    from bnonly import api
    from bnonly.config.layers import resolve
    from bnonly.store import Store
    cfg = resolve(width=8, depth=1, subset=600, max_epochs=1)
    r = api.train(cfg)
    finished = {**r.summary(), "artefact": r.artefact}
    store = Store(tmp_path / "results.sqlite")
    store.write([finished])
    store.write([{"run_id": cfg.run_id, "status": "failed", "error": "RuntimeError: crashed", "config": cfg.__dict__}])
    (row,) = store.runs()
    assert row["status"] == "finished" and row["test_accuracy"] == r.test_accuracy and store.artefact(cfg.run_id)
    other = resolve(width=8, depth=1, subset=600, max_epochs=1, seed=1)
    for error in ("first", "second"):
        store.write([{"run_id": other.run_id, "status": "failed", "error": error, "config": other.__dict__}])
    assert {x["run_id"]: x.get("error") for x in store.runs()}[other.run_id] == "second"
    r1 = api.train(other)
    store.write([{**r1.summary(), "artefact": r1.artefact}])
    assert {x["run_id"]: x["status"] for x in store.runs()} == {cfg.run_id: "finished", other.run_id: "finished"}


def test_json_that_strict_parsers_read(capsys):
    """`train --json` printed NaN for a diverged run's losses (and report.json Infinity): not JSON.
    Non-finite values are null now."""
    import json as json_
    from bnonly.files import strict_json
    assert strict_json({"a": float("nan"), "b": [float("inf")], "c": (1.0, float("-inf"))}) == \
        '{"a": null, "b": [null], "c": [1.0, null]}'
    assert main(["train", "--width", "8", "--depth", "1", "--subset", "600", "--epochs", "2", "--lr", "1e6",
                 "--trainable", "all", "--json"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")
    row = json_.loads(line, parse_constant=refuse)
    assert row["status"] == "diverged" and row["val_loss"] is None


def test_gamma_where_it_trains_what_bn_trains_is_refused(capsys):
    """Under the report preset (no hidden beta) `gamma` and `bn` trained the same parameters and gave
    identical runs under two run ids; refused with the reason; with hidden beta it is its own set."""
    one_line(capsys, 2, main(["train", "--width", "8", "--depth", "1", "--trainable", "gamma"]),
             "trainable='gamma' trains what 'bn' trains without hidden beta")
    from bnonly.config.layers import resolve
    assert resolve("frankle", trainable="gamma").trainable == "gamma"


def test_a_bad_lease_timing_in_the_environment_is_one_line(tmp_path, capsys, monkeypatch):
    """BNONLY_LEASE_STALE=abc was a traceback when the sweep module was imported."""
    for value in ("abc", "-1", "inf"):
        monkeypatch.setenv("BNONLY_LEASE_STALE", value)
        one_line(capsys, 2, main(["sweep", "quick", "--out", str(tmp_path / "s"), *GRID]),
                 f"BNONLY_LEASE_STALE={value!r}: expected a positive number of seconds")


def test_a_full_disk_is_one_line_and_keeps_what_was_stored(good, monkeypatch, capsys):
    """A full disk while a sweep claims its runs (SQLite's 'database or disk is full', simulated) and
    while a report writes its figures (PIL's OSError): one line each, the stored runs and the
    previous report as they were, no staging directory left."""
    from bnonly.reports import figures
    assert main(["report", str(good)]) == 0
    before = {p.name: p.read_bytes() for p in good.iterdir() if p.is_file() and p.suffix in (".md", ".json")}
    capsys.readouterr()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(figures.Figure, "savefig", full)
    one_line(capsys, 1, main(["report", str(good)]), "No space left on device; free some space")
    assert {p.name: p.read_bytes() for p in good.iterdir() if p.name in before} == before
    assert not [p for p in good.iterdir() if p.name.startswith(".report-")]
    monkeypatch.undo()

    tx = Store._tx

    def full_tx(self, immediate=False):
        if immediate:
            raise sqlite3.OperationalError("database or disk is full")
        return tx(self, immediate)
    monkeypatch.setattr(Store, "_tx", full_tx)
    rows = Store(good / "results.sqlite").runs()
    grid = [x if x != "seeds=[0]" else "seeds=[0,1]" for x in GRID]
    code = main(["sweep", "quick", "--out", str(good)] + grid)
    last_line(capsys, 1, code, "database or disk is full); the runs stored before are intact")
    monkeypatch.undo()
    assert Store(good / "results.sqlite").runs() == rows


def test_a_read_only_store_is_read_not_called_corrupt(good, monkeypatch, capsys):
    """A store that this process may not write (a read-only directory; simulated, since root may
    write anything) is reported as it is, and a sweep into it, or a write, is one line saying so."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if mode == os.W_OK and "good" in str(p) else real(p, mode))
    store = Store(good / "results.sqlite")
    assert store.read_only and len(store.runs()) == 2
    assert main(["report", str(good), "--out", str(good.parent / "rep")]) == 0
    assert "corrupt" not in capsys.readouterr().err
    grid = [x if x != "seeds=[0]" else "seeds=[0,1]" for x in GRID]
    one_line(capsys, 2, main(["sweep", "quick", "--out", str(good)] + grid), "is not a writable directory")
    with pytest.raises(bnonly.StoreError, match="read-only here"):
        store.set_meta("x", 1)


def test_a_read_only_store_with_rows_in_its_log_is_one_line_not_stale(good, monkeypatch):
    """Immutable reads skip the write-ahead log: a read-only store whose log still holds rows (its
    writer running or killed) is refused in one line instead of read stale."""
    writer = sqlite3.connect(good / "results.sqlite")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("INSERT INTO meta VALUES ('note', '1')")
    writer.commit()  # (in the log, not yet in the file, while this connection stays open)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if mode == os.W_OK and "good" in str(p) else real(p, mode))
    with pytest.raises(bnonly.StoreError, match="write-ahead log .* holds rows not yet in the file"):
        Store(good / "results.sqlite")
    writer.close()


@pytest.mark.parametrize("name", ["../escaped", "", ".", "a/b"])
def test_a_sweep_name_that_is_a_path_is_refused(name, tmp_path, capsys):
    (tmp_path / "s.toml").write_text(f'name = "{name}"\n')
    one_line(capsys, 2, main(["sweep", str(tmp_path / "s.toml")]), "must be a plain name")


def test_a_path_component_too_long_is_one_line(good, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    long = "x" * 300
    for argv in (["sweep", "quick", "--out", long] + GRID, ["report", str(good), "--out", long],
                 ["export", str(good), long + ".csv"],
                 ["train", "--width", "8", "--depth", "1", "--subset", "500", "--epochs", "1", "--save", long + ".pt"]):
        code = main(argv)
        err = capsys.readouterr().err
        err = err.split("\n", 1)[1] if err.startswith("device: ") else err
        assert code == 1 and err.count("\n") in (1, 2) and "File name too long; use a shorter name" in err, (argv, err)
        assert "Traceback" not in err


def test_a_run_the_engine_refuses_is_not_advised_a_retry(tmp_path, capsys):
    """An impossible random allocation fails the same way every time: the last line says so instead
    of 'run the same command again'."""
    code = main(["sweep", "quick", "--out", str(tmp_path / "s"), "--no-estimate", "--set", "widths=[10]",
                 "--set", "depths=[8]", "--set", 'trainable=["random"]', "--set", "seeds=[0]", "--set", "subset=500",
                 "--set", "max_epochs=1", "--set", 'random_allocation="last"', "--set", 'models=["mlp"]', "--set", 'preset="frankle"'])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 3 and "1 of 1 runs failed" in last and "the engine refused them" in last, last
    assert "run the same command again" not in last


def test_where_given_twice_for_one_field_is_refused(good, capsys):
    one_line(capsys, 2, main(["report", str(good), "--where", "seed=0", "--where", "seed=1"]), "seed is given twice")


def test_an_export_keeps_its_files_mode_and_follows_a_link(good, tmp_path):
    """Written files get open()'s mode (0666 less the umask; mkstemp's 0600 before), an existing
    file keeps its own, and a symlinked target is written through the link."""
    from bnonly import files
    mask = os.umask(0o022)
    try:
        new = files.write(tmp_path / "new.csv", lambda fh: fh.write("a\n"), "export", mode="w")
        assert new.stat().st_mode & 0o777 == 0o644
        (tmp_path / "kept.csv").write_text("old\n")
        os.chmod(tmp_path / "kept.csv", 0o640)
        files.write(tmp_path / "kept.csv", lambda fh: fh.write("b\n"), "export", mode="w")
        assert (tmp_path / "kept.csv").stat().st_mode & 0o777 == 0o640
        (tmp_path / "link.csv").symlink_to(tmp_path / "kept.csv")
        assert main(["export", str(good), str(tmp_path / "link.csv")]) == 0
        assert (tmp_path / "link.csv").is_symlink() and (tmp_path / "kept.csv").read_text().startswith("run_id,")
    finally:
        os.umask(mask)


def test_a_killed_reports_staging_directory_is_removed_by_the_next(good, capsys):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (good / f".report-{dead.pid}-abcd").mkdir()
    (good / f".report-{os.getpid()}-live").mkdir()  # a live process's: left alone
    assert main(["report", str(good)]) == 0
    assert sorted(p.name for p in good.iterdir() if p.name.startswith(".report-")) == [f".report-{os.getpid()}-live"]


def test_a_subset_too_small_to_split_is_a_usage_error_before_any_store(tmp_path, capsys):
    one_line(capsys, 2, main(["sweep", "quick", "--out", str(tmp_path / "s"), "--set", "subset=1"]),
             "subset=1: is too small for a validation split")
    assert not (tmp_path / "s").exists()


def test_a_run_stored_again_with_a_new_model_drops_the_old_models_analysis(good):
    """A kept gamma analysis belongs to the model it was computed on: a row written again with its
    model drops it (a model emptied later could otherwise be taken for the old one's)."""
    store = Store(good / "results.sqlite")
    bn, other = run_ids(good)["bn"], run_ids(good)["all"]
    for rid in (bn, other):
        store.keep_analysis(rid, "key", {"run_id": rid})
    row = next(r for r in store.runs() if r["run_id"] == bn)
    store.write([{**row, "artefact": store.artefact(bn)}])
    assert set(store.analyses()) == {other}


def test_models_not_kept_still_count_and_the_report_says_so(good, capsys):
    """Store.prune_models (results/carry.py: dense models kept out of git) empties the models over a
    size: their runs stay ended (a sweep trains nothing), are not damaged, and the report counts
    them and says that their models are not kept."""
    store = Store(good / "results.sqlite")
    assert sorted(store.prune_models(0)) == sorted(run_ids(good).values()) and store.not_kept() == set(run_ids(good).values())
    assert store.read(models=True)[1] == {} and len(store.ended_ids()) == 2
    assert main(["sweep", "quick", "--out", str(good)] + GRID) == 0 and "0 to train" in capsys.readouterr().err
    assert main(["report", str(good)]) == 0
    assert "2 run(s) counted here without their stored model" in (good / "report.md").read_text()

"""Failures are one line and lose nothing: corrupt stores, bad paths, out of memory, failed runs."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bnonly.cli import main
from bnonly.store import Store

TINY = ["--set", "widths=[8]", "--set", "depths=[1]", "--set", 'trainable=["bn"]', "--set", "seeds=[0,1]",
        "--set", "subset=1000", "--set", "max_epochs=1"]


def without_device(err: str) -> str:
    """stderr less the informational first line that names the device training runs on."""
    return err.split("\n", 1)[1] if err.startswith("device: ") else err


def one_line(capsys, code_expected, code, needle):
    err = without_device(capsys.readouterr().err)
    assert code == code_expected, err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err, err


@pytest.fixture
def store(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sweep", "quick", "--out", str(out)] + TINY) == 0
    capsys.readouterr()
    return out


@pytest.mark.parametrize("damage", ["garbage", "page", "truncated", "header", "foreign", "newer"])
def test_damaged_store_is_one_line_and_never_written(store, damage, capsys):
    db = store / "results.sqlite"
    Store(db)  # checkpoint the WAL into the file
    for f in store.glob("results.sqlite-*"):
        f.unlink()
    data = db.read_bytes()
    if damage == "garbage":
        db.write_bytes(data[:4096] + os.urandom(len(data) - 8192) + data[-4096:])
    elif damage == "page":  # a b-tree page overwritten: SQLite's quick_check reports it over two lines
        db.write_bytes(data[:8192] + b"\x07" * 700 + data[8892:])
    elif damage == "truncated":
        db.write_bytes(data[: len(data) // 3])
    elif damage == "header":
        db.write_bytes(b"not a database!!" + data[16:])
    elif damage == "foreign":
        db.unlink()
        c = sqlite3.connect(db)
        c.execute("CREATE TABLE things (x)")
        c.commit()
        c.close()
    elif damage == "newer":
        c = sqlite3.connect(db)
        c.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        c.commit()
        c.close()
    before = db.read_bytes()
    one_line(capsys, 1, main(["report", str(store)]), "results.sqlite")
    one_line(capsys, 1, main(["sweep", "quick", "--out", str(store)] + TINY), "results.sqlite")
    assert db.read_bytes() == before  # a sweep never resumes onto it


def test_bad_paths_are_one_line_before_any_work(tmp_path, store, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    one_line(capsys, 2, main(["sweep", "quick", "--out", str(f)] + TINY), "is a file")
    one_line(capsys, 2, main(["sweep", str(tmp_path)] + TINY), "is a directory")
    t0 = time.perf_counter()
    one_line(capsys, 2, main(["train", "--width", "8", "--depth", "1", "--subset", "1000", "--save",
                              str(tmp_path / "no" / "dir" / "m.pt")]), "does not exist")
    assert time.perf_counter() - t0 < 5  # checked before training
    one_line(capsys, 2, main(["export", str(store), str(tmp_path / "no" / "x.csv")]), "does not exist")
    one_line(capsys, 2, main(["export-model", str(store), "0123", str(tmp_path)]), "is a directory")
    one_line(capsys, 1, main(["report", str(tmp_path / "nothing")]), "no results store")


def test_save_failure_after_training_prints_the_result_first(tmp_path, monkeypatch, capsys):
    import torch

    real = torch.save

    def broken(obj, f, *a, **k):  # the disk fills up when the model file is written (not in-memory buffers)
        if isinstance(f, (str, os.PathLike)) or getattr(f, "name", None):
            raise OSError(28, "No space left on device")
        return real(obj, f, *a, **k)
    monkeypatch.setattr(torch, "save", broken)
    code = main(["train", "--width", "8", "--depth", "1", "--subset", "1000", "--epochs", "1", "--json",
                 "--save", str(tmp_path / "m.pt")])
    out, err = capsys.readouterr()
    assert err.startswith("device: cpu (")
    err = without_device(err)
    assert code == 1 and '"test_accuracy"' in out and err.count("\n") == 1 and "No space left" in err


def test_out_of_memory_is_one_line(capsys):
    one_line(capsys, 1, main(["train", "--width", "100000", "--depth", "3", "--subset", "1000"]), "out of memory (")


def test_failed_runs_make_the_sweep_exit_3_and_lose_nothing(store, capsys):
    rows = {r["run_id"]: r["test_accuracy"] for r in Store(store / "results.sqlite").runs()}
    code = main(["sweep", "quick", "--out", str(store)] + TINY + ["--set", "widths=[8,100000]", "--set", "depths=[3]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and "2 of 4 runs failed" in err[-1] and "run the same command again" in err[-1]
    after = {r["run_id"]: r for r in Store(store / "results.sqlite").runs()}
    assert all(after[k]["test_accuracy"] == v for k, v in rows.items())
    assert sum(r["status"] == "failed" and "out of memory" in r["error"].lower() or "allocate" in (r["error"] or "")
               for r in after.values()) == 2


def test_cli_polish(capsys):
    assert main([]) == 2 and "train" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    from bnonly.version import __version__, code_hash
    out = capsys.readouterr().out
    assert e.value.code == 0 and f"bnonly {__version__}" in out and f"(code {code_hash()})" in out
    one_line(capsys, 2, main(["sweep", "quick", "--set", "foo=3"]), "--set: unknown key 'foo'")
    one_line(capsys, 2, main(["sweep", "quick", "--set", "lr=inf"]), "must be a finite number")


def test_parquet_without_pyarrow_is_one_line(store, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    one_line(capsys, 2, main(["export", str(store), str(store / "r.parquet")]), "bnonly[parquet]")


@pytest.mark.parametrize("twice", [False, True], ids=["once", "twice"])
def test_ctrl_c_with_workers_is_one_line(tmp_path, twice):
    out = tmp_path / "w"
    out.mkdir()
    cmd = [sys.executable, "-m", "bnonly", "sweep", "quick", "--out", str(out), "--workers", "2", "--no-estimate",
           "--set", "widths=[8,16]", "--set", "depths=[1,2]", "--set", 'trainable=["bn","all"]', "--set", "seeds=[0]",
           "--set", "subset=20000", "--set", "max_epochs=40", "--set", "patience=40"]
    if twice:  # epochs of seconds: the second Ctrl-C comes while the groups still train towards their checkpoint
        cmd += ["--set", "widths=[8,512]", "--set", "depths=[1,4]"]
    p = subprocess.Popen(cmd, stderr=(out / "err").open("w"), text=True, start_new_session=True,  # SIGINT at its
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # default, as in test_cluster
    deadline = time.time() + 120
    n = 0
    while time.time() < deadline and p.poll() is None and not n:  # the workers are training, a group is stored
        try:
            c = sqlite3.connect(out / "results.sqlite", timeout=1)
            n = c.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            c.close()
        except sqlite3.OperationalError:
            pass
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    if twice:  # the second stops at once
        deadline = time.time() + 30
        while "stopping:" not in (out / "err").read_text() and time.time() < deadline:
            time.sleep(0.05)
        os.killpg(p.pid, signal.SIGINT)
    p.wait(timeout=120)
    err = (out / "err").read_text()
    assert 0 < n < 8, n
    if twice:
        assert p.returncode == 130 and "Traceback" not in err and "interrupted" in err, err[-2000:]
    else:  # the first Ctrl-C: every group in progress checkpoints at its epoch's end, exit 0
        assert p.returncode == 0 and "Traceback" not in err and "stopped on time (a signal)" in err, err[-2000:]
        assert list((out / "checkpoints").glob("*.ckpt"))


def _sweep_proc(out, extra_env=None, extra=()):
    cmd = [sys.executable, "-m", "bnonly", "sweep", "quick", "--out", str(out), "--threads", "1", *extra,
           "--set", "widths=[8,16,24]", "--set", "depths=[1,2]", "--set", 'trainable=["bn","all"]', "--set", "seeds=[0,1]",
           "--set", "subset=3000", "--set", "max_epochs=4", "--set", "patience=10"]
    env = {**os.environ, "BNONLY_LEASE_HEARTBEAT": "0.5", **(extra_env or {})}
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)


def _trained(err):
    line = [x for x in err.splitlines() if x.startswith("sweep quick:") and "trained" in x][-1]
    return int(line.split(": ")[1].split(" trained")[0])


def test_two_sweeps_on_one_store_train_each_group_once(tmp_path):
    out = tmp_path / "shared"
    a, b = _sweep_proc(out), _sweep_proc(out)
    err_a, err_b = a.communicate(timeout=300)[1], b.communicate(timeout=300)[1]
    assert a.returncode == 0 and b.returncode == 0, err_a[-1500:] + err_b[-1500:]
    rows = Store(out / "results.sqlite").runs()
    assert len(rows) == 24 and all(r["status"] == "finished" for r in rows)
    assert _trained(err_a) + _trained(err_b) == 24  # every run trained by exactly one of them
    assert "trained by another sweep on this store" in err_a + err_b


def test_two_sweeps_that_group_runs_differently_train_each_run_once(tmp_path):
    """Leases are per run: a sweep of groups of 32 and one of groups of 1 on one store (which once
    trained 3 of 8 runs twice under group leases) share the 24 runs between them."""
    out = tmp_path / "shared"
    a, b = _sweep_proc(out, extra=("--group-size", "32")), _sweep_proc(out, extra=("--group-size", "1"))
    err_a, err_b = a.communicate(timeout=300)[1], b.communicate(timeout=300)[1]
    assert a.returncode == 0 and b.returncode == 0, err_a[-1500:] + err_b[-1500:]
    rows = Store(out / "results.sqlite").runs()
    assert len(rows) == 24 and all(r["status"] == "finished" for r in rows)
    assert _trained(err_a) + _trained(err_b) == 24, err_a[-800:] + err_b[-800:]
    assert sqlite3.connect(out / "results.sqlite").execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0


def test_a_killed_sweeps_groups_are_taken_over(tmp_path):
    out = tmp_path / "shared"
    db = out / "results.sqlite"
    a = _sweep_proc(out)
    deadline = time.time() + 120
    while time.time() < deadline:  # a has written a group and holds the claim of the next one
        try:
            c = sqlite3.connect(db, timeout=1)
            n_rows = c.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            n_leases = c.execute("SELECT COUNT(*) FROM leases").fetchone()[0]
            c.close()
        except sqlite3.OperationalError:
            n_rows = n_leases = 0
        if n_rows and n_leases:
            break
        time.sleep(0.05)
    a.kill()
    a.wait()
    assert 0 < n_rows < 24 and n_leases >= 1  # (a lease per run of the group in training)
    b = _sweep_proc(out)
    err_b = b.communicate(timeout=300)[1]
    assert b.returncode == 0, err_b[-1500:]
    rows = Store(db).runs()
    assert len(rows) == 24 and all(r["status"] == "finished" for r in rows)
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0


def _children(pid: int) -> list[int]:
    """The worker processes a sweep spawned (multiprocessing's spawn_main; not its resource tracker)."""
    out = []
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            out.append(int(proc.name))
    return out


def test_a_dead_worker_fails_its_group_and_the_sweep_ends(tmp_path):
    """--workers 2 with one worker killed mid-group (as the out-of-memory killer would): the sweep
    used to wait forever at 0% CPU; now the groups in flight are recorded failed (a re-launch trains
    them: failed runs are tried again) and it ends with the failed-runs status."""
    out = tmp_path / "w"
    cmd = [sys.executable, "-m", "bnonly", "sweep", "quick", "--out", str(out), "--workers", "2", "--no-estimate",
           "--set", "widths=[100]", "--set", "depths=[2,4]", "--set", 'trainable=["bn"]', "--set", "seeds=[0,1]",
           "--set", "max_epochs=60", "--set", "patience=60"]  # two groups of far more than 10 s each
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(_children(p.pid)) < 2:
        time.sleep(0.2)
    time.sleep(8)  # both workers have loaded torch and are training their group
    os.kill(_children(p.pid)[0], signal.SIGKILL)
    _, err = p.communicate(timeout=120)  # it ends (it used to hang here)
    assert p.returncode == 3 and "BrokenProcessPool" in err and "Traceback" not in err, err[-2000:]
    rows = Store(out / "results.sqlite").runs()
    assert len(rows) == 4 and all(r["status"] == "failed" for r in rows), [r["status"] for r in rows]
    assert not _children(p.pid)

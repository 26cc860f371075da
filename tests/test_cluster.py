"""The Ray executor: same results as the local executor, groups on two nodes, a killed worker's
group re-run exactly once, Ctrl-C leaves a store that resumes, a deterministic failure recorded
once, and a clean error without the extra."""
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bnonly.cli import main
from bnonly.store import Store
from bnonly.config.options import SweepOptions
from bnonly.config.layers import load_sweep
from bnonly.sweeps.driver import run as run_sweep

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # test clusters on loopback only
# 2 widths x 2 depths x 3 sets x 2 seeds + LeNet-5 3 sets x 2 seeds = 30 runs in 6 groups
TINY = ['models=["mlp","lenet5"]', "widths=[8,16]", "depths=[1,2]", 'trainable=["bn","random","all"]',
        "seeds=[0,1]", "subset=2000", "max_epochs=2"]
RAY_BIN = str(Path(sys.executable).parent / "ray")


def _results(out):
    return {r["run_id"]: (r["status"], r["test_accuracy"], r["history"]) for r in Store(Path(out) / "results.sqlite").runs()}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A head and a second node, each started with `ray start` on 127.0.0.1, one CPU each."""
    pytest.importorskip("ray")
    port = _free_port()
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats", "--block"]
    kw = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    temp = tmp_path_factory.mktemp("ray")
    procs = [subprocess.Popen([RAY_BIN, "start", "--head", f"--port={port}", "--include-dashboard=false",
                               f"--temp-dir={temp}", *common], **kw)]
    try:
        deadline = time.time() + 60
        while True:  # the head is up when its port answers
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline and procs[0].poll() is None, "ray head did not start"
                time.sleep(0.2)
        procs.append(subprocess.Popen([RAY_BIN, "start", f"--address=127.0.0.1:{port}", *common], **kw))
        yield f"127.0.0.1:{port}"
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            p.wait(60)


def test_two_node_cluster_gives_the_local_results_on_both_nodes(two_nodes, tmp_path):
    import ray
    sweep = load_sweep("quick", TINY)
    # the local executor with one thread per group, as each Ray task has (thread count moves the last bits)
    run_sweep(sweep, tmp_path / "local", SweepOptions(threads=1), quiet=True)
    ray.init(address=two_nodes, log_to_driver=False)
    try:
        deadline = time.time() + 60
        while sum(n["Alive"] for n in ray.nodes()) < 2:
            assert time.time() < deadline, "second node did not join"
            time.sleep(0.5)
        stats = run_sweep(sweep, tmp_path / "ray", SweepOptions(executor="ray", address=two_nodes), quiet=True)
    finally:
        ray.shutdown()
    local, remote = _results(tmp_path / "local"), _results(tmp_path / "ray")
    assert len(local) == 30 and all(s == "finished" for s, _, _ in local.values())
    assert remote == local  # same run ids, statuses, test accuracies and per-epoch histories, bit for bit
    assert stats["trained"] == 30 and len(stats["nodes"]) == 2 and sum(stats["nodes"].values()) == 6
    from bnonly.version import code_version  # every row names the driver's code, its machine the worker's
    mine = code_version()
    assert all({k: r["versions"][k] for k in mine} == mine and r["versions"]["cpu_capability"]
               for r in Store(tmp_path / "ray" / "results.sqlite").runs())
    # 6 groups: one per MLP architecture (widths 8 and 16 share a stack), LeNet-5 bn and random+all
    # a second launch on the cluster finds everything done
    again = run_sweep(sweep, tmp_path / "ray", SweepOptions(executor="ray", address=two_nodes), quiet=True)
    assert again["skipped"] == 30 and again["trained"] == 0


def _sweep_process(out, *extra):
    cmd = [sys.executable, "-m", "bnonly", "sweep", "quick", "--out", str(out), "--executor", "ray",
           *[a for s in TINY for a in ("--set", s)], *extra]
    # SIGINT at its default in the child: a test run started as a background job ignores it, and the
    # child would inherit that and never see the Ctrl-C this test sends
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _task_pids():
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if re.search(r"\bray::bnonly_group\b", line)]


def test_killed_worker_reruns_its_group_exactly_once(tmp_path):
    pytest.importorskip("ray")
    proc = _sweep_process(tmp_path, "--set", "max_epochs=6")  # a local Ray of this machine
    killed, deadline = None, time.time() + 120
    while killed is None and time.time() < deadline and proc.poll() is None:
        pids = _task_pids()
        if pids:
            time.sleep(1.0)  # let it get into training
            if pids[0] in _task_pids():  # still on its task (an idle worker is titled ray::IDLE)
                try:
                    os.kill(pids[0], signal.SIGKILL)
                    killed = pids[0]
                except ProcessLookupError:
                    pass
        time.sleep(0.2)
    out, _ = proc.communicate(timeout=300)
    assert killed, "no Ray task was seen running"
    assert proc.returncode == 0, out
    done = re.findall(r"^\[\d+/30\] (.*?): test", out, flags=re.M)
    assert len(done) == 30 and len(set(done)) == 30, out  # every run reported once
    rows = _results(tmp_path)
    assert len(rows) == 30 and all(s == "finished" for s, _, _ in rows.values())


def test_sigterm_cancels_and_the_sweep_resumes(tmp_path):
    pytest.importorskip("ray")
    proc = _sweep_process(tmp_path, "--set", "max_epochs=6")
    deadline = time.time() + 120
    while not ((tmp_path / "results.sqlite").exists() and _results(tmp_path)):  # interrupt after the first group
        assert time.time() < deadline and proc.poll() is None, "no group finished"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # (a job's time limit; Ctrl-C's KeyboardInterrupt takes the same way out)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in out and "Traceback" not in out, out
    assert "Fatal Python error" not in out and "*** SIG" not in out, out  # (no C-level dump)
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    first = _results(tmp_path)
    assert 0 < len(first) < 30
    deadline = time.time() + 30
    while _task_pids():  # the driver's local Ray went down with it
        assert time.time() < deadline, "Ray tasks still running after Ctrl-C"
        time.sleep(0.5)
    proc = _sweep_process(tmp_path, "--set", "max_epochs=6")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert f"{len(first)} already in" in out
    rows = _results(tmp_path)
    assert len(rows) == 30 and all(s == "finished" for s, _, _ in rows.values())
    assert all(rows[k] == v for k, v in first.items())


def test_a_group_that_cannot_train_is_recorded_failed_not_retried(tmp_path, capsys):
    pytest.importorskip("ray")
    # 'last' puts every random weight in the last hidden layer: its 8x8 weights cannot hold the
    # 128 that gamma and beta of 8 layers of width 8 add up to
    bad = load_sweep("quick", ["preset=frankle", 'models=["mlp"]', "widths=[8]", "depths=[8]", 'trainable=["random"]',
                               'random_allocation="last"', "seeds=[0]", "subset=500", "max_epochs=1"])
    stats = run_sweep(bad, tmp_path, SweepOptions(executor="ray"), quiet=True)
    assert stats["failed"] == 1
    [row] = Store(tmp_path / "results.sqlite").runs()
    assert row["status"] == "failed" and row["error"].startswith("ConfigError: random_allocation='last'")


def test_missing_extra_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code = main(["sweep", "quick", "--out", str(tmp_path), "--executor", "ray", *[a for s in TINY for a in ("--set", s)]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["bnonly: error: --executor ray needs the 'ray' extra: pip install 'bnonly[ray]'"]


def test_bad_executor_flags_are_one_line(tmp_path, capsys):
    pytest.importorskip("ray")
    args = ["sweep", "quick", "--out", str(tmp_path / "out"), *[a for s in TINY for a in ("--set", s)]]
    cases = [(["--address", "auto"], "--address is for the Ray executor: add --executor ray"),
             (["--cpus-per-task", "2"], "--cpus-per-task is for the Ray executor: add --executor ray"),
             (["--executor", "ray", "--workers", "2"], "with --executor ray use --cpus-per-task"),
             (["--executor", "ray", "--threads", "2"], "a task's threads are --cpus-per-task"),
             (["--executor", "ray", "--cpus-per-task", "0"], "--cpus-per-task 0: must be >= 1"),
             (["--executor", "ray", "--device", "cuda", "--gpus-per-task", "2"], "--gpus-per-task 2: must be in (0, 1]"),
             (["--executor", "ray", "--device", "cpu", "--gpus-per-task", "0.5"], "--gpus-per-task is for --device cuda"),
             (["--executor", "ray", "--address", f"127.0.0.1:{_free_port()}"], "cannot reach a Ray head at 127.0.0.1:")]
    for extra, needle in cases:
        t0 = time.time()
        assert main([*args, *extra]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("bnonly: error: ") and needle in err[0], (extra, err)
        assert time.time() - t0 < 15, extra  # a wrong address fails fast, not after Ray's minutes of retries
    assert not (tmp_path / "out").exists()  # nothing written for any of them

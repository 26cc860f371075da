"""Runs that resume mid-training: a group stopped after epoch k (on time, by SIGTERM, or killed with
SIGKILL after a checkpoint) and launched again ends with the rows of an uninterrupted run, bit for
bit on this machine: test accuracies, epoch counts, histories and stored models."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bnonly.cli import main
from bnonly.config.layers import resolve
from bnonly.engine import checkpoint
from bnonly.engine.loop import train

GRID = ["--set", "widths=[64]", "--set", "depths=[3]", "--set", 'trainable=["bn","random","all"]',
        "--set", "seeds=[0,1]", "--set", "subset=12000", "--set", "max_epochs=8", "--set", "patience=8",
        "--no-estimate", "--threads", "1"]


def same(a, b) -> bool:
    return (a.test_accuracy == b.test_accuracy and a.history == b.history and a.epochs_run == b.epochs_run
            and a.best_epoch == b.best_epoch and a.artefact == b.artefact and a.status == b.status)


class StopAt(checkpoint.Checkpoints):
    """Checkpoints that stop the group at the end of epoch k (asked once per epoch end)."""

    def __init__(self, directory, k):
        super().__init__(directory, every=0)
        object.__setattr__(self, "asked", [0])
        object.__setattr__(self, "k", k)

    def stopping(self):
        self.asked[0] += 1
        return self.asked[0] > self.k  # (asked once before the first epoch, then at each epoch's end)


@pytest.mark.parametrize("model,sets,k", [("mlp", ["bn", "random", "none"], 1), ("mlp", ["bn", "random", "none"], 3),
                                          ("mlp", ["all"], 2), ("lenet5", ["bn", "random", "all"], 2)],
                         ids=["frozen-weight-1", "frozen-weight-3", "dense-2", "lenet5-2"])
def test_a_group_stopped_after_epoch_k_resumes_bit_for_bit(tmp_path, model, sets, k):
    torch.set_num_threads(1)
    size = {"width": 16, "depth": 2} if model == "mlp" else {}
    cfgs = [resolve(model=model, subset=1500 if model == "mlp" else 600, max_epochs=7 if model == "mlp" else 4,
                    patience=3, trainable=t, seed=s, **size)
            for t in sets for s in (0, 1)]
    whole = train(cfgs, "cpu")
    with pytest.raises(checkpoint.Stopped) as stopped:
        train(cfgs, "cpu", checkpoints=StopAt(tmp_path, k))
    assert stopped.value.epoch == k and len(list(tmp_path.glob("*.ckpt"))) == 1
    resumed = train(cfgs, "cpu", checkpoints=checkpoint.Checkpoints(tmp_path, every=0))
    assert all(same(a, b) for a, b in zip(whole, resumed))
    assert any(r.epochs_run > k + 1 for r in whole)  # (trained on after the stop)
    assert "none" not in sets or any(r.epochs_run <= k for r in whole)  # (a model out of the stack at the stop)
    assert all(len(r.parts) == 2 and r.parts[0]["to_epoch"] == k and r.parts[1]["from_epoch"] == k + 1
               for r in resumed if r.epochs_run > k)


def test_a_frozen_weight_checkpoint_is_kilobytes(tmp_path):
    """Frozen weights are rebuilt from the seed: a width-784 depth-4 bn/random group of 2 seeds
    (4 models of 2.5 million frozen weights, 40 MB) checkpoints in under 1 MB (the head trains in
    every set: now, at its best epoch and its momentum, 4 x 3 x 7,850 floats)."""
    cfgs = [resolve(width=784, depth=4, subset=600, max_epochs=3, trainable=t, seed=s)
            for t in ("bn", "random") for s in (0, 1)]
    with pytest.raises(checkpoint.Stopped):
        train(cfgs, "cpu", checkpoints=StopAt(tmp_path, 1))
    (ckpt,) = tmp_path.glob("*.ckpt")
    assert ckpt.stat().st_size < 1_000_000, ckpt.stat().st_size


def test_a_torn_or_foreign_checkpoint_is_one_line_and_its_group_starts_again(tmp_path, capsys):
    cfgs = [resolve(width=16, depth=2, subset=1500, max_epochs=4, trainable="bn", seed=s) for s in (0, 1)]
    whole = train(cfgs, "cpu")
    with pytest.raises(checkpoint.Stopped):
        train(cfgs, "cpu", checkpoints=StopAt(tmp_path, 2))
    (ckpt,) = tmp_path.glob("*.ckpt")
    blob = ckpt.read_bytes()
    for damaged, why in ((blob[: len(blob) // 2], "checksum does not match"), (b"junk", "not a bnonly checkpoint")):
        ckpt.write_bytes(damaged)
        again = train(cfgs, "cpu", checkpoints=checkpoint.Checkpoints(tmp_path, every=1e9))
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err and "starts again from epoch 0" in err, err
        assert all(same(a, b) and len(b.parts) == 1 for a, b in zip(whole, again))
    # a write killed half-way leaves the previous checkpoint whole and no temporary file beside it
    ckpt.write_bytes(blob)

    class Torn(dict):
        def __reduce_ex__(self, protocol):
            raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        checkpoint.save(ckpt, {"runs": [], "x": Torn()})
    assert ckpt.read_bytes() == blob and [p.name for p in tmp_path.iterdir()] == [ckpt.name]


def rows(store: Path) -> dict:
    db = sqlite3.connect(store / "results.sqlite")
    out = {r[0]: r[1:] for r in db.execute("SELECT run_id, status, test_accuracy, epochs_run, best_epoch, history "
                                           "FROM runs")}
    blobs = dict(db.execute("SELECT run_id, blob FROM artefacts").fetchall())
    return {k: (*v, blobs.get(k)) for k, v in out.items()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "s"
    assert main(["sweep", "quick", "--out", str(out)] + GRID) == 0
    return rows(out)


def sweep(out, *extra):
    env = {**os.environ, "BNONLY_CHECKPOINT_SECONDS": "0"}
    return subprocess.Popen([sys.executable, "-m", "bnonly", "sweep", "quick", "--out", str(out), *GRID, *extra],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
                            start_new_session=True)


def wait_for_checkpoint(out: Path, p, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and p.poll() is None:
        if list((out / "checkpoints").glob("*.ckpt")):
            return
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_killed_sweep_resumes_mid_group_to_the_uninterrupted_rows(tmp_path, uninterrupted, how):
    out = tmp_path / "s"
    p = sweep(out)
    wait_for_checkpoint(out, p)
    os.killpg(p.pid, getattr(signal, how))
    err = p.communicate(timeout=120)[1]
    if how == "SIGTERM":  # every group in progress saved at its epoch's end; exit 0 with the way on
        assert p.returncode == 0 and "stopped on time (a signal)" in err and "go on with: bnonly sweep quick" in err, err
    assert len(rows(out)) < len(uninterrupted)
    again = sweep(out)
    err = again.communicate(timeout=300)[1]
    assert again.returncode == 0, err[-2000:]
    assert rows(out) == uninterrupted
    assert not list((out / "checkpoints").glob("*.ckpt"))  # a finished group drops its checkpoint
    resumed = sqlite3.connect(out / "results.sqlite").execute(
        "SELECT COUNT(*) FROM runs WHERE json_extract(versions, '$.parts') IS NOT NULL").fetchone()[0]
    assert resumed > 0  # (some runs did resume mid-training, and say where each part ran)


def test_stop_after_stops_within_an_epoch_and_the_next_launch_finishes(tmp_path, uninterrupted):
    out = tmp_path / "s"
    t0 = time.time()
    p = sweep(out, "--stop-after", "2s")
    err = p.communicate(timeout=120)[1]
    took = time.time() - t0
    assert p.returncode == 0 and "stopped on time (--stop-after)" in err, err[-2000:]
    assert took < 2 + 15, took  # (start-up, then at most one epoch of a group past the time)
    left = int(err.split("stopped on time (--stop-after): ")[1].split(" of ")[0])
    assert left > 0  # (groups in progress checkpointed, or not started where start-up took the 2 s)
    again = sweep(out)
    assert again.communicate(timeout=300)[1] is not None and again.returncode == 0
    assert rows(out) == uninterrupted
    from bnonly.store import Store
    first, second = Store(out / "results.sqlite").meta()["sweeps"]  # each part: when, where, what code, how long
    # (whether a group was in progress at 2 s depends on the start-up's pace: stopping mid-group is
    # tested with signals above; here, each run trained once across the two parts)
    assert second["stopped"] == 0
    assert first["trained"] + second["trained"] == len(rows(out))
    assert first["wall_seconds"] < 2 + 15 and first["machine"]["device_name"] and first["code"]


def test_a_bad_stop_after_is_one_line(tmp_path, capsys):
    assert main(["sweep", "quick", "--out", str(tmp_path / "s"), "--stop-after", "soon"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--stop-after 'soon': expected a duration" in err
    assert not (tmp_path / "s").exists()

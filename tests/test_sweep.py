import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch

from bnonly.cli import main
from bnonly.errors import ConfigError
from bnonly.config.layers import resolve
from bnonly.store import Store
from bnonly.engine.device import EngineOptions
from bnonly.sweeps.grouping import plan_groups
from bnonly.config.layers import load_sweep, parse_set

TINY = ["--set", "widths=[8,16]", "--set", "depths=[1,2]", "--set", 'trainable=["bn","random"]',
        "--set", "seeds=[0,1]", "--set", "subset=2000", "--set", "max_epochs=2", "--set", 'models=["mlp"]']


def test_shipped_grids_expand():
    q = load_sweep("quick")
    assert len(q.runs()) == 2 * 2 * 4 * 3  # widths x depths x (all, all-nobn, bn, random) x seeds
    assert {c.trainable for c in q.runs()} >= {"bn", "random"}  # the report's central comparison
    assert all(c.subset == 0 and c.max_epochs == 100 and c.patience == 3 for c in q.runs())  # the protocol
    c = load_sweep("claims")
    assert len(c.runs()) == 3 * 3 * 4 * 3 + 4 * 3 + 2 * 4 + 2 * 3 * 2 * 44  # widths x depths; LeNet-5; [[also]]: claims 2, 4
    assert sorted(k.seed for k in c.runs() if (k.width, k.depth, k.trainable) == (784, 8, "bn")) == list(range(7))
    assert all(c.subset == 0 and c.max_epochs == 100 for c in c.runs())
    r = load_sweep("report")
    assert len(r.runs()) == 7 * 7 * 7 * 3 + 7 * 3
    assert {c.width for c in r.runs() if c.model == "mlp"} == {10, 20, 40, 80, 100, 400, 784}
    assert len({c.run_id for c in r.runs()}) == len(r.runs())
    # questions: per data set x width x depth x seed: 3 norms x (all, bn, bn+out) + random x 3 norms x
    # 4 allocations + all-nobn = 22 runs; 2 data sets x 2 widths x 2 depths x 3 seeds
    assert len(load_sweep("questions").runs()) == 22 * 2 * 2 * 2 * 3


def test_also_adds_cells_to_the_grid_each_run_once(tmp_path):
    """[[also]]: the grid with some keys replaced (more seeds for one model's cells), the union of
    the runs, each once, in the grid's order and then the table's; it survives to_dict (the store's meta)."""
    f = tmp_path / "more.toml"
    f.write_text('models = ["mlp", "lenet5"]\nwidths = [8]\ndepths = [2]\ntrainable = ["bn", "random"]\n'
                 'seeds = [0, 1]\n[[also]]\nmodels = ["lenet5"]\nseeds = [1, 2, 3]\n')
    s = load_sweep(str(f))
    got = [(c.model, c.trainable, c.seed) for c in s.runs()]
    assert got == [("mlp", t, k) for t in ("bn", "random") for k in (0, 1)] + \
        [("lenet5", t, k) for t in ("bn", "random") for k in (0, 1)] + \
        [("lenet5", t, k) for t in ("bn", "random") for k in (2, 3)]
    assert load_sweep(s).runs() == s.runs() and s.to_dict()["also"] == [{"models": ["lenet5"], "seeds": [1, 2, 3]}]


def test_a_sweep_logged_without_a_terminal_says_how_long_is_left(tmp_path, capsys):
    """No bar in a log (stderr is not a terminal): after each group but the last, one line of the time
    left at most, from the sweep's pace so far."""
    grid = ["--set", "widths=[8]", "--set", "depths=[1,2]", "--set", 'trainable=["bn"]', "--set", "seeds=[0]",
            "--set", "subset=1000", "--set", "max_epochs=1", "--set", 'models=["mlp"]', "--no-estimate"]
    assert main(["sweep", "quick", "--out", str(tmp_path / "s")] + grid) == 0  # two groups: one per depth
    lines = capsys.readouterr().err.splitlines()
    left = [i for i, line in enumerate(lines) if line.startswith("  about ") and line.endswith(" left at most")]
    assert len(left) == 1 and lines[left[0] - 1].startswith("[1/2] ") and lines[left[0] + 1].startswith("[2/2] ")


def test_the_time_left_weighs_each_groups_steps_by_its_cost():
    """A sweep whose cheap group ended first, with a group 100 times costlier per step left: the time
    left is that group's share of the estimate at the pace so far (not its step count's), no sooner
    than it can end on one of the two workers, and at the pace of the epochs the first group ran."""
    from bnonly.config.run import RunConfig
    from bnonly.sweeps.executors import Progress
    cheap, costly = RunConfig(width=8, depth=1, max_epochs=10), RunConfig(width=784, depth=8, max_epochs=10)
    progress = Progress([[cheap], [costly]], lambda c: 10, quiet=True, epoch_seconds=[1.0, 100.0], workers=1)
    progress.started = time.monotonic() - 30
    progress.done(0)  # 10 estimated seconds in 30 wall seconds: 3 s a second, 1,000 estimated seconds left
    assert progress.left_text() == "about 50 min left at most"
    progress = Progress([[cheap], [costly]], lambda c: 10, quiet=True, epoch_seconds=[1.0, 100.0], workers=2)
    progress.started = time.monotonic() - 30
    progress.done(0)  # two workers at that pace: the costly group alone on one of them, twice as long
    assert progress.left_text() == "about 1.7 h left at most"
    progress = Progress([[cheap], [costly]], lambda c: 10, quiet=True, epoch_seconds=[1.0, 100.0], workers=1)
    progress.started = time.monotonic() - 30
    progress.done(0, [2])  # it stopped early after 2 of its 10 epochs: 2 estimated seconds done, not 10
    assert progress.left_text() == "about 4.2 h left at most" and progress.bar.total == 10 * 2 + 100
    # what a row trained in this sweep: less the epochs of earlier parts (resumed), none where it failed
    from bnonly.sweeps.driver import epochs_here
    resumed = {"status": "finished", "epochs_run": 80, "versions": {"parts": [{"from_epoch": 1}, {"from_epoch": 51}]}}
    assert epochs_here(resumed) == 30 and epochs_here({"status": "finished", "epochs_run": 12}) == 12
    assert epochs_here({"status": "failed"}) == 0 and epochs_here({"status": "stopped", "epoch": 7}) is None
    unweighed = Progress([[cheap], [costly]], lambda c: 10, quiet=True)  # no estimate: steps count alike
    unweighed.started = time.monotonic() - 30
    unweighed.done(0)
    assert unweighed.left_text() == "about 30 s left at most"


def test_overrides_and_grouping():
    s = load_sweep("quick", TINY[1::2])
    runs = s.runs()
    assert len(runs) == 2 * 2 * 2 * 2
    assert all(c.max_epochs == 2 and c.subset == 2000 for c in runs)
    groups = plan_groups(runs, EngineOptions.for_device("cpu"))
    # width 8: one stack per MLP architecture, bn with random (its gathered entries)
    assert len(groups) == 4 and all(len(g) == 4 and {c.trainable for c in g} == {"bn", "random"} for g in groups)
    assert parse_set(["preset=frankle", "widths=[1, 2]"]) == {"preset": "frankle", "widths": [1, 2]}
    # norm 'none': no sets that need a norm layer, and `all` is `all-nobn` (one run, not two)
    none = load_sweep("quick", ['norms=["batchnorm","none"]', "widths=[8]", "depths=[1]", "seeds=[0]", 'models=["mlp"]',
                                'trainable=["all","all-nobn","bn","bn+out","random","out","none"]'])
    sets = sorted((c.norm, c.trainable) for c in none.runs())
    assert sets == sorted([("batchnorm", t) for t in ("all", "bn", "bn+out", "random", "out", "none")] +
                          [("none", "all-nobn"), ("none", "out"), ("none", "none")])


@pytest.mark.parametrize("text,needle", [
    ("widths = [10\n", "not valid TOML"),
    ("widhts = [10]\n", "'widhts'"),
    ("widths = [-1]\n", "width=-1"),
    ("widths = 'x'\n", "widths must be"),
    ("trainable = ['bn', 'nope']\n", "trainable='nope'"),
    ("max_epochs = 0\n", "max_epochs"),
    ("", "an empty sweep file"),
    ("# a comment only\n", "an empty sweep file"),
    ("norm = 'none'\ntrainable = ['bn', 'random']\n", "the grid has no runs"),
    ("[[also]]\nmax_epochs = [3]\n", "may only replace grid keys"),
    ("[[also]]\nseeds = 3\n", "seeds must be a non-empty list"),
    ("also = 3\n", "also must be a list of tables"),
])
def test_bad_sweep_configs(tmp_path, text, needle, capsys):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_sweep(str(f))
    assert main(["sweep", str(f), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle.strip("'") in err


def test_config_holes_are_one_line_errors_naming_their_source(capsys):
    """`--config ''` for a run or a sweep, and an override that names the flag it came from (not the
    study's file): each one line, exit 2."""
    for argv, needle in ((["train", "--config", ""], "--config '': expected a path"),
                         (["reproduce", "--config", "", "--out", "/tmp/never"], "sweep config '': expected a shipped study"),
                         (["sweep", "quick", "--set", "name=[1]"], "--set: name must be a string"),
                         (["sweep", "quick", "--set", "widths=10"], "--set: widths must be a non-empty list")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, (argv, err)
    with pytest.raises(ConfigError, match="sweep\\(\\): preset must be a string"):
        load_sweep("quick", keywords={"preset": 3})


def sweep_cmd(out):
    return [sys.executable, "-m", "bnonly", "sweep", "quick", "--out", str(out)] + TINY


def finished_rows(out):
    return {r["run_id"]: (r["status"], r["test_accuracy"], r["history"]) for r in Store(out / "results.sqlite").runs()}


def test_killed_sweep_resumes_to_the_same_results(tmp_path):
    full = tmp_path / "full"
    subprocess.run(sweep_cmd(full), check=True, capture_output=True)
    expected = finished_rows(full)
    assert len(expected) == 16 and all(v[0] == "finished" for v in expected.values())

    out = tmp_path / "killed"
    proc = subprocess.Popen(sweep_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = out / "results.sqlite"
    n = 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                n = sqlite3.connect(db, timeout=1).execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            except sqlite3.OperationalError:
                n = 0
            if n:
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = finished_rows(out)
    assert 0 < len(partial) < 16, len(partial)  # really killed mid-way
    subprocess.run(sweep_cmd(out), check=True, capture_output=True)
    assert finished_rows(out) == expected  # same runs, same metrics, none lost or duplicated
    store = Store(db)
    assert all(store.artefact(k) for k in expected)  # no run recorded as finished without its artefact
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_worker_processes_give_the_same_results(tmp_path):
    args = ["sweep", "quick"] + TINY + ["--set", "widths=[8]"]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    assert main(args + ["--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    one, two = finished_rows(tmp_path / "one"), finished_rows(tmp_path / "two")
    assert len(one) == 8 and one.keys() == two.keys()
    for k in one:  # other thread counts may round differently: equal to float tolerance
        assert one[k][0] == two[k][0] and abs(one[k][1] - two[k][1]) < 0.01


def test_two_processes_share_a_store(tmp_path):
    out = tmp_path / "shared"
    procs = [subprocess.Popen(sweep_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        assert p.wait() == 0, p.stderr.read()
    rows = Store(out / "results.sqlite").runs()
    assert len(rows) == 16 and len({r["run_id"] for r in rows}) == 16
    assert all(r["status"] == "finished" for r in rows)
    assert sqlite3.connect(out / "results.sqlite").execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_diverged_runs_are_recorded_not_fatal(tmp_path, capsys):
    args = ["sweep", "quick", "--out", str(tmp_path)] + TINY[:2] + ["--set", "depths=[1]", "--set", 'trainable=["all-nobn"]',
            "--set", "seeds=[0]", "--set", "subset=1000", "--set", "max_epochs=2", "--set", 'models=["mlp"]',
            "--set", "lr=1e20"]
    assert main(args) == 0
    rows = Store(tmp_path / "results.sqlite").runs()
    assert [r["status"] for r in rows] == ["diverged", "diverged"]


def test_reproduce_writes_report_and_skips_finished(tmp_path, capsys):
    out = tmp_path / "rep"
    args = ["reproduce", "--config", "quick", "--out", str(out)] + TINY + ["--set", 'models=["mlp","lenet5"]',
                                                                        "--set", "widths=[8]", "--set", "seeds=[0]"]
    assert main(args) == 0
    for f in ("report.html", "report.md", "accuracy_vs_depth.png", "accuracy_vs_depth.svg",
              "accuracy_vs_params.png", "results.csv"):
        assert (out / f).stat().st_size > 0, f
    assert "Last sweep: 'quick' with preset 'report'." in (out / "report.md").read_text()
    n = len(Store(out / "results.sqlite").runs())
    assert n == 2 * 2 + 2  # mlp 8 x {1,2} x {bn, random} + LeNet x {bn, random}
    capsys.readouterr()
    assert main(args) == 0  # second launch: nothing left to train
    assert f"{n} already in" in capsys.readouterr().err


def test_questions_study_report_has_every_section(tmp_path):
    from bnonly.registry.data import FASHION_MNIST_DIR
    datasets = '["mnist","fashion-mnist"]' if FASHION_MNIST_DIR.is_dir() else '["mnist"]'
    out = tmp_path / "q"
    args = ["reproduce", "--config", "questions", "--out", str(out), "--set", "widths=[8]", "--set", "depths=[1]",
            "--set", "seeds=[0,1]", "--set", "subset=1500", "--set", "max_epochs=2", "--set", f"datasets={datasets}"]
    assert main(args) == 0
    md = (out / "report.md").read_text()
    for title in ("Affine parameters without normalization", "LayerNorm's affine parameters",
                  "Uneven allocation of the random parameters"):
        assert f"## {title}" in md
    # affine, layernorm, 3 allocations (and bn vs random on fashion-mnist)
    n = 5 + ("fashion" in datasets)
    assert md.count("paired by seed per architecture and data set: the 95% interval") == n
    assert md.count("| difference (points) | n |") == n and "| mlp_w8_d1 |" in md
    for f in ("question_affine.png", "question_layernorm.png", "question_allocation.png"):
        assert (out / f).stat().st_size > 0
    if "fashion" in datasets:
        assert "## Other data sets" in md and "## Claims on fashion-mnist" in md
        assert "| mlp_w8_d1 fashion-mnist |" in md


def test_stored_models_rebuild_exactly_and_export(tmp_path, capsys):
    import torch

    from bnonly.config.run import RunConfig
    from bnonly.engine.resident import load
    from bnonly.engine.loop import evaluate
    from bnonly.registry.nets import build
    from bnonly.engine.stack import Batch, Rows
    from bnonly.engine.fused import FusedStack
    from bnonly.engine.masks import plan, rebuild
    out = tmp_path / "m"
    assert main(["sweep", "quick", "--out", str(out), "--group-size", "1"] + TINY + ["--set", "widths=[8]",
                 "--set", 'trainable=["bn","random","all"]', "--set", "seeds=[0]"]) == 0
    store = Store(out / "results.sqlite")
    rows = store.runs()
    assert len(rows) == 6
    for r in rows:
        cfg = RunConfig(**r["config"])
        blob = store.artefact(r["run_id"])
        assert blob is not None
        if r["trainable"] == "bn":
            assert len(blob) < 20_000  # only what trained: gamma, plus BN statistics
        model = rebuild(cfg, blob)
        d = load(cfg.dataset, cfg.val_fraction, cfg.data_seed, cfg.subset)
        stack = FusedStack.from_models([model], [plan(build(cfg), cfg)])
        _, acc = evaluate(stack, Batch(d.x_test[None], d.y_test[None], Rows([0])), d.input_shape)
        assert float(acc[0]) == r["test_accuracy"]  # exactly the stored number
        # export-model: a plain state_dict that loads with weights_only=True into a fresh model
        path = tmp_path / f"{r['run_id']}.pt"
        assert main(["export-model", str(out), r["run_id"], str(path)]) == 0
        fresh = build(cfg).eval()
        fresh.load_state_dict(torch.load(path, weights_only=True))
        x = d.x_test[:64]
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
    assert main(["export-model", str(out), "nope", str(tmp_path / "x.pt")]) == 2
    assert "nope" in capsys.readouterr().err


def test_parallel_executors_start_the_longest_groups_first():
    """--workers and Ray start BN-like groups (the longest under early stopping) first, each kind by
    its weights x models, so that no long group starts last while other workers idle."""
    from bnonly.sweeps.grouping import longest_first
    runs = [resolve("report", model="mlp", width=w, depth=d, trainable=t, seed=s)
            for w in (10, 100) for d in (2, 6) for t in ("all", "bn") for s in (0, 1)]
    order = [(g[0].trainable, g[0].width, g[0].depth, len(g)) for g in longest_first(plan_groups(runs, EngineOptions.for_device("cpu")))]
    assert order == [("bn", 100, 6, 2), ("bn", 100, 2, 2), ("all", 10, 6, 4), ("all", 10, 2, 4),  # width 10: all
                     ("all", 100, 6, 2), ("all", 100, 2, 2)]                                      # with bn


def test_stacks_by_kind_and_the_cpu_cap():
    """A sweep stacks runs by the work their sets need (sweeps/grouping.py: stack_kind, read off the set
    registry): dense weight gradients, gamma/beta, random's gathered entries, or the head alone; on
    a CPU every set of a width-10 model in one stack, on a GPU the frozen sets together; a CPU caps
    dense stacks so their weights stay cache-sized."""
    from bnonly.registry.sets import SETS
    from bnonly.sweeps.grouping import stack_kind
    kinds = {t: stack_kind(resolve("frankle", trainable=t)) for t in SETS}
    assert kinds == {"all": "dense", "all-nobn": "dense", "bn": "affine", "bn+out": "affine", "random": "entries",
                     "out": "head", "none": "head", "gamma": "affine", "beta": "affine"}
    assert stack_kind(resolve(model="lenet5", trainable="random")) == "dense"  # its conv weights train through masks
    def plan(width, device, **kw):
        runs = [resolve("report", width=width, depth=4, trainable=t, seed=s)
                for t in ("all", "bn", "random", "out", "none") for s in range(3)]
        return sorted((sorted({c.trainable for c in g}), len(g))
                      for g in plan_groups(runs, EngineOptions.for_device(device), **kw))
    assert plan(784, "cpu") == [(["all"], 1)] * 3 + [(["bn"], 3), (["none", "out"], 6), (["random"], 3)]  # 1 per stack
    frozen = ["bn", "none", "out", "random"]
    assert plan(100, "cpu") == [(["all"], 3), (["bn"], 3), (["none", "out"], 6), (["random"], 3)]
    assert plan(10, "cpu") == [(["all", *frozen], 15)]             # every set shares a stack
    assert plan(784, "cuda") == [(["all"], 3), (frozen, 12)]
    assert sorted(n for _, n in plan(784, "cuda", max_group=4)) == [3, 4, 4, 4]
    two = [resolve("report", width=784, depth=2, trainable="all", seed=s) for s in range(5)]  # a cap of 3 models
    assert [len(g) for g in plan_groups(two, EngineOptions.for_device("cpu"))] == [3, 2]
    assert [len(g) for g in plan_groups(two, EngineOptions.for_device("cpu"), threads=2)] == [2, 2, 1]  # a multiple of 2


def test_a_resumed_sweep_trains_nothing_for_its_estimate(tmp_path, monkeypatch):
    """The estimate's timings are kept in the store per machine: asked again for the same groups, it
    measures nothing (no extra training) and says so."""
    from bnonly.config.layers import load_sweep
    from bnonly.config.options import SweepOptions
    from bnonly.store import Store
    from bnonly.sweeps import driver, grouping
    sweep = load_sweep("quick", ['widths=[8]', 'depths=[1]', 'trainable=["bn"]', "subset=600", "max_epochs=1"])
    options = SweepOptions(device="cpu")
    store = Store(tmp_path / "results.sqlite")
    groups = driver.grouped(sweep.runs(), "cpu", options)
    first, per_group = driver.estimate(groups, "cpu", options, store)
    assert "measured on 1 group shape in" in first and len(per_group) == 1 and per_group[0] > 0
    calls = []
    monkeypatch.setattr(grouping, "measure_seconds", lambda *a, **k: calls.append(a) or {"epoch": 1.0, "once": 1.0})
    again, per_group_again = driver.estimate(groups, "cpu", options, store)
    assert calls == [] and per_group_again == per_group and "from this store's earlier measurement, nothing trained for it" in again
    assert again.split(" if every")[0] == first.split(" if every")[0]  # the same estimate

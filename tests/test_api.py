"""The Python API, driven the way the README shows it (real MNIST subsets, a few epochs)."""
import math
import sys

import pytest
import torch

import bnonly
from bnonly.cli import main
from bnonly.engine.resident import load

GRID = dict(models=["mlp"], widths=[16], depths=[2], trainable=["bn", "all", "random"], seeds=[0, 1],
            subset=1500, max_epochs=2)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "quick"
    s = bnonly.sweep("quick", out, progress=False, **GRID)
    assert s.out == out and s.stats["trained"] == 6 and len(s.run_ids) == 6
    return out, s.results()


def test_train_returns_result_with_model_and_matches_cli(capsys):
    r = bnonly.train(width=16, depth=2, trainable="bn", subset=1500, max_epochs=2, progress=False)
    assert r.status == "finished" and r.device == "cpu" and len(r.history) == 2
    assert r.trainable_params == 2 * 16 and r.trainable_by_layer["blocks.0.norm"] == 16
    assert isinstance(r.model, torch.nn.Module)
    # the same run from the command line gives the same numbers (one implementation)
    assert main(["train", "--width", "16", "--depth", "2", "--trainable", "bn", "--subset", "1500",
                 "--max-epochs", "2", "--json"]) == 0
    cap = capsys.readouterr()
    assert f'"test_accuracy": {r.test_accuracy}' in cap.out
    assert "device: cpu" in cap.err  # the chosen device is printed at the start
    # a RunConfig, changed by keywords
    cfg = bnonly.resolve("frankle", width=16, depth=1, subset=1000, max_epochs=1)
    r2 = bnonly.train(cfg, trainable="gamma", progress=False)
    assert r2.config.gamma_init == "uniform(0,1)" and r2.trainable_params == 16


@pytest.mark.parametrize("kwargs,argv", [
    (dict(width=0), ["--width", "0"]),
    (dict(trainable="everything"), ["--trainable", "everything"]),
    (dict(preset="nope"), ["--preset", "nope"]),
    (dict(max_epochs=0), ["--epochs", "0"]),
    (dict(device="tpu"), None),
])
def test_keywords_fail_like_flags(kwargs, argv, capsys):
    with pytest.raises(bnonly.BnonlyError) as e:
        bnonly.train(progress=False, **kwargs)
    assert "\n" not in str(e.value)
    if argv:
        assert main(["train"] + argv) == 2
        assert capsys.readouterr().err.strip() == f"bnonly: error: {e.value}"
    with pytest.raises(bnonly.ConfigError, match="unknown key 'widht'"):
        bnonly.train(widht=3)


def test_sweep_results_report_load_model(swept, tmp_path):
    out, df = swept
    assert len(df) == 6 and set(df.trainable) == {"bn", "all", "random"} and set(df.seed) == {0, 1}
    assert (df.status == "finished").all() and (df.device == "cpu").all()
    for col in ("width", "depth", "lr", "gamma_init", "test_accuracy", "history", "trainable_by_layer", "versions"):
        assert col in df.columns
    assert all(len(h) == e for h, e in zip(df.history, df.epochs_run))
    assert (df.trainable_params == df.trainable_by_layer.map(lambda d: sum(d.values()))).all()
    assert df.versions[0]["device_name"]
    # resuming trains nothing and returns the same table
    again = bnonly.sweep("quick", out, progress=False, **GRID)
    assert again.stats["trained"] == 0 and again.stats["skipped"] == 6
    assert again.results().drop(columns=["history"]).equals(df.drop(columns=["history"]))
    assert bnonly.results(out).run_id.tolist() == sorted(df.run_id)
    # load_model: the stored run's model gives the stored test accuracy
    row = df[df.trainable == "bn"].iloc[0]
    model = bnonly.load_model(out, row.run_id)
    d = load("mnist", 0.2, 0, 1500)
    with torch.no_grad():
        acc = (model(d.x_test).argmax(1) == d.y_test).float().mean().item()
    assert math.isclose(acc, row.test_accuracy, abs_tol=1e-6)
    with pytest.raises(bnonly.ConfigError, match="no finished run"):
        bnonly.load_model(out, "0123456789abcdef")
    with pytest.raises(bnonly.StoreError, match="no results store"):
        bnonly.results(tmp_path / "empty")


def test_report_returns_html(swept):
    out, _ = swept
    html = bnonly.report(out)
    assert html == out / "report.html" and html.is_file() and (out / "results.csv").is_file()
    text = html.read_text()
    assert 'nav class="toc"' in text and '<details class="fold"' in text


def test_sweep_keywords_checked_before_training(tmp_path):
    with pytest.raises(bnonly.ConfigError, match="sweep\\(\\): unknown key 'widht'"):
        bnonly.sweep("quick", tmp_path / "a", widht=[3])
    with pytest.raises(bnonly.ConfigError, match="widths must be a non-empty list"):
        bnonly.sweep("quick", tmp_path / "b", widths=5)
    with pytest.raises(bnonly.ConfigError, match="--group-size 0"):
        bnonly.sweep("quick", tmp_path / "c", group_size=0, **GRID)
    assert not any(tmp_path.iterdir())  # nothing written


def test_missing_pandas_is_one_line(swept, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(bnonly.ConfigError, match=r"pip install 'bnonly\[pandas\]'"):
        bnonly.results(swept[0])


def test_api_names_are_functions_whatever_is_imported():
    import importlib
    for mod in ("bnonly.reports.build", "bnonly.sweeps.driver", "bnonly.study.gamma", "bnonly.cli"):
        importlib.import_module(mod)
    assert all(callable(getattr(bnonly, f)) and getattr(bnonly, f).__module__ == "bnonly.api"
               for f in ("train", "sweep", "results", "report", "load_model"))


def test_review_findings_are_one_line_errors(tmp_path):
    """What an adversarial pass found: each is a BnonlyError with one line, nothing written."""
    cases = [
        (lambda: bnonly.sweep(bnonly.load_sweep("quick"), tmp_path / "a", widths=[0]), "width=0: must be >= 1"),
        (lambda: bnonly.sweep("quick", tmp_path / "b", group_size="4"), "--group-size '4': expected an integer"),
        (lambda: bnonly.sweep("quick", 5), "--out 5: expected a path"),
        (lambda: bnonly.sweep(bnonly.RunConfig()), "expected a shipped study name"),
        (lambda: bnonly.sweep("quick", tmp_path / "c", widths=10), "sweep(): widths must be a non-empty list"),
        (lambda: bnonly.train(data_dir=123), "--data-dir 123: expected a path"),
        (lambda: bnonly.train(data_seed=-1), "data_seed=-1: must be >= 0"),
        (lambda: bnonly.results(None), "expected a path"),
        (lambda: bnonly.report(tmp_path, where="max_epochs"), "--where"),
    ]
    for call, needle in cases:
        with pytest.raises(bnonly.BnonlyError) as e:
            call()
        assert needle in str(e.value) and "\n" not in str(e.value), (needle, e.value)
    assert not any(tmp_path.iterdir())


def test_sweep_config_with_overrides_and_where_forms(swept):
    out, df = swept
    spec = bnonly.load_sweep("quick")
    again = bnonly.sweep(spec, out, progress=False, **GRID)  # a SweepConfig, keys overridden: all stored
    assert sorted(again.run_ids) == sorted(df.run_id) and again.stats["trained"] == 0
    a = bnonly.report(out, where={"hidden_beta": False}).read_text()
    b = bnonly.report(out, where=["hidden_beta=false"]).read_text()
    assert a == b and "6 runs selected by --where" in a


def test_out_of_memory_is_one_line(monkeypatch):
    from bnonly.engine import loop

    def huge(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 3136000000000 bytes.")
    monkeypatch.setattr(loop, "train", huge)
    with pytest.raises(bnonly.OutOfMemory, match=r"out of memory \(2920.6 GiB asked for\)"):
        bnonly.train(width=16, depth=1, subset=1000, progress=False)


def test_unguarded_script_with_workers_is_refused(tmp_path):
    import subprocess
    script = tmp_path / "s.py"
    script.write_text(f"import bnonly\nbnonly.sweep('quick', {str(tmp_path / 'o')!r}, workers=2, widths=[8])\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and 'if __name__ == "__main__":' in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "o").exists()

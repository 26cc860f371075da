import json
import subprocess
import sys

import pytest

from bnonly.cli import main


@pytest.mark.parametrize("argv,needle", [
    (["--width", "-5"], "width"),
    (["--trainable", "everything"], "trainable"),
    (["--depth", "0"], "depth"),
    (["--dataset", "imagenet"], "dataset"),
    (["--epochs", "0"], "max_epochs"),
    (["--width", "wide"], "width"),
    (["--preset", "nope"], "preset"),
    (["--no-such-flag", "1"], "no-such-flag"),
])
def test_bad_input_is_one_line_exit_2(argv, needle, capsys):
    assert main(["train"] + argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_train_json_exact_call():
    cmd = [sys.executable, "-m", "bnonly", "train", "--model", "mlp", "--width", "784", "--depth", "4",
           "--trainable", "bn", "--epochs", "3", "--seed", "0", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    for key in ("test_accuracy", "val_accuracy", "epochs_run", "trainable_params", "trainable_by_layer",
                "total_params", "seconds", "config"):
        assert key in res
    assert res["trainable_params"] == 3136 and res["epochs_run"] == 3
    assert res["config"]["width"] == 784 and res["config"]["gamma_init"] == "uniform(-1,1)"
    assert res["test_accuracy"] > 0.5


def test_toml_config_and_flag_override(tmp_path, capsys):
    f = tmp_path / "run.toml"
    f.write_text('preset = "frankle"\nwidth = 16\ndepth = 1\nsubset = 1000\nmax_epochs = 1\ntrainable = "bn"\n')
    assert main(["train", "--config", str(f), "--depth", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["config"]["depth"] == 2 and res["config"]["gamma_init"] == "uniform(0,1)" and res["trainable_params"] == 64
    f.write_text("widht = 3\n")
    assert main(["train", "--config", str(f)]) == 2
    assert "widht" in capsys.readouterr().err


def test_missing_extra_and_missing_gpu_are_one_line(tmp_path, capsys):
    from bnonly.store import Store
    Store(tmp_path / "results.sqlite")
    import sys
    saved = sys.modules.get("pyarrow")
    sys.modules["pyarrow"] = None  # the extra missing, whether or not this environment has it: import fails
    try:
        assert main(["export", str(tmp_path), str(tmp_path / "r.parquet")]) == 2
    finally:
        sys.modules.pop("pyarrow")
        if saved is not None:
            sys.modules["pyarrow"] = saved
    err = capsys.readouterr().err
    assert "bnonly[parquet]" in err and err.count("\n") == 1
    import torch
    if not torch.cuda.is_available():
        assert main(["train", "--device", "cuda", "--width", "8", "--depth", "1", "--subset", "500"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cuda" in err
        # a sweep stops with the same line before it trains or writes anything
        assert main(["sweep", "quick", "--out", str(tmp_path / "cuda"), "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cuda" in err and not (tmp_path / "cuda").exists()

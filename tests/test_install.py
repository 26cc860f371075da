"""A normal (non-editable) install runs the shipped studies: the configs are package data."""
import json
import os
import shutil
import site
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_install_runs_a_shipped_sweep_outside_the_checkout(tmp_path):
    wheels, src = tmp_path / "wheels", tmp_path / "src"
    src.mkdir()  # build from a copy: the build leaves a build/ folder behind
    for name in ("pyproject.toml", "README.md", "src", "configs"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(src)], check=True, capture_output=True)
    (wheel,) = wheels.glob("bnonly-*.whl")
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    py = env / "bin" / "python"
    target = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip())
    # reuse this environment's torch, numpy, ... (a path line in a .pth file): only bnonly is new
    (target / "reuse.pth").write_text(site.getsitepackages()[0] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([str(py), "-c", "import bnonly; print(bnonly.__file__)"], cwd=work, check=True,
                           capture_output=True, text=True).stdout
    assert str(target) in where  # the wheel's copy, not the checkout
    r = subprocess.run([str(env / "bin" / "bnonly"), "sweep", "quick", "--out", "out", "--set", "max_epochs=1",
                        "--set", "subset=1000", "--set", "widths=[8]", "--set", "depths=[1]", "--set", "seeds=[0]"],
                       cwd=work, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "sweep quick: 4 trained (0 failed)" in r.stderr and (work / "out" / "results.sqlite").is_file()
    # a wheel records the hash of the code it runs (the same files as this checkout: the same hash), no commit
    from bnonly.version import code_hash
    probe = "import json, bnonly.version as v; print(json.dumps(v.code_version()))"
    v = json.loads(subprocess.run([str(py), "-c", probe], cwd=work, check=True, capture_output=True, text=True,
                                  env={k: x for k, x in os.environ.items() if k != "BNONLY_COMMIT"}).stdout)
    assert v["code"] == code_hash() and v["commit"] is None and v["bnonly"]
    with sqlite3.connect(work / "out" / "results.sqlite") as db:
        assert {json.loads(x)["code"] for (x,) in db.execute("SELECT versions FROM runs")} == {code_hash()}
    bad = subprocess.run([str(env / "bin" / "bnonly"), "sweep", "nosuch"], cwd=work, capture_output=True, text=True)
    assert bad.returncode == 2 and "shipped: claims, frankle, questions, quick, report" in bad.stderr

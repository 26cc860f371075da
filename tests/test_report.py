"""The report module on fabricated runs (no training)."""
import json
import math

import numpy as np
import pytest

from bnonly.study import stats
from bnonly.study.claims import claims
from bnonly.config.run import RunConfig
from bnonly.study.verdicts import HELD, NOT_HELD, NOT_MEASURED
from bnonly.reports.build import write_report
from bnonly.study.stats import mean_ci
from conftest import not_kept

WIDTHS, DEPTHS, SEEDS = (10, 20, 100, 784), (2, 4, 6), (0, 1, 2)  # w20 d2 and w10 d4: equal bn parameters
MLP_SETS = ("all", "all-nobn", "bn", "random", "bn+out", "out", "none")


def _params(width, depth, trainable):
    weights = 784 * width + (depth - 1) * width * width + 10 * width
    bn = depth * width + 20
    return {"all": weights + bn + 10, "all-nobn": weights + 10, "bn": bn, "random": bn, "bn+out": bn + 10 * width,
            "out": 10 * width + 10, "none": 0}[trainable]


def _mean_acc(width, depth, trainable, bn784, random784):
    wide = {10: 0.45, 20: 0.55, 100: 0.80, 784: bn784}[width]
    if trainable == "bn":  # a rise up to depth 4, then level
        return wide + (0.0 if depth >= 4 else -0.02) + 0.002 * (depth - 4)
    if trainable == "random":
        return random784 if width == 784 else wide - 0.12
    if trainable == "all":
        return 0.97
    if trainable == "all-nobn":
        return 0.97 - 0.01 * depth  # BatchNorm helps, more at depth
    return {"bn+out": wide + 0.02, "out": 0.85, "none": 0.1}[trainable]


def _run(model, width, depth, trainable, seed, acc, params, status="finished"):
    cfg = {"model": model, "width": width, "depth": depth, "trainable": trainable, "seed": seed,
           "dataset": "mnist", "gamma_init": "uniform(-1,1)", "max_epochs": 100, "subset": 0, "hidden_beta": False}
    return {"run_id": RunConfig(**cfg).run_id, "status": status, "model": model,
            "width": width, "depth": depth, "trainable": trainable, "seed": seed, "dataset": "mnist",
            "test_accuracy": acc, "test_loss": 0.3, "val_accuracy": acc, "val_loss": 0.3, "best_epoch": 5,
            "epochs_run": 8, "trainable_params": params, "total_params": 100_000, "seconds": 12.5,
            "group_size": 1, "device": "cpu", "config": cfg, "trainable_by_layer": {},
            "history": [{"train_loss": 0.5, "train_accuracy": 0.8, "val_loss": 0.4, "val_accuracy": 0.85, "lr": 0.01}],
            "versions": {"bnonly": "0.1.0"}, "error": None, "finished_at": "2024-01-01T00:00:00"}


def make_runs(bn784=0.95, random784=0.80, widths=WIDTHS, lenet=True, mlp=True):
    rng = np.random.default_rng(0)
    runs = []
    for w in widths if mlp else ():
        for d in DEPTHS:
            for t in MLP_SETS:
                for s in SEEDS:
                    acc = float(np.clip(_mean_acc(w, d, t, bn784, random784) + rng.normal(0, 0.003), 0, 1))
                    runs.append(_run("mlp", w, d, t, s, acc, _params(w, d, t)))
    if lenet:
        for t, m, p in (("all", 0.98, 61706), ("bn", 0.30, 266), ("random", 0.275, 266), ("none", 0.10, 0)):
            for s in SEEDS:
                runs.append(_run("lenet5", 784, 4, t, s, float(m + rng.normal(0, 0.002)), p))
    if mlp:
        runs.append(_run("mlp", 784, 6, "all-nobn", 9, math.nan, _params(784, 6, "all-nobn"), status="diverged"))
    return runs


def verdicts(runs):
    return [c["verdict"] for c in claims(runs)]


def test_mean_ci_known_sample():
    s = mean_ci([1, 2, 3])
    assert s.mean == pytest.approx(2.0) and s.n == 3
    assert s.half == pytest.approx(4.3027 * 1 / math.sqrt(3), rel=1e-4)
    one = mean_ci([0.5, float("nan"), None])
    assert (one.mean, one.half, one.n) == (0.5, 0.0, 1)
    assert mean_ci([]).n == 0
    # t quantiles for any df (tables: 12.706, 2.228, 2.042, 2.021, 2.000, 1.980)
    for df, t in ((1, 12.706), (10, 2.228), (30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980)):
        assert stats.t975(df) == pytest.approx(t, abs=5e-4), df
    assert stats.t975(31) < stats.t975(30) and stats.t975(31) > 1.96


def test_claims_held_on_report_like_data():
    assert verdicts(make_runs()) == [HELD] * 6


def test_claim3_fails_when_random_is_close():
    v = verdicts(make_runs(random784=0.90))
    assert v[1] == HELD and v[2] == NOT_HELD


def test_claims_2_3_not_measured_without_width_784():
    v = verdicts(make_runs(widths=(10, 100)))
    assert v[1] == NOT_MEASURED and v[2] == NOT_MEASURED
    assert v[0] == HELD


def test_claim_edge_cases():
    assert verdicts(make_runs(bn784=0.90))[1] == NOT_HELD
    lenet_only = verdicts(make_runs(mlp=False))
    assert lenet_only == [NOT_MEASURED] * 5 + [HELD]
    assert verdicts(make_runs(lenet=False))[5] == NOT_MEASURED
    # one width: width-vs-depth part not measured, levelling still holds -> not measured (partial)
    c5 = claims(make_runs(widths=(784,)))[4]
    assert c5["verdict"] == NOT_MEASURED and "partially" in c5["measured"]


def test_write_report_full(tmp_path):
    written = write_report(tmp_path, runs=make_runs(), title="test <report>")
    stems = ["accuracy_vs_depth", "accuracy_vs_params"] + [f"accuracy_vs_depth_w{w}" for w in WIDTHS]
    for stem in stems:
        for ext in ("png", "svg"):
            p = tmp_path / f"{stem}.{ext}"
            assert p.exists() and p.stat().st_size > 0, p
            assert written[p.name] == p
    md, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    assert md and page
    assert "test &lt;report&gt;" in page
    for stem in stems:
        assert f'src="{stem}.png"' in page and f'href="{stem}.svg"' in page
        assert f"({stem}.png)" in md
    assert "1 diverged" in md and "gamma_init = uniform(-1,1)" in md
    assert md.index("## Claims") < md.index("## Figures") < md.index("## MLP")
    assert " ± " in md and md.count("| held") == 6 and "| held at depths 4, 6 of 4–14 |" in md


@pytest.mark.parametrize("kind", ["empty", "diverged-only", "lenet-only", "one-width-one-seed"])
def test_write_report_partial(tmp_path, kind):
    runs = {"empty": [],
            "diverged-only": [r for r in make_runs() if r["status"] == "diverged"],
            "lenet-only": make_runs(mlp=False),
            "one-width-one-seed": [r for r in make_runs(widths=(100,)) if r["seed"] == 0 and r["model"] == "mlp"],
            }[kind]
    written = write_report(tmp_path, runs=runs)
    page = (tmp_path / "report.html").read_text()
    assert (tmp_path / "report.md").stat().st_size > 0
    for name in written:
        if name.endswith(".png"):
            assert f'src="{name}"' in page
    if kind in ("empty", "diverged-only", "lenet-only"):
        assert "accuracy_vs_depth.png" not in written and "not drawn" in page
    if kind == "lenet-only":
        assert "accuracy_vs_params.png" in written
    if kind == "one-width-one-seed":
        assert "accuracy_vs_depth_w100.png" in written and "n=1" in page


def test_write_report_from_store(tmp_path):
    from bnonly.store import Store
    runs = make_runs(widths=(784,))
    Store(tmp_path / "results.sqlite").write(not_kept(runs))
    written = write_report(tmp_path)
    assert {"accuracy_vs_depth.png", "accuracy_vs_depth_w784.svg", "report.html"} <= set(written)
    assert claims(Store(tmp_path / "results.sqlite").runs())[1]["verdict"] == HELD


def test_the_report_opens_with_bn_against_random_computed_by_hand(tmp_path, capsys):
    """Known accuracies: at w10 d2, bn 80/82/84% and random 70/71/75% per seed: differences 10, 11 and
    9 points, mean 10, sd 1, so the paired 95% interval is ± t(0.975, 2) x 1 / sqrt(3) = ± 2.48 points;
    bn's own interval is ± 4.303 x 2 / sqrt(3) = ± 4.97 points."""
    from bnonly.cli import main
    from bnonly.config.layers import resolve
    from bnonly.store import Store
    runs = []
    for w, shift in ((10, 0.0), (100, 0.1)):
        for s, (b, r) in enumerate(((0.80, 0.70), (0.82, 0.71), (0.84, 0.75))):
            for t, acc in (("bn", b + shift), ("random", r)):
                c = resolve("report", width=w, depth=2, trainable=t, seed=s)
                runs.append({"run_id": c.run_id, "status": "finished", "model": "mlp", "width": w, "depth": 2,
                             "trainable": t, "seed": s, "dataset": "mnist", "test_accuracy": acc, "epochs_run": 20,
                             "best_epoch": 17, "trainable_params": 2 * w, "seconds": 1.0, "config": c.__dict__.copy()})
    Store(tmp_path / "results.sqlite").write(not_kept(runs))
    assert main(["report", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    doc = json.loads((tmp_path / "report.json").read_text())
    w10, w100 = doc["headline"]["architectures"]
    assert w10["architecture"] == "mlp_w10_d2" and w100["architecture"] == "mlp_w100_d2"
    assert w10["gap"]["mean"] == pytest.approx(0.10) and w10["gap"]["n"] == 3
    assert w10["gap"]["half"] == pytest.approx(4.302653 * 0.01 / 3 ** 0.5, rel=1e-5)
    assert w10["bn"]["mean"] == pytest.approx(0.82) and w10["bn"]["half"] == pytest.approx(4.302653 * 0.02 / 3 ** 0.5, rel=1e-5)
    assert w100["gap"]["mean"] == pytest.approx(0.20) and w100["random"]["mean"] == pytest.approx(0.72)
    first = ("mlp_w10_d2: BN-only 82.0 ± 5.0% (n=3), +10.0 ± 2.5 points (n=3) above an equal number of random "
             "weights (72.0 ± 6.6% (n=3)), paired by seed.")
    assert doc["headline"]["sentences"][0] == first and first in printed  # `bnonly report` prints the headline
    md = (tmp_path / "report.md").read_text()
    assert md.index("## BN-only against random weights") < md.index("## What was run") < md.index("## Claims")
    assert "In 2 of 2 architectures the paired 95% interval" in md and "bn_vs_random.png" in md
    assert (tmp_path / "bn_vs_random.png").stat().st_size > 0


def test_the_headline_says_below_when_bn_is_below_random():
    """A negative paired difference reads '0.2 ± 6.9 points below', never '-0.2 ... above'."""
    from bnonly.study.headline import headline_sentences
    from bnonly.study.stats import Stat
    def half(h):  # a Stat whose 95% interval is ± h over 3 seeds
        return h / stats.t975(2)
    row = {"architecture": "mlp_w10_d2", "bn": Stat(0.19, half(0.03), 3), "random": Stat(0.192, half(0.05), 3),
           "gap": Stat(-0.002, half(0.069), 3)}
    assert headline_sentences([row]) == ["mlp_w10_d2: BN-only 19.0 ± 3.0% (n=3), 0.2 ± 6.9 points (n=3) below an "
                                         "equal number of random weights (19.2 ± 5.0% (n=3)), paired by seed."]


def test_report_out_leaves_the_main_report_as_it_is(tmp_path, capsys):
    """A store of two studies (max_epochs 100 and 10): `report --where ... --out` writes the smaller
    study's report into a directory of its own; the main report stays byte for byte."""
    from bnonly.cli import main
    from bnonly.config.layers import resolve
    from bnonly.store import Store
    runs = []
    for e, n_seeds in ((100, 3), (10, 2)):
        for s in range(n_seeds):
            for t, acc in (("bn", 0.8 + 0.01 * s), ("random", 0.7)):
                c = resolve("report", width=10, depth=2, trainable=t, seed=s, max_epochs=e)
                runs.append({"run_id": c.run_id, "status": "finished", "model": "mlp", "width": 10, "depth": 2,
                             "trainable": t, "seed": s, "dataset": "mnist", "test_accuracy": acc, "epochs_run": 5,
                             "best_epoch": 4, "trainable_params": 20, "seconds": 1.0, "config": c.__dict__.copy()})
    Store(tmp_path / "results.sqlite").write(not_kept(runs))
    assert main(["report", str(tmp_path)]) == 0
    main_report = (tmp_path / "report.json").read_bytes()
    assert json.loads(main_report)["headline"]["architectures"][0]["bn"]["n"] == 3
    assert main(["report", str(tmp_path), "--where", "max_epochs=10", "--out", str(tmp_path / "e10")]) == 0
    assert (tmp_path / "report.json").read_bytes() == main_report
    small = json.loads((tmp_path / "e10" / "report.json").read_text())
    assert small["headline"]["architectures"][0]["bn"]["n"] == 2 and (tmp_path / "e10" / "bn_vs_random.png").exists()
    capsys.readouterr()
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "report.json")]) == 2
    assert "is a file" in capsys.readouterr().err

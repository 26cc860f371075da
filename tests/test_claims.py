"""Verdicts on hand-built stores: paired intervals, budget honesty, no pooling, data-set awareness."""
import json

import pytest

from bnonly.study.claims import claims
from bnonly.study.verdicts import HELD, INCONCLUSIVE, NOT_APPLICABLE, NOT_HELD, NOT_MEASURED, NOT_TESTABLE
from bnonly.cli import main
from bnonly.config.layers import resolve
from bnonly.reports.build import write_report
from bnonly.study.protocol import off_protocol
from bnonly.study.cells import cells, studies
from bnonly.store import Store
from conftest import not_kept

SEEDS = (0, 1, 2)


def run(trainable, seed, acc, width=784, depth=4, model="mlp", epochs=30, **cfg):
    c = resolve("report", model=model, width=width, depth=depth, trainable=trainable, seed=seed, **cfg)
    return {"run_id": c.run_id, "status": "finished", "model": model, "width": width, "depth": depth,
            "trainable": trainable, "seed": seed, "dataset": c.dataset, "test_accuracy": acc, "epochs_run": epochs,
            "best_epoch": epochs - 3, "trainable_params": width * depth if trainable in ("bn", "random") else 10_000,
            "seconds": 1.0, "config": c.__dict__.copy()}


def claim(runs, i, dataset="mnist"):
    return claims(runs, dataset)[i - 1]


def test_mean_gap_passes_but_paired_interval_does_not():
    # bn - random per seed: 20, 2, 14 points: mean 12 > 10, but the paired interval reaches far below 10
    bn = [run("bn", s, 0.95) for s in SEEDS]
    rnd = [run("random", s, a) for s, a in zip(SEEDS, (0.75, 0.93, 0.81))]
    c3 = claim(bn + rnd, 3)
    assert c3["verdict"] == INCONCLUSIVE and "+12.0" in c3["measured"]  # never "held"; not refuted either
    rnd = [run("random", s, a) for s, a in zip(SEEDS, (0.90, 0.91, 0.92))]  # wholly below 10 points: refuted
    assert claim(bn + rnd, 3)["verdict"] == NOT_HELD
    # the same mean gap with little seed noise holds
    rnd = [run("random", s, a) for s, a in zip(SEEDS, (0.829, 0.830, 0.831))]
    assert claim(bn + rnd, 3)["verdict"] == HELD


def test_pairing_uses_the_seed():
    # random is 12 points below bn in every seed, but seeds differ a lot: unpaired intervals would overlap
    bn = [run("bn", s, a) for s, a in zip(SEEDS, (0.99, 0.93, 0.96))]
    rnd = [run("random", s, a - 0.12) for s, a in zip(SEEDS, (0.99, 0.93, 0.96))]
    c3 = claim(bn + rnd, 3)
    assert c3["verdict"] == HELD and "+12.0 ± 0.0 points" in c3["measured"]


def test_capped_runs_are_not_testable_at_this_budget():
    bn = [run("bn", s, 0.60, max_epochs=10, subset=8000, epochs=10) for s in SEEDS]
    rnd = [run("random", s, 0.58, max_epochs=10, subset=8000, epochs=10) for s in SEEDS]
    c2, c3 = claim(bn + rnd, 2), claim(bn + rnd, 3)
    for c, n in ((c2, 3), (c3, 6)):
        assert c["verdict"] == NOT_TESTABLE
        assert f"{n} of {n} runs stopped by max_epochs = 10" in c["measured"] and "48,000" in c["measured"]
        assert "the rule gives 'did not hold'" in c["measured"]
    # `all` without a normalization layer is allowed (it is `all-nobn`'s model)
    assert resolve("report", trainable="all", norm="none").effective_norm == "none"
    # the same accuracies under the protocol: did not hold
    bn = [run("bn", s, 0.60) for s in SEEDS]
    assert claim(bn, 2)["verdict"] == NOT_HELD
    assert off_protocol(bn) is None


def test_one_seed_is_not_measured_and_bands_can_fail():
    assert claim([run("bn", 0, 0.95)], 2)["verdict"] == NOT_MEASURED
    assert claim([run("bn", s, 0.95 + 0.001 * s) for s in SEEDS], 2)["verdict"] == HELD
    assert claim([run("bn", s, 0.99 + 0.001 * s) for s in SEEDS], 2)["verdict"] == NOT_HELD  # above "about 95%"
    noisy = [run("bn", s, a) for s, a in zip(SEEDS, (0.93, 0.97, 0.95))]  # mean 95%, interval far wider than the band
    assert claim(noisy, 2)["verdict"] == INCONCLUSIVE
    # one cell refuted and another with one seed: refuted, not "not measured"
    mixed = [run("bn", s, 0.80 + 0.001 * s) for s in SEEDS] + [run("bn", 0, 0.95, depth=8)]
    assert claim(mixed, 2)["verdict"] == NOT_HELD


def test_claim4_small_growth_within_noise_does_not_hold():
    runs = []
    noises = {2: (0.0, 0.002, -0.002), 6: (0.002, -0.002, 0.0)}
    for d, gap in ((2, 0.02), (6, 0.0201)):  # the gap grows by 0.01 points: noise, not "more so at depth"
        for s, noise in zip(SEEDS, noises[d]):
            runs += [run("all", s, 0.97, depth=d), run("all-nobn", s, 0.97 - gap - noise, depth=d)]
    c4 = claim(runs, 4)
    assert c4["verdict"] == INCONCLUSIVE and "2 of 2 cells shown above 0" in c4["measured"]
    assert "0 of 1 width shown above 0" in c4["measured"]


def test_claim5_flat_curve_does_not_hold():
    # width helps, but accuracy falls from depth 2 on: no rise up to depth 4, so no levelling "after 4"
    runs = [run("bn", s, acc - 0.01 * (d // 2) + 0.001 * s * (d % 3), width=w, depth=d)
            for w, acc in ((10, 0.6), (20, 0.7), (784, 0.95)) for d in (2, 4, 6) for s in SEEDS]
    c5 = claim(runs, 5)
    assert c5["verdict"] == NOT_HELD and "depth 2 → 4 -1.1" in c5["measured"], c5["measured"]
    # exactly flat, every seed alike: a difference of +0.0 ± 0.0 sits on the boundary, refuted by nothing
    flat = [run("bn", s, acc + 0.001 * s, width=w, depth=d)
            for w, acc in ((10, 0.6), (20, 0.7), (784, 0.95)) for d in (2, 4, 6) for s in SEEDS]
    c5 = claim(flat, 5)
    assert c5["verdict"] == INCONCLUSIVE and "depth 2 → 4 +0.0 ± 0.0" in c5["measured"]
    assert "no number of seeds would decide it" in c5["measured"], c5["measured"]
    # w20 d2 and w10 d4 train as many parameters (40): the wider is 10 points better there
    runs = [run("bn", s, acc + (0.02 if d >= 4 else 0) + 0.001 * s, width=w, depth=d)
            for w, acc in ((10, 0.6), (20, 0.7), (784, 0.93)) for d in (2, 4, 6) for s in SEEDS]
    c5 = claim(runs, 5)
    assert c5["verdict"] == HELD and "wider − deeper per doubling +8.0 ± 0.0 points (n=3) over 1 pair" in c5["measured"]


def test_other_data_sets_do_not_get_mnist_thresholds():
    runs = [run("bn", s, 0.85, dataset="fashion-mnist") for s in SEEDS]
    cl = claims(runs, "fashion-mnist")
    assert [cl[i]["verdict"] for i in (1, 2, 5)] == [NOT_APPLICABLE] * 3
    assert cl[0]["verdict"] == HELD


def two_studies():
    """One store, two studies: the protocol (seeds 0, 1) and a capped one (seeds 0, 1) of the same cells."""
    full = [run(t, s, acc + 0.001 * s) for t, acc in (("bn", 0.95), ("random", 0.80)) for s in (0, 1)]
    capped = [run(t, s, acc + 0.001 * s, max_epochs=10, subset=8000, epochs=10)
              for t, acc in (("bn", 0.60), ("random", 0.58)) for s in (0, 1)]
    return full, capped


def test_two_study_store_is_never_pooled(tmp_path):
    full, capped = two_studies()
    with pytest.raises(ValueError, match="differ in more than the seed"):
        cells(full + capped)
    split = studies(full + capped)
    assert [len(r) for _, r in split] == [4, 4] and set(split[0][0]) == {"max_epochs", "subset"}
    Store(tmp_path / "results.sqlite").write(not_kept(full + capped))
    assert main(["report", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "report.json").read_text())
    md = (tmp_path / "report.md").read_text()
    assert "n=2" in md and "n=4" not in md and "| 2 |" in md  # cells hold 2 seeds, never 4
    assert "holds 2 studies" in md and "## Other studies in this store" in md
    assert "--where max_epochs=10 --where subset=8000 --out" in md or "--where max_epochs=100 --where subset=0 --out" in md
    assert len(doc["studies"]) == 2
    # --where selects the capped study: its claims are not testable, never "did not hold"
    assert main(["report", str(tmp_path), "--where", "max_epochs=10"]) == 0
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["study"] == {} and [c["verdict"] for c in doc["claims"]][2] == NOT_TESTABLE
    assert all(c["verdict"] != NOT_HELD for c in doc["claims"])
    assert set(doc["claims"][0]) == {"id", "claim", "rule", "measured", "verdict", "scope", "setting", "label"}


def test_report_states_the_budget(tmp_path):
    _, capped = two_studies()
    write_report(tmp_path, runs=capped)
    md = (tmp_path / "report.md").read_text()
    assert "Budget of this study: a subset of 8,000 training images" in md
    assert "4 of 4 runs ended at the epoch cap" in md and "This is not the report's protocol" in md


def test_where_rejects_unknown_fields(tmp_path, capsys):
    Store(tmp_path / "results.sqlite").write(not_kept(two_studies()[0]))
    assert main(["report", str(tmp_path), "--where", "colour=red"]) == 2
    assert main(["report", str(tmp_path), "--where", "max_epochs=7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no run" in err[1] and "max_epochs=7" in err[1]


def test_report_code_preset_is_the_published_code():
    from bnonly.engine.loop import train
    from bnonly.registry.nets import build
    for t in ("out", "none"):  # built without BatchNorm layers, as the report's code did
        assert all(b.norm is None for b in build(resolve("report-code", trainable=t, width=8, depth=2)).blocks)
    assert all(b.norm is not None for b in build(resolve("report-code", trainable="bn", width=8, depth=2)).blocks)
    assert all(b.norm is not None for b in build(resolve("report", trainable="out", width=8, depth=2)).blocks)
    # lr x0.1 from the code's 0-based epoch 70: the 71st epoch
    cfg = resolve("report-code", width=8, depth=1, trainable="bn", subset=200, max_epochs=72, patience=100)
    (r,) = train([cfg])
    lrs = [h["lr"] for h in r.history]
    assert lrs[69] == pytest.approx(0.01) and lrs[70] == pytest.approx(0.001) and len(lrs) == 72


def test_sweep_prints_its_estimate_before_training(tmp_path, capsys):
    args = ["sweep", "quick", "--out", str(tmp_path), "--set", "widths=[8]", "--set", "depths=[1]", "--set", 'models=["mlp"]',
            "--set", 'trainable=["bn","all"]', "--set", "seeds=[0]", "--set", "subset=1000", "--set", "max_epochs=2"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "estimated compute on this machine: about" in err and "measured on 1 group shape in" in err  # one stack
    assert err.index("estimated compute") < err.index("[1/2]")


def test_open_question_answers_are_paired_per_architecture(tmp_path):
    """layernorm is exactly 2 points below batchnorm in every seed at w100 (a paired interval of 0 width,
    though the seeds spread by 6 points), and equal at w400: one architecture below 0, one at 0."""
    from bnonly.reports.sections import question_sections
    from bnonly.study.questions import questions
    runs = []
    for s, base in zip(SEEDS, (0.90, 0.93, 0.96)):
        runs += [run("bn", s, base, width=100), run("bn", s, base - 0.02, width=100, norm="layernorm"),
                 run("bn", s, base, width=400), run("bn", s, base, width=400, norm="layernorm")]
    (sec,) = question_sections(questions(runs), tmp_path, {}, 0.1135)
    question = next(b["text"] for b in sec["blocks"] if b["kind"] == "question")
    assert "no beta in this study" in question  # the report's preset has no shift: the question says what is tested
    answer = next(b["text"] for b in sec["blocks"] if b["kind"] == "answer")
    table = next(b for b in sec["blocks"] if b["kind"] == "table")
    assert "above 0 in 0 and below 0 in 1 of 2 architectures" in answer
    rows = {r[0]: r for r in table["rows"]}
    assert rows["mlp_w100_d4"][3] == "-2.0 ± 0.0" and rows["mlp_w100_d4"][4] == "3"
    assert rows["mlp_w400_d4"][3] == "+0.0 ± 0.0"


def test_every_config_field_is_grid_replicate_protocol_or_setting():
    """A new RunConfig field must be placed: checked by a protocol, or named as part of the setting."""
    from dataclasses import fields
    from bnonly.study.frankle import FRANKLE
    from bnonly.config.run import GRID_FIELDS, RunConfig
    from bnonly.study.protocol import REPLICATE, REPORT, SCHEDULE
    for protocol in (REPORT, FRANKLE):
        placed = set(GRID_FIELDS) | set(REPLICATE) | set(protocol.values) | set(SCHEDULE) | set(protocol.setting)
        assert {f.name for f in fields(RunConfig)} - placed == set(), protocol.name


@pytest.mark.parametrize("field,value,named", [
    ("precision", "bf16", "precision (bf16)"), ("augment", True, "augment (true)"), ("normalize", True, "normalize (true)"),
    ("lr_drop_epochs", "2", "learning-rate schedule (x0.1 at epochs 2)"),
    ("lr_drop_epoch", 5, "learning-rate schedule (x0.1 at epochs 5)"), ("weight_decay", 1e-3, "weight_decay (0.001)")])
def test_a_run_off_the_protocol_in_any_checked_field_is_not_testable(field, value, named):
    bn = [run("bn", s, 0.95 + 0.001 * s, **{field: value}) for s in SEEDS]
    c2 = claim(bn, 2)
    assert c2["verdict"] == NOT_TESTABLE and named in c2["measured"] and "the rule gives 'held'" in c2["measured"]
    # the published code's drop of lr x0.1 from epoch 71 is the protocol too
    assert claim([run("bn", s, 0.95 + 0.001 * s, lr_drop_epoch=71) for s in SEEDS], 2)["verdict"] == HELD


def test_every_verdict_names_its_setting_and_a_weakened_baseline():
    bn = [run("bn", s, 0.95 + 0.001 * s, random_norm="inference") for s in SEEDS]  # as a sweep sets it: on every run
    rnd = [run("random", s, 0.80 + 0.001 * s, random_norm="inference") for s in SEEDS]
    c3 = claim(bn + rnd, 3)
    assert c3["verdict"] == HELD and "random_norm = inference" in c3["measured"]
    assert "gamma_init = uniform(-1,1)" in c3["measured"] and "a weaker baseline" in c3["measured"]
    assert "random_norm" not in claim(bn, 2)["measured"]  # claim 2 rests on bn alone
    with pytest.raises(ValueError, match="several studies"):  # bn and random of two sweeps are never paired
        claim([run("bn", s, 0.95 + 0.001 * s) for s in SEEDS] + rnd, 3)


def test_chance_is_the_majority_class_rate():
    """MNIST's most common test digit (1) is 11.35%: cells at 11.2% (above 1/10) are not above chance; cells
    exactly at it, every seed alike, sit on the boundary: neither held nor refuted."""
    from bnonly.study.cells import chance
    assert chance("mnist").rate == 0.1135 and chance("fashion-mnist").rate == 0.1
    at = [run("bn", s, 0.1135, width=w) for s in SEEDS for w in (10, 100)]
    c1 = claim(at, 1)
    assert c1["verdict"] == INCONCLUSIVE and "Against chance 11.35%" in c1["measured"] and "11.35%" in c1["rule"]
    below = [run("bn", s, 0.112 + 0.0002 * s, width=10) for s in SEEDS]
    assert claim(below, 1)["verdict"] == NOT_HELD
    assert claim([run("bn", s, 0.5 + 0.001 * s, width=10) for s in SEEDS], 1)["verdict"] == HELD


def test_diverged_seeds_count_at_their_best_weights_and_are_said(tmp_path):
    bn = [run("bn", s, 0.95) for s in SEEDS]
    rnd = [run("random", s, a) for s, a in zip(SEEDS, (0.80, 0.81, 0.30))]
    rnd[2]["status"] = "diverged"
    c3 = claim(bn + rnd, 3)
    assert "(n=3, 1 diverged)" in c3["measured"] and c3["verdict"] == INCONCLUSIVE  # the diverged seed widens it
    Store(tmp_path / "results.sqlite").write(not_kept(bn + rnd))
    assert main(["report", str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "1 diverged (a non-finite loss ended them" in md and "(1 diverged)" in md and "3 count" in md.replace("6", "3")


def null_cells(n_cells, barely):
    """Claim 1 over n_cells cells far above chance, one of them replaced by a cell just below it."""
    widths = [8 * (i + 1) for i in range(n_cells)]
    runs = [run("bn", s, 0.9 + 0.001 * s, width=w) for w in widths[1:] for s in SEEDS]
    return runs + [run("bn", s, a, width=widths[0]) for s, a in zip(SEEDS, barely)]


def test_refutations_are_controlled_across_cells():
    """One cell a little below chance (one-sided p 0.005) refutes 'every cell is above chance' among 2
    cells and among 14 far above chance (they are set aside: conditional test), but not among 14 cells
    all near chance, which could each be the one below by chance (Simes across them)."""
    barely = (0.1100, 0.1105, 0.1110)
    assert claim(null_cells(2, barely), 1)["verdict"] == NOT_HELD
    assert claim(null_cells(14, barely), 1)["verdict"] == NOT_HELD
    assert "13 of 14 cells hold, 1 shown off" in claim(null_cells(14, barely), 1)["measured"]
    near = [run("bn", s, 0.1135 + 0.0005 * (i % 3) + 0.002 * s - 0.002, width=8 * (i + 2)) for i in range(13)
            for s in SEEDS] + [run("bn", s, a, width=8) for s, a in zip(SEEDS, barely)]
    assert claim(near, 1)["verdict"] == INCONCLUSIVE, claim(near, 1)["measured"]
    # "most cells" (claim 4): half or more refuted puts a majority out of reach, one of many does not
    def gaps(values):
        out = []
        for d, g in enumerate(values):
            for s, noise in zip(SEEDS, (0.0, 0.001, -0.001)):
                out += [run("all", s, 0.95, depth=2 + d), run("all-nobn", s, 0.95 - g - noise, depth=2 + d)]
        return out
    assert claim(gaps([0.02, -0.02]), 4)["verdict"] == NOT_HELD  # 1 of 2 refuted: no majority possible
    assert claim(gaps([-0.004] + [0.02] * 4 + [0.03]), 4)["verdict"] == HELD  # 5 of 6 hold; the one below refutes nothing
    assert "5 of 6 cells shown above 0 and 0 at or below it" in claim(gaps([-0.004] + [0.02] * 4 + [0.03]), 4)["measured"]


def test_claim4_names_its_confound():
    runs = [run(t, s, 0.95, depth=2) for t in ("all", "all-nobn") for s in SEEDS]
    assert "Confound: here `all` has no hidden shift" in claim(runs, 4)["measured"]  # report: no beta, biases
    runs = [run(t, s, 0.95, depth=2, hidden_beta=True) for t in ("all", "all-nobn") for s in SEEDS]
    assert "Confound" not in claim(runs, 4)["measured"]  # frankle-like: beta and biases, a shift on both sides

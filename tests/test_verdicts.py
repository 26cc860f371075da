"""Verdicts with known answers: each rule fed stores whose right answer is known, and each claim's
two error rates at its boundaries checked by simulation."""
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from bnonly.study import claims as claims_mod, verdicts
from bnonly.study.claims import claims, rules
from bnonly.config.layers import resolve
from bnonly.study.frankle import FRANKLE_RULES
from bnonly.registry.nets import build
from bnonly.reports.build import write_report
from bnonly.study.cells import chance
from bnonly.study.verdicts import ALPHA, HELD, INCONCLUSIVE, NOT_HELD, NOT_MEASURED

SEEDS = (0, 1, 2)
ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def run(trainable, seed, acc, width=784, depth=4, model="mlp", epochs=30, status="finished", preset="report",
        params=None, history=None, **cfg):
    c = resolve(preset, model=model, width=width, depth=depth, trainable=trainable, seed=seed, **cfg)
    return {"run_id": c.run_id, "status": status, "model": model, "width": width, "depth": depth,
            "trainable": trainable, "seed": seed, "dataset": c.dataset, "test_accuracy": acc, "epochs_run": epochs,
            "best_epoch": epochs - 3, "trainable_params": params or width * depth, "seconds": 1.0,
            "config": c.__dict__.copy(), "history": history or []}


def claim(runs, i):
    return claims(runs)[i - 1]


# ----------------------------------------------------------------------------- 1. F1 at depth
def test_f1_on_resnet14_alone_is_not_testable_at_this_depth():
    """bn − random = +6.1 ± 0.4 points at ResNet-14 only: a claim about sufficiently deep ResNets is
    not testable there (it said 'did not hold')."""
    from bnonly.study.frankle import frankle_claims
    runs = []
    for s, g in zip(SEEDS, (0.059, 0.061, 0.063)):
        for t, acc in (("bn", 0.45 + 0.01 * s), ("random", 0.45 + 0.01 * s - g)):
            runs.append(run(t, s, acc, model="resnet14", preset="frankle", epochs=160, params=1120))
    f1 = frankle_claims(runs)[0]
    assert f1["verdict"] == "not testable at this depth" and "+6.1 ± 0.5 points" in f1["measured"]


# ----------------------------------------------------------------------------- 2. claim 5 part 1
def saturating_store(advantage: float, seeds: int):
    """bn at widths 10-80, depths 2, 4, 8, accuracy a saturating function of the trainable-parameter
    count p = width x depth alone, plus `advantage` per doubling of width, plus per-run noise."""
    rng = np.random.default_rng(3)
    runs = []
    for w in (10, 20, 40, 80):
        for d in (2, 4, 8):
            p = w * d
            base = 0.95 - 0.5 * math.exp(-p / 50) + advantage * math.log2(w / 10)
            for s in range(seeds):
                runs.append(run("bn", s, base + rng.normal(0, 0.002), width=w, depth=d, params=p))
    return runs


def test_claim5_at_equal_parameters_is_fair_to_a_function_of_the_count_alone():
    """Accuracy a saturating function of the parameter count alone: no width or depth effect, so the
    rule gives neither held nor did not hold (the old slopes gave -0.7 points per doubling)."""
    c5 = claim(saturating_store(0.0, 3), 5)
    assert "wider − deeper per doubling" in c5["measured"] and c5["verdict"] == INCONCLUSIVE, c5["measured"]
    # matched pairs: w20 d2 ~ w10 d4, w40 d2 ~ w20 d4 ~ w10 d8, ... (equal counts, k = 2 or 4)
    pairs = claims_mod.matched_pairs({(w, d): {0: {"trainable_params": w * d}} for w in (10, 20, 40, 80)
                                      for d in (2, 4, 8)})
    assert ((20, 2), (10, 4), 1.0) in pairs and ((40, 2), (10, 8), 2.0) in pairs and len(pairs) == 8


def test_claim5_holds_with_a_real_width_advantage_at_equal_parameters():
    """+0.4 points per doubling of width at equal parameter counts, 10 seeds: held (the old rule said
    'did not hold')."""
    c5 = claim(saturating_store(0.004, 10), 5)
    assert c5["verdict"] == HELD and "wider − deeper per doubling +0.4" in c5["measured"], c5["measured"]


# ----------------------------------------------------------------------------- 3. both error rates
def simulation():
    import importlib.util
    spec = importlib.util.spec_from_file_location("error_rates", ROOT / "benchmarks" / "error_rates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def within(rate: float, sims: int) -> bool:
    """At most ALPHA, with binomial slack of 2.6 standard errors."""
    return rate <= ALPHA + 2.6 * math.sqrt(ALPHA * (1 - ALPHA) / sims)


@pytest.mark.parametrize("claim_id", ["1", "2", "3", "4", "5", "6", "F1", "F2"])
def test_both_error_rates_at_the_boundary_are_within_the_level(claim_id):
    """Each claim's rule on simulated stores: just true (its tests at the boundary), it says 'did not
    hold' at most ALPHA of the time; just false, 'held' at most ALPHA (3 seeds, 1,500 stores each)."""
    sim, sims = simulation(), 1500
    assert within(sim.false_not_held(claim_id, sims), sims)
    assert within(sim.false_held(claim_id, sims), sims)


@pytest.mark.parametrize("rule,n", [("every", 49), ("most", 4), ("most", 49)])
def test_a_part_keeps_both_error_rates_with_spreads_as_unlike_as_the_studys(rule, n):
    """A part of 4 or 49 cells whose per-run sd runs from 0.1 to 6 points (results/quick's range)."""
    sim, sims = simulation(), 600
    rng = np.random.default_rng(5)
    assert within(sum(sim.part_case(rule, n, True, rng, True) == NOT_HELD for _ in range(sims)) / sims, sims)
    assert within(sum(sim.part_case(rule, n, False, rng, True) == HELD for _ in range(sims)) / sims, sims)


def test_the_simulation_sees_an_uncorrected_family_and_an_unsafe_shared_variance():
    """Each test at 2.5% on its own: a true 49-cell claim is refuted most of the time; a variance shared
    across cells of unlike spreads (Smyth's moderated t, not kept) refutes it too often as well."""
    sim = simulation()
    assert sim.part_variant("uncorrected", "every", 49, True, 300) > 0.5
    assert sim.part_variant("moderated", "most", 49, True, 2000) > 0.03


def test_claim4_false_held_at_24_of_49_true_gaps_is_within_the_level():
    """24 of the 49 gaps 4-7 points above 0 (growing with depth at 6 of 7 widths: part 2 true) and 25
    exactly at 0: 'most cells' is false; the old rule (counting unadjusted intervals) said 'held' in
    45.8% of stores. With 35 of 49 above 0 it holds."""
    sim, sims = simulation(), 300
    rng = np.random.default_rng(3)
    false = sim.grid_claim4(rng, sim.deep_gaps(8, claims_mod.REPORT_WIDTHS[:6]), 0.003)
    c4 = claims_mod.claim4(false, 0.1135)
    assert "24 with their own interval above 0" in c4.measured and "6 of 7 widths shown above 0" in c4.measured
    held = sum(claims_mod.claim4(sim.grid_claim4(rng, sim.deep_gaps(8, claims_mod.REPORT_WIDTHS[:6]), 0.003),
                                 0.1135).verdict == HELD for _ in range(sims))
    assert within(held / sims, sims), held
    true = claims_mod.claim4(sim.grid_claim4(rng, sim.deep_gaps(6, claims_mod.REPORT_WIDTHS), 0.003), 0.1135)
    assert true.verdict == HELD, true.measured


def test_docs_and_results_quote_the_simulated_rates():
    result = json.loads((ROOT / "results" / "verdicts" / "error-rates.json").read_text())
    study = _words((DOCS / "study.md").read_text())
    for key in ("false_not_held", "false_held"):
        quoted = ", ".join(f"{100 * result['claims'][c][key]:.1f}% ({c})" for c in result["claims"])
        assert quoted in study, quoted
        assert all(within(r[key], result["sims"]) for r in [*result["claims"].values(), *result["parts"].values()])
    assert f"{result['sims']:,} simulated stores" in study
    for case, rate in result["power"].items():
        assert f"{case}: {100 * rate:.0f}%" in study, case
    for quantity in ("bn accuracy", "bn − random, paired", "all − all-nobn, paired"):
        row = result["seeds"][quantity]
        assert " / ".join(map(str, row["seeds at median_sd"])) + " | " + " / ".join(
            map(str, row["seeds at largest_sd"])) in study, quantity


# ----------------------------------------------------------------------------- 3b. the third review's cases
def grid(value, sd_of=lambda w: 0.01):
    """bn on the report's 7 x 7 grid, every cell above chance with spreads as results/quick's."""
    rng = np.random.default_rng(1)
    return [run("bn", s, value(w, d) + rng.normal(0, sd_of(w)), width=w, depth=d) for w in claims_mod.REPORT_WIDTHS
            for d in claims_mod.REPORT_DEPTHS for s in SEEDS]


def test_a_clear_failure_among_49_passing_cells_is_not_hidden():
    """One cell at 9.0 ± 0.5% (chance 11.35%, t about -20) among 48 above chance: did not hold (the old
    rule said inconclusive: Holm across 49 tests at df = 2 needed t below -31)."""
    passing = [r for r in grid(lambda w, d: 0.3 + 0.006 * min(w, 100), lambda w: 0.03 if w <= 20 else 0.005)
               if not (r["width"] == 10 and r["depth"] == 2)]
    bad = [run("bn", s, a, width=10, depth=2) for s, a in zip(SEEDS, (0.0892, 0.0900, 0.0908))]
    c1 = claim(passing + bad, 1)
    assert c1["verdict"] == NOT_HELD and "48 of 49 cells hold, 1 shown off" in c1["measured"], c1["measured"]
    assert "9.0 ± 0.2% (n=3) at width 10, depth 2" in c1["measured"]


def test_batchnorm_hurting_by_a_point_in_every_cell_did_not_hold():
    """all − all-nobn = -1 point in all 49 cells, per-run sd 0.1 point: claim 4 did not hold (it said
    inconclusive)."""
    rng = np.random.default_rng(2)
    runs = []
    for w in claims_mod.REPORT_WIDTHS:
        for d in claims_mod.REPORT_DEPTHS:
            for s in SEEDS:
                a = 0.95 + rng.normal(0, 0.001)
                runs += [run("all", s, a, width=w, depth=d), run("all-nobn", s, a + 0.01 + rng.normal(0, 0.001),
                                                                 width=w, depth=d)]
    c4 = claim(runs, 4)
    assert c4["verdict"] == NOT_HELD and "0 of 49 cells shown above 0 and 49 at or below it" in c4["measured"], c4["measured"]
    assert c4["label"] == "did not hold at 49 cells (widths 10, 20, 40, 80, 100, 400, 784; depths 2, 4, 6, 8, 10, " \
                          "12, 14)"


def test_claim5_judges_each_pair_over_its_own_seeds():
    """w10 d8 with one seed: the pair (w20 d4, w10 d8) is not judged, the other pair is, over its 3 seeds
    (the seeds were intersected across every pair: n=1 and 'not measured')."""
    runs = [run("bn", s, acc + 0.001 * s, width=w, depth=d, params=w * d)
            for (w, d), acc in (((20, 2), 0.70), ((10, 4), 0.65), ((20, 4), 0.75), ((784, 2), 0.9), ((784, 4), 0.92),
                                ((784, 8), 0.925)) for s in SEEDS]
    runs += [run("bn", 0, 0.6, width=10, depth=8, params=80)]
    c5 = claim(runs, 5)
    assert "over 1 pair(s) of cells, seeds 0, 1, 2 (w20 d2 vs w10 d4: +5.0 ± 0.0 points)" in c5["measured"]
    assert "w20 d4 vs w10 d8 not judged" in c5["measured"] and c5["verdict"] == HELD, c5["measured"]
    assert c5["scope"] == "pairs w20 d2 vs w10 d4; levelling at width 784, depths 2, 4, 8"


def test_pairs_weigh_by_their_doublings():
    """The slope over pairs is a regression on log2 k: a k = 1.25 pair weighs log2(1.25)² = 0.1 against a
    k = 2 pair's 1 (averaging differences per doubling gave it 3.1 times the weight, its noise too)."""
    rng = np.random.default_rng(0)
    acc = {"a": {s: 0.02 for s in range(10)}, "b": {s: 0.0 for s in range(10)},
           "c": {s: rng.normal(0, 0.01) for s in range(10)}, "d": {s: 0.0 for s in range(10)}}
    pairs = [("a", "b", 1.0), ("c", "d", math.log2(1.25))]
    st = claims_mod.slope(acc, pairs, range(10))
    k = math.log2(1.25)
    expected = [(0.02 + k * acc["c"][s]) / (1 + k * k) for s in range(10)]
    assert st.mean == pytest.approx(np.mean(expected)) and st.se < 0.002  # per-doubling averaging: 0.0049


def test_a_zero_spread_difference_on_its_boundary_is_not_refuted():
    """F2's growth '+0.0 ± 0.0' said 'did not hold'; on the boundary nothing decides it."""
    from bnonly.study.frankle import frankle_claims
    runs = [run(t, s, acc, model=m, preset="frankle", epochs=160, params=1120)
            for m in ("resnet14", "resnet110") for s in SEEDS for t, acc in (("bn", 0.6 + 0.01 * s), ("random", 0.4))]
    f2 = frankle_claims(runs)[1]
    assert "+0.0 ± 0.0 points" in f2["measured"] and f2["verdict"] == INCONCLUSIVE, f2["measured"]
    # claim 6's gap lies in (0, 5]: exactly 0 is not inside, nor refuted
    lenet = [run(t, s, 0.3 + 0.001 * s, model="lenet5") for t in ("bn", "random") for s in SEEDS]
    assert claim(lenet, 6)["verdict"] == INCONCLUSIVE


def test_an_inconclusive_verdict_says_its_power_and_the_seeds_that_would_decide_it():
    """bn at width 784, depth 4 as measured (92.27 / 92.11 / 92.45%): inconclusive against 'about 95%'
    (from 92.5%), with the effect its 3 seeds could tell and how many seeds would decide it."""
    c2 = claim([run("bn", s, a) for s, a in zip(SEEDS, (0.9227, 0.9211, 0.9245))], 2)
    assert c2["verdict"] == INCONCLUSIVE
    m = re.search(r"Power: at the measured spread \(sd up to 0\.2 points per seed\), 3 seeds tell a depth "
                  r"([\d.]+) points from the boundary \(80% power, one-sided 2\.5% per depth\); about (\d+) seeds per "
                  r"depth would decide it at the observed means\.", c2["measured"])
    assert m and 0.3 < float(m.group(1)) < 1.0 and 5 <= int(m.group(2)) <= 30, c2["measured"]


# ----------------------------------------------------------------------------- 4. the gamma measure
def _rescale(model, features, c: float):
    """Three rescalings that leave an `all` network's function (in inference mode) as it was: for
    every hidden layer a normalization follows, (1) gamma and beta of `features` x c, what reads
    them x 1/c; (2) the reader's rows `features` x 1/c with its BatchNorm's statistics; (3) the whole
    layer's gamma and beta x 3 (the next normalization divides it out: its statistics x 3)."""
    from bnonly.registry.nets import is_chain
    units = model.units()
    pairs = ([(units[i][2], units[i + 1][1], units[i + 1][2]) for i in range(len(units) - 1)] if is_chain(model) else
             [(b.norm1, b.conv2, b.norm2) for b in model.blocks])
    with torch.no_grad():
        for norm, reader, next_norm in pairs:
            f = [j for j in features if j < norm.weight.numel()]
            per = reader.weight.shape[1] // norm.weight.numel()  # columns per feature (a flattened conv's block)
            cols = [j * per + k for j in f for k in range(per)]
            norm.weight[f] *= c
            if norm.bias is not None:
                norm.bias[f] *= c
            reader.weight[:, cols] /= c
            rows = [j for j in features if j < reader.weight.shape[0]]  # x 1/c: large, so eps stays negligible
            reader.weight[rows] /= c
            next_norm.running_mean[rows] /= c
            next_norm.running_var[rows] /= c * c
            norm.weight.mul_(3.0)
            if norm.bias is not None:
                norm.bias.mul_(3.0)
            next_norm.running_mean.mul_(3.0)
            next_norm.running_var.mul_(9.0)


@pytest.mark.parametrize("model", ["mlp", "lenet5", "resnet14"])
def test_disabled_fraction_does_not_see_rescalings_that_keep_the_function(model):
    """In `all` the next layer trains: gamma_j, beta_j x c with the next layer's column j x 1/c, a
    reader's row x c with its statistics, and a layer's gamma x c leave the function as it was, and
    the disabled fraction and the ablation's order too; |gamma| < 0.1 moves."""
    from bnonly.study.gamma import fractions, importance, readers, scale_free
    cfg = resolve("frankle", model=model, width=64, depth=3, trainable="all")
    shape = (3, 32, 32) if model == "resnet14" else (1, 28, 28)
    m = build(cfg, shape).eval()
    with torch.no_grad():  # statistics and gammas of a trained-looking network, not the initial ones
        for _, _, norm in m.units():
            norm.running_var.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(1))
    x = torch.rand(64, *shape)

    def measure():
        gammas = [n.weight.detach().clone() for _, _, n in m.units()]
        order = [i.argsort() for i, f in zip(importance(gammas, readers(m)), scale_free(m)) if f]
        return fractions(gammas, readers(m), scale_free(m)), order
    (before, order), logits = measure(), m(x)
    _rescale(m, list(range(0, 64, 2)), 1e-3)
    after, order_after = measure()
    assert torch.allclose(m(x), logits, atol=1e-3, rtol=1e-3)
    assert after["relative"] == before["relative"]  # feature counts: exactly equal
    assert all(torch.equal(a, b) for a, b in zip(order, order_after))
    assert after["0.1"]["all"] != before["0.1"]["all"]  # |gamma| < 0.1 is not invariant


def test_no_measure_is_printed_beside_frankles_number():
    from bnonly.reports.analysis import FRANKLE_DISABLED, table
    header, _ = table({})
    assert not any("Frankle" in h for h in header) and "around a third" in FRANKLE_DISABLED


# ----------------------------------------------------------------------------- 6, 7. budget and diverged
def test_the_headline_names_its_budget(tmp_path):
    runs = [run(t, s, acc + 0.01 * s, width=100, depth=2, subset=1000, max_epochs=2, epochs=2)
            for t, acc in (("bn", 0.6), ("random", 0.3)) for s in SEEDS]
    write_report(tmp_path, runs=runs)
    answer = json.loads((tmp_path / "report.json").read_text())["headline"]["answer"]
    assert answer.startswith("In 1 of 1 architectures the paired 95% interval of BN-only − random lies above 0. "
                             "Budget: a subset of 1,000 images (800 to train on), early stopping (patience 3) within "
                             "2 epochs (off the report's protocol in max_epochs, subset); 6 of 6 runs ended at the "
                             "epoch cap, none diverged."), answer
    assert answer in (tmp_path / "report.md").read_text()


def test_every_verdict_names_its_budget_and_diverged_runs():
    bn = [run("bn", s, 0.95 + 0.001 * s, epochs=100 if s else 40) for s in SEEDS]
    rnd = [run("random", s, 0.8 + 0.001 * s, status="diverged" if s == 2 else "finished") for s in SEEDS]
    c3 = claim(bn + rnd, 3)
    assert ("Budget: all 48,000 training images, early stopping (patience 3) within 100 epochs (the report's "
            "protocol); 2 of 6 runs ended at the epoch cap, 1 diverged.") in c3["measured"]
    # claim 4's growth and claim 5's width part count their diverged seeds
    runs = []
    for d in (2, 8):
        for s in SEEDS:
            runs += [run("all", s, 0.97, depth=d, status="diverged" if (d, s) == (8, 1) else "finished"),
                     run("all-nobn", s, 0.96 - 0.001 * d - 0.001 * s, depth=d)]
    assert "w784: +0.6 ± 0.0 points (n=3, 1 diverged)" in claim(runs, 4)["measured"]
    runs = [run("bn", s, 0.7 + 0.001 * s, width=20, depth=2, params=40, status="diverged" if s == 0 else "finished")
            for s in SEEDS] + [run("bn", s, 0.6, width=10, depth=4, params=40) for s in SEEDS]
    assert "+10.1 ± 0.2 points (n=3, 1 diverged) over 1 pair" in claim(runs, 5)["measured"]


def test_frankles_growth_counts_diverged_runs():
    from bnonly.study.frankle import frankle_claims
    runs = []
    for s in SEEDS:
        for m, g in (("resnet14", 0.1), ("resnet110", 0.2)):
            runs += [run("bn", s, 0.6 + 0.01 * s, model=m, preset="frankle", epochs=160),
                     run("random", s, 0.6 - g, model=m, preset="frankle", epochs=160,
                         status="diverged" if (m, s) == ("resnet14", 0) else "finished")]
    f2 = frankle_claims(runs)[1]
    assert "(n=3, 1 diverged)" in f2["measured"] and f2["verdict"] == HELD


def test_question_answers_name_their_budget_and_diverged_runs(tmp_path):
    from bnonly.reports.sections import question_sections
    from bnonly.study.questions import questions
    q = [run("bn", s, 0.8 + 0.01 * s + (0.02 if n == "batchnorm" else 0), width=100, depth=2, norm=n, subset=8000,
             max_epochs=10, epochs=10, status="diverged" if (n, s) == ("affine", 1) else "finished")
         for n in ("batchnorm", "affine") for s in SEEDS]
    (sec,) = question_sections(questions(q), tmp_path, {}, 0.1135)
    answer = next(b["text"] for b in sec["blocks"] if b["kind"] == "answer")
    assert "Budget: a subset of 8,000 images (6,400 to train on), early stopping (patience 3) within 10 epochs " \
           "(off the report's protocol in max_epochs, subset); 6 of 6 runs ended at the epoch cap, 1 diverged." in answer
    tab = next(b for b in sec["blocks"] if b["kind"] == "table")
    assert "(1 diverged)" in tab["rows"][0][1]


# ----------------------------------------------------------------------------- 8. claim 6's parts
def test_claim6_is_refuted_by_one_part_whatever_the_other():
    bn = [run("bn", s, 0.90 + 0.001 * s, model="lenet5") for s in SEEDS]
    assert claim(bn + [run("random", 0, 0.5, model="lenet5")], 6)["verdict"] == NOT_HELD  # random: one seed
    assert claim(bn, 6)["verdict"] == NOT_HELD                                            # no random at all
    at30 = [run("bn", s, 0.30 + 0.001 * s, model="lenet5") for s in SEEDS]
    assert claim(at30, 6)["verdict"] == NOT_MEASURED


# ----------------------------------------------------------------------------- 9. coverage
def test_universal_claims_name_the_cells_they_were_judged_on():
    runs = [run(t, s, acc + 0.001 * s, depth=d) for d in (4, 8) for t, acc in (("bn", 0.95), ("random", 0.8))
            for s in SEEDS]
    cl = claims(runs)
    assert cl[1]["label"] == "held at depths 4, 8 of 4–14" and cl[2]["label"] == "held at depths 4, 8 of 4–14"
    assert cl[0]["label"] == "held at 2 of the report's 49 cells (widths 784; depths 4, 8)"
    every = [run("bn", s, 0.95 + 0.001 * s, depth=d) for d in (4, 6, 8, 10, 12, 14) for s in SEEDS]
    assert claim(every, 2)["label"] == "held"


# ----------------------------------------------------------------------------- 10. settings
def test_setting_notes_say_stronger_or_weaker_and_mark_unpublished_settings():
    runs = [run(t, s, acc + 0.001 * s) for t, acc in (("bn", 0.95), ("random", 0.8)) for s in SEEDS]
    c3 = claim(runs, 3)
    assert "a stronger baseline than the one behind the report's numbers" in c3["measured"]
    assert c3["label"] == "held at depths 4 of 4–14" and c3["setting"] == "report"
    code = [run(t, s, acc + 0.001 * s, preset="report-code") for t, acc in (("bn", 0.95), ("random", 0.8))
            for s in SEEDS]
    c3 = claim(code, 3)
    assert "a weaker baseline than Frankle et al.'s" in c3["measured"] and c3["setting"] == "report-code"
    for odd in ({"bn_eps": 100.0}, {"bn_momentum": 1.0}, {"gamma_init": "ones"}):
        c2 = claim([run("bn", s, 0.95 + 0.001 * s, **odd) for s in SEEDS], 2)
        assert c2["verdict"] == HELD and c2["setting"] == "none", odd
        assert c2["label"].endswith(", outside the published settings")
        assert f"differs from `report` in {next(iter(odd))}" in c2["measured"]


# ----------------------------------------------------------------------------- 11. the small items
def test_a_subset_of_all_60000_images_is_the_protocol():
    runs = [run("bn", s, 0.95 + 0.001 * s, subset=60000) for s in SEEDS]
    assert claim(runs, 2)["verdict"] == HELD


def test_cifar10_has_its_sizes_and_chance():
    from bnonly.study.cells import config_of
    assert chance("cifar10") == (0.1, "the test set's majority-class rate")
    r = run("bn", 0, 0.5, model="resnet14", preset="frankle", subset=50000)
    assert config_of(r)["subset"] == 0  # all 50,000 images: the whole training set, the protocol


def test_questions_count_architectures_per_data_set():
    """4 MLPs on 2 data sets are 4 architectures on each, not 8."""
    from bnonly.study.questions import questions
    runs = [run("bn", s, (0.9 if norm == "batchnorm" else 0.8) + 0.001 * s + 0.0001 * w, width=w, depth=d,
                dataset=ds, norm=norm)
            for ds in ("mnist", "fashion-mnist") for w in (100, 400) for d in (2, 4) for s in SEEDS
            for norm in ("batchnorm", "affine")]
    text = next(q for q in questions(runs) if q.key == "affine").answers[0].text
    for ds in ("fashion-mnist", "mnist"):
        assert f"above 0 in 0 and below 0 in 4 of 4 architectures with ≥ 2 seeds on {ds}" in text, text
    assert "8 architectures" not in text


def test_f1_names_every_resnet_it_did_not_judge():
    from bnonly.study.frankle import frankle_claims
    runs = [run(t, s, acc + 0.01 * s, model=m, preset="frankle", epochs=160, params=1120)
            for m in ("resnet14", "resnet110x2") for s in SEEDS for t, acc in (("bn", 0.6), ("random", 0.45))]
    f1 = frankle_claims(runs)[0]
    assert f1["verdict"] == "not testable at this depth" and "resnet110x2" in f1["measured"]
    assert "wider than the standard 16/32/64 channels" in f1["measured"] and "Budget:" in f1["measured"]


def test_the_initial_network_is_measured_with_its_own_statistics():
    """own_statistics: the running mean of the first BatchNorm is the mean of what it reads over the
    training slice (a fresh module says 0), its variance that slice's (a fresh module says 1)."""
    from bnonly.study.gamma import own_statistics, norms
    torch.manual_seed(0)
    model = build(resolve("report", width=16, depth=2, trainable="bn"), (1, 28, 28))
    x = torch.rand(256, 1, 28, 28)
    own_statistics(model, x)
    first_layer, bn = model.units()[0][1], norms(model)[0]
    h = first_layer(x.flatten(1))
    assert not model.training
    assert torch.allclose(bn.running_mean, h.mean(0), atol=1e-5)
    halves = torch.stack([h[:128].var(0), h[128:].var(0)]).mean(0)  # each batch's unbiased variance, averaged
    assert torch.allclose(bn.running_var, halves, rtol=1e-4)


def test_chance_says_when_it_is_not_the_majority_class_rate():
    rate, basis = chance("idx", "/nonexistent")
    assert rate == 0.1 and "could not be read" in basis
    assert "1 / 10 classes" in rules(rate, basis)[0]


def test_most_holds_once_a_majority_holds_whatever_the_one_seed_cells():
    runs = []
    for d in (2, 4, 6):
        for s in SEEDS:
            runs += [run("all", s, 0.97, depth=d), run("all-nobn", s, 0.95 - 0.002 * d - 0.001 * s, depth=d)]
    runs += [run("all", 0, 0.97, width=10, depth=2), run("all-nobn", 0, 0.95, width=10, depth=2)]  # one seed
    c4 = claim(runs, 4)
    assert "3 of 4 cells shown above 0" in c4["measured"] and c4["verdict"] == HELD, c4["measured"]


def test_claim3_rule_names_the_relative_reading():
    assert "9.5 points" in rules(0.1135)[2]


# ----------------------------------------------------------------------------- learning curves
def test_learning_curves_are_the_mean_over_the_seeds_still_training(tmp_path):
    from bnonly.reports.figures import learning_curves
    hist = {0: [0.5, 0.6], 1: [0.7, 0.8, 0.9], 2: [0.6, 0.7, 0.8]}
    runs = [run("bn", s, 0.9, width=10, depth=2, max_epochs=3, epochs=len(h),
                history=[{"epoch": e + 1, "val_accuracy": v} for e, v in enumerate(h)]) for s, h in hist.items()]
    runs += [run("random", s, 0.5, width=10, depth=2, max_epochs=3, epochs=1,
                 history=[{"epoch": 1, "val_accuracy": 0.3}]) for s in SEEDS]
    curves = learning_curves(runs)
    assert set(curves) == {"mlp_w10_d2"} and curves["mlp_w10_d2"]["cap"] == 3
    bn = curves["mlp_w10_d2"]["sets"]["bn"]
    assert [e for e, _ in bn] == [1, 2, 3] and [st.n for _, st in bn] == [3, 3, 2]
    assert [round(st.mean, 6) for _, st in bn] == [0.6, 0.7, 0.85]
    assert curves["mlp_w10_d2"]["sets"]["random"][0][1].mean == pytest.approx(0.3)
    written = write_report(tmp_path, runs=runs)
    assert "learning_curves.png" in written and "learning_curves.png" in (tmp_path / "report.md").read_text()


# ----------------------------------------------------------------------------- the rules, as documented
def _words(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("`", "")).strip()


def test_docs_state_every_rule_as_the_code_applies_it():
    study = _words((DOCS / "study.md").read_text())
    rate, basis = chance("mnist")
    for i, rule in enumerate(rules(rate, basis) + FRANKLE_RULES):
        assert _words(rule) in study, f"rule {i + 1} of the code is not in docs/study.md word for word"
    assert _words(verdicts.DECIDING) in study, "docs/study.md does not say how a claim is decided as the code does"

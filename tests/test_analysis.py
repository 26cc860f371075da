"""What the affine parameters learn: dead units, ablation, the analysis in the report."""
import json

import pytest

import torch

from torch import nn

from bnonly.study.gamma import KS, RANDOM_DRAWS, ablation, dead_fraction, fractions, conditions, importance, norms, readers, scale_free, switched_off
from bnonly.cli import main
from bnonly.store import Store
from bnonly.config.layers import resolve
from bnonly.engine.resident import load
from bnonly.engine.loop import evaluate, train
from bnonly.registry.nets import Block, Net, build
from bnonly.engine.stack import Batch, Rows
from bnonly.engine.fused import FusedStack
from bnonly.engine.masks import Plan, plan


def test_dead_units_on_a_hand_built_model():
    cfg = resolve("frankle", width=4, depth=2, trainable="bn")
    m = build(cfg)
    with torch.no_grad():
        m.blocks[0].norm.weight.copy_(torch.tensor([0.0, 0.0, 1.0, 1.0]))
        m.blocks[0].norm.bias.copy_(torch.tensor([-1.0, -1.0, 0.0, 0.0]))  # units 0, 1: always -1 -> ReLU 0
        m.blocks[0].op.weight[2:].abs_()                                     # units 2, 3: positive on images
        m.blocks[1].norm.weight.fill_(1.0)
        m.blocks[1].norm.bias.fill_(-100.0)                                  # layer 2: every unit dead
        for b in m.blocks:  # inference statistics that leave values as they are
            b.norm.running_mean.zero_()
            b.norm.running_var.fill_(1.0)
    x = torch.rand(200, 1, 28, 28)
    assert dead_fraction(m, x) == [0.5, 1.0]


def test_ablation_ends_equal_the_model_and_its_constant_output():
    cfg = resolve(width=32, depth=2, subset=3000, max_epochs=1, trainable="bn+out", lr=0.1)
    (r,) = train([cfg])
    d = load(cfg.dataset, cfg.val_fraction, cfg.data_seed, cfg.subset)
    x, y, xs = d.x_test[:500], d.y_test[:500], d.x_train[:1280]
    abl = ablation(r.model, cfg, xs, x, y)
    fresh = FusedStack.from_models([r.model], [plan(build(cfg), cfg)])
    fresh.reestimate_statistics(xs.split(128), Rows([0]))
    _, acc = evaluate(fresh, Batch(x[None], y[None], Rows([0])), (1, 28, 28))
    assert KS[0] == 0 and KS[-1] == 100 and len(abl["random"][0]) == RANDOM_DRAWS
    # k = 0: the model itself, with statistics re-estimated on the same batches
    assert abl["smallest"][0] == abl["largest"][0] == float(acc[0]) == abl["random"][0][0]
    constant = int(r.model.head.bias.argmax())                         # k = 100: logits = head bias
    assert abl["smallest"][-1] == abl["largest"][-1] == float((y == constant).double().mean())


def test_ablation_variants_equal_the_models_with_those_features_off():
    """The ablation runs its variants as one stack of copies of the model with gamma = beta = 0 set
    in place: each point of a curve is the accuracy of switched_off's model, evaluated alone with
    its statistics re-estimated on the same batches."""
    cfg = resolve("frankle", width=24, depth=2, subset=2000, max_epochs=1, trainable="bn", lr=0.1)
    (r,) = train([cfg])
    d = load(cfg.dataset, cfg.val_fraction, cfg.data_seed, cfg.subset)
    x, y, xs = d.x_test[:400], d.y_test[:400], d.x_train[:640]
    abl = ablation(r.model, cfg, xs, x, y, seed=5)
    gen = torch.Generator().manual_seed(5)  # the random draws, in ablation's order
    draws = {k: [[torch.randperm(n.weight.numel(), generator=gen)[:round(n.weight.numel() * k / 100)]
                  for n in norms(r.model)] for _ in range(RANDOM_DRAWS)] for k in KS}
    checked = 0
    for j, k in enumerate(KS):
        if k not in (20, 50, 90):
            continue
        order = [i.argsort() for i in importance([n.weight for n in norms(r.model)], readers(r.model))]
        n_off = [round(n.weight.numel() * k / 100) for n in norms(r.model)]
        cases = {"smallest": [o[:n] for o, n in zip(order, n_off)], "largest": [o.flip(0)[:n] for o, n in zip(order, n_off)]}
        for field, off in [*cases.items(), ("random", draws[k][1])]:
            alone = FusedStack.from_models([switched_off(r.model, off)], [plan(build(cfg), cfg)])
            alone.reestimate_statistics(xs.split(128), Rows([0]))
            acc = float(evaluate(alone, Batch(x[None], y[None], Rows([0])), (1, 28, 28))[1][0])
            got = abl[field][j][1] if field == "random" else abl[field][j]
            assert abs(got - acc) <= 1 / len(y), (k, field, got, acc)  # one image at most (summation order)
            checked += 1
    assert checked == 9 and abl["smallest"][KS.index(50)] != abl["largest"][KS.index(50)]


def _mlp_without(model, cfg, off: list[int]):
    """The same network with hidden units `off` of layer 1 removed (weights sliced)."""
    keep = [i for i in range(cfg.width) if i not in off]
    small = Net([Block(nn.Linear(784, len(keep), bias=False), nn.BatchNorm1d(len(keep))),
                 Block(nn.Linear(len(keep), cfg.width, bias=False), nn.BatchNorm1d(cfg.width))],
                nn.Linear(cfg.width, 10))
    with torch.no_grad():
        b0, b1 = model.blocks
        small.blocks[0].op.weight.copy_(b0.op.weight[keep])
        small.blocks[0].norm.weight.copy_(b0.norm.weight[keep])
        small.blocks[0].norm.bias.copy_(b0.norm.bias[keep])
        small.blocks[1].op.weight.copy_(b1.op.weight[:, keep])
        small.blocks[1].norm.weight.copy_(b1.norm.weight)
        small.blocks[1].norm.bias.copy_(b1.norm.bias)
        small.head.load_state_dict(model.head.state_dict())
    return small


def test_ablation_with_fresh_statistics_equals_the_model_without_those_features():
    """Switching units off (gamma = beta = 0) and re-estimating BatchNorm statistics is exactly the
    network built without those units; with the intact network's statistics it is not."""
    cfg = resolve("frankle", width=16, depth=2, subset=2000, max_epochs=2, trainable="bn", lr=0.1)
    (r,) = train([cfg])
    d = load(cfg.dataset, cfg.val_fraction, cfg.data_seed, cfg.subset)
    x, y, xs = d.x_test[:1000], d.y_test[:1000], d.x_train[:640].split(128)
    off = [1, 4, 5, 9, 12]
    ablated = switched_off(r.model, [torch.tensor(off), torch.tensor([], dtype=torch.long)])
    everything = Plan({n: True for n, _ in ablated.named_parameters()})
    small = _mlp_without(r.model, cfg, off)
    a = FusedStack.from_models([ablated], [everything])
    b = FusedStack.from_models([small], [Plan({n: True for n, _ in small.named_parameters()})])
    batch = Batch(x[None], y[None], Rows([0]))
    stale = a.forward(batch, training=False)
    for s in (a, b):
        s.reestimate_statistics(xs, Rows([0]))
    la, lb = a.forward(batch, training=False), b.forward(batch, training=False)
    assert torch.allclose(la, lb, atol=1e-5) and (la.argmax(-1) == lb.argmax(-1)).all()
    assert float(evaluate(a, batch, (1, 28, 28))[1][0]) == float(evaluate(b, batch, (1, 28, 28))[1][0])
    assert not torch.allclose(stale, lb, atol=1e-3)  # the intact network's statistics describe another network


def test_disabled_fraction_is_scale_free_and_the_function_too():
    """Scaling a hidden layer that BatchNorm follows by c leaves the training-mode output unchanged
    (up to eps), and the scale-free disabled fraction with it; the absolute one moves."""
    cfg = resolve("frankle", width=64, depth=3, trainable="bn")
    m = build(cfg)
    x = torch.rand(256, 1, 28, 28)
    m.train()
    before_out = m(x)
    free = scale_free(m)
    assert free == [True, True, False]  # the last hidden layer feeds the head: its scale reaches the logits
    before = fractions([b.norm.weight.detach().clone() for b in m.blocks], readers(m), free)
    with torch.no_grad():  # layer 1 (followed by layer 2's BatchNorm): gamma and beta x 4
        m.blocks[0].norm.weight.mul_(4.0)
        m.blocks[0].norm.bias.mul_(4.0)
    after_out = m(x)
    after = fractions([b.norm.weight.detach().clone() for b in m.blocks], readers(m), free)
    assert torch.allclose(before_out, after_out, atol=1e-4)
    assert after["relative"] == before["relative"] and before["relative"]["per_layer"][2] is None
    assert after["0.1"]["per_layer"][0] < before["0.1"]["per_layer"][0] - 0.03  # not scale-free
    with torch.no_grad():  # the last layer's scale is not free: the logits move
        m.blocks[2].norm.weight.mul_(4.0)
        m.blocks[2].norm.bias.mul_(4.0)
    assert not torch.allclose(m(x), before_out, atol=1e-2)


def test_scale_free_layers_of_each_kind_of_model():
    """A chain: every layer but the last, where the next layer normalizes; a ResNet: a block's first
    layer only (its second, the shortcut's and the stem's feed the residual sum)."""
    from bnonly.registry.nets import ResNet
    assert scale_free(build(resolve("frankle", width=8, depth=4, norm="layernorm", trainable="bn"))) == [True] * 3 + [False]
    assert scale_free(build(resolve("frankle", width=8, depth=3, norm="affine", trainable="bn"))) == [False] * 3
    assert scale_free(build(resolve("frankle", model="lenet5", trainable="bn"))) == [True, True, True, False]
    r = ResNet(14)
    free = dict(zip((n for n, _, _ in r.units()), scale_free(r)))
    assert free["stem"] is False and free["blocks.0.conv1"] and not free["blocks.0.conv2"]
    assert not free["blocks.2.shortcut"] and sum(free.values()) == 6  # ResNet-14: 6 blocks, one conv1 each


def test_control_ablation_equals_the_ordered_one_where_gamma_did_not_move():
    """Ordered by the importance at initialisation, the ablation of a network whose gamma did not move
    is exactly the least-important-first ablation; after training they part."""
    cfg = resolve(width=32, depth=2, subset=3000, max_epochs=1, trainable="bn", lr=0.1)
    d = load(cfg.dataset, cfg.val_fraction, cfg.data_seed, cfg.subset)
    x, y, xs = d.x_test[:300], d.y_test[:300], d.x_train[:640]
    untrained = build(cfg)
    initial = importance([n.weight.detach().clone() for n in norms(untrained)], readers(untrained))
    same = ablation(untrained, cfg, xs, x, y, initial=initial, draws=0)
    assert same["initial"] == same["smallest"] and "random" not in same
    (r,) = train([cfg])
    moved = ablation(r.model, cfg, xs, x, y, initial=initial, draws=1)
    assert moved["initial"] != moved["smallest"] and len(moved["random"][0]) == 1


def test_known_zero_gammas_give_exactly_that_fraction_and_those_dead_units():
    cfg = resolve("frankle", width=10, depth=2, trainable="bn")
    m = build(cfg)
    with torch.no_grad():
        m.blocks[0].norm.weight.copy_(torch.tensor([0.0, 0.0, 0.0, 1, 1, 1, 1, 1, 1, 1]))
        m.blocks[0].norm.bias.copy_(torch.tensor([0.0, 0.0, -1.0, 0, 0, 0, 0, 0, 0, 0]))
        m.blocks[1].norm.weight.fill_(1.0)
        m.blocks[1].norm.bias.zero_()
        m.blocks[1].op.weight.fill_(0.1)  # every column of equal norm: a feature's contribution is its |gamma|
        m.head.weight.fill_(0.1)
        x = torch.rand(500, 1, 28, 28)
        for b in m.blocks:  # statistics of these inputs, so every gamma=1 unit is centred
            b.norm.reset_running_stats()
            b.norm.momentum = None
        m.train()(x)
    f = fractions([b.norm.weight for b in m.blocks], readers(m), [True, True])
    assert f["relative"]["per_layer"] == [0.3, 0.0] and f["relative"]["all"] == 3 / 20
    f = fractions([b.norm.weight for b in m.blocks], readers(m), scale_free(m))  # the last layer: absolutely only
    assert f["relative"]["per_layer"] == [0.3, None] and f["relative"]["all"] == 0.3 and f["0.01"]["all"] == 3 / 20
    # gamma = 0 and beta <= 0: ReLU(beta) = 0 on every input; centred gamma=1 units fire on about half
    assert dead_fraction(m, x) == [0.3, 0.0]


def test_two_conditions_are_not_pooled():
    a = {"config": resolve(width=8, depth=2, seed=0).__dict__}
    b = {"config": resolve(width=8, depth=2, seed=1).__dict__}
    c = {"config": resolve(width=8, depth=2, seed=0, norm="layernorm").__dict__}
    d = {"config": resolve(width=8, depth=2, seed=0, max_epochs=10).__dict__}
    g = conditions([a, b, c, d])
    assert sorted(len(v) for v in g.values()) == [1, 1, 2]


def test_analyze_and_report_on_a_small_sweep(tmp_path, capsys, monkeypatch):
    out = tmp_path / "a"
    base = ["--set", "widths=[16]", "--set", "depths=[1,2]", "--set", "seeds=[0,1]", "--set", "subset=2000",
            "--set", "max_epochs=2", "--set", 'models=["mlp"]', "--set", 'trainable=["bn","bn+out","all","random"]',
            "--set", "preset=frankle"]
    assert main(["sweep", "quick", "--out", str(out)] + base) == 0
    capsys.readouterr()
    assert main(["analyze", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "12 runs analyzed" in printed  # random is not analyzed
    assert printed.count("features of the layers followed by a normalization disabled") == 2  # bn and all at depth 2
    assert printed.count("no layer is followed by a normalization") == 2  # at depth 1 the one layer feeds the head
    assert printed.count("Budget: a subset of 2,000 images (1,600 to train on), early stopping (patience 3) within 2 "
                         "epochs (off the report's protocol in max_epochs, subset)") == 4
    assert "beta_hist_mlp_w16_d2.png" in printed  # the frankle preset has hidden beta
    analysis = sorted(p.name for p in (out / "analysis").iterdir())  # its own folder, its own manifest
    assert "ablation_mlp_w16_d1.png" in analysis and ".bnonly-analysis.json" in analysis
    (out / "holiday.png").write_bytes(b"a user's picture")  # files bnonly never wrote, beside the report
    (out / "analysis" / "notes.svg").write_text("<svg/>")
    assert main(["report", str(out)]) == 0
    for f in ("gamma_hist_mlp_w16_d2.png", "gamma_hist_mlp_w16_d2.svg", "ablation_mlp_w16_d1.png", "report.json"):
        assert (out / f).stat().st_size > 0, f
    assert sorted(p.name for p in (out / "analysis").iterdir()) == sorted(analysis + ["notes.svg"])
    # the report replaces what its manifest lists, and only that; so does the analysis
    listed = json.loads((out / ".bnonly-report.json").read_text())
    assert "report.md" in listed and "holiday.png" not in listed
    (out / "stale.png").write_bytes(b"from an earlier report")
    (out / ".bnonly-report.json").write_text(json.dumps(listed + ["stale.png", "../escape.png"]))
    (tmp_path / "escape.png").write_bytes(b"outside")
    assert main(["report", str(out)]) == 0
    assert not (out / "stale.png").exists() and (out / "holiday.png").read_bytes() == b"a user's picture"
    assert (tmp_path / "escape.png").exists() and (out / "gamma_hist_mlp_w16_d2.png").exists()
    assert main(["analyze", str(out)]) == 0
    assert (out / "report.md").exists() and (out / "analysis" / "notes.svg").exists()
    assert not list(out.glob(".report-*")) and not list((out / "analysis").glob(".analysis-*"))
    doc = json.loads((out / "report.json").read_text())
    assert {"claims", "claims_by_dataset", "mlp_table", "lenet_table", "sections", "gamma_analysis"} <= set(doc)
    assert len(doc["gamma_analysis"]["rows"]) == 2 * 3 and len(doc["gamma_analysis"]["runs"]) == 12
    md = (out / "report.md").read_text()
    assert "## What the affine parameters learn" in md and "around a third of the random features" in md
    assert "(control)" in md and "Frankle et al.: 25-33%" not in md
    assert "n/a: no hidden beta" not in md and "cannot die" not in md
    # each run's analysis was computed once and kept in the store: a later report reads it back, the same
    from bnonly.study import gamma
    assert len(Store(out / "results.sqlite").analyses()) == 12
    def computed_again(*a, **k):
        raise AssertionError("analysed again")
    monkeypatch.setattr(gamma, "analyze_run", computed_again)
    assert main(["report", str(out)]) == 0
    assert json.loads((out / "report.json").read_text()) == doc
    # ... until the analysis code changes (its key): then it is computed again
    monkeypatch.setattr(gamma, "ANALYSIS_VERSION", gamma.ANALYSIS_VERSION + 1)
    gamma.analysis_code.cache_clear()
    try:
        with pytest.raises(AssertionError, match="analysed again"):
            main(["report", str(out)])
    finally:
        gamma.analysis_code.cache_clear()
    monkeypatch.undo()
    # models emptied after their analysis (a store carried in git without them): the analyses stay
    assert len(Store(out / "results.sqlite").prune_models(0)) == 16  # every model (random's too)
    assert main(["report", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["gamma_analysis"] == doc["gamma_analysis"]


def test_report_preset_has_no_beta_so_no_dead_units_are_reported(tmp_path):
    from bnonly.study.gamma import analyze_run
    from bnonly.reports.analysis import section
    cfg = resolve("report", width=16, depth=2, subset=1000, max_epochs=1, trainable="bn")
    (r,) = train([cfg])
    a = analyze_run({"run_id": cfg.run_id, "config": cfg.__dict__, "test_accuracy": r.test_accuracy}, r.artefact)
    assert a["has_beta"] is False and a["dead"] is None and a["rare"] is None
    assert a["ablation"]["untrained"] and a["ablation"]["initial"] and a["scale_free"] == [True, False]
    sec, (header, rows) = section([a, {**a, "status": "diverged"}], tmp_path, {}, 0.1135)
    assert rows[0][header.index("dead units (%)")] == "n/a: no trained hidden beta"
    assert rows[0][header.index("n")] == "2 (1 diverged)"
    assert any("cannot die" in b.get("text", "") for b in sec["blocks"])


def test_two_studies_never_share_a_figure_name(tmp_path):
    from bnonly.reports.analysis import condition_name as _name
    a = {"config": resolve(width=8, depth=2, trainable="bn").__dict__}
    b = {"config": resolve(width=8, depth=2, trainable="bn", max_epochs=10).__dict__}
    g = conditions([a, b])
    names = {_name(k, g) for k in g}
    assert len(names) == 2 and all(n.startswith("mlp_w8_d2_") for n in names)
    assert {_name(k, [k]) for k in g} == {"mlp_w8_d2"}


def test_analyses_computed_in_a_log_say_how_far_they_are(capsys):
    """Without a terminal (no bar), a line at most once a `every` seconds: runs done, time left at the
    pace so far."""
    from bnonly.study.analyses import Paced
    log = Paced(4, every=0)
    log.started -= 60
    log.next()
    log.computed()  # one analysis in 60 s, 3 runs left
    log.next()  # (kept from before: nothing computed, nothing said)
    assert capsys.readouterr().err == "gamma analysis: 1 of 4 runs, about 3 min left\n"
    quiet = Paced(4)  # once a minute: nothing yet
    quiet.next()
    quiet.computed()
    assert capsys.readouterr().err == ""

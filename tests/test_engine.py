from dataclasses import replace

import pytest
import torch

from bnonly.config.layers import resolve
from bnonly.engine.resident import load
from bnonly.engine.loop import train
from bnonly.registry.nets import build
from bnonly.engine.device import EngineOptions
from bnonly.engine.stack import Batch, Rows
from bnonly.engine.fused import FusedStack
from bnonly.engine.masks import plan

SMALL = dict(model="mlp", width=32, depth=2, subset=3000, max_epochs=1)


def small(preset="report", **kw):
    return resolve(preset, **{**SMALL, **kw})


def assert_same_training(a, b):
    """Two results of one config trained two ways: the same epochs, losses to 1e-4, test accuracy
    to 0.2 points (a different summation order moves the last bits)."""
    assert a.epochs_run == b.epochs_run
    for ha, hb in zip(a.history, b.history):
        assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-4)
        assert ha["val_loss"] == pytest.approx(hb["val_loss"], rel=1e-4)
    assert a.test_accuracy == pytest.approx(b.test_accuracy, abs=2e-3)


def test_stack_of_one_computes_what_the_module_computes():
    for cfg in (small("frankle", trainable="all"), small(trainable="all-nobn"),
                resolve("frankle", model="lenet5", trainable="bn", subset=3000)):
        m = build(cfg)
        stack = FusedStack.from_models([m], [plan(m, cfg)])
        x = torch.rand(64, 1, 28, 28)
        batch = Batch(x[None], None, Rows([0]))
        m.train()
        torch.testing.assert_close(stack.forward(batch, training=True)[0], m(x), rtol=1e-4, atol=1e-4)
        for n, b in m.named_buffers():  # running statistics updated the same way
            if not n.endswith("num_batches_tracked"):
                torch.testing.assert_close(stack.buffers[n][0], b, rtol=1e-5, atol=1e-6)
        m.eval()
        torch.testing.assert_close(stack.forward(batch, training=False)[0], m(x), rtol=1e-4, atol=1e-4)


def test_grouped_conv_path_equals_per_model_convs():
    """The CUDA path (one grouped convolution for all models) computes what the CPU path computes."""
    cfgs = [resolve("report", model="lenet5", trainable=t, seed=s) for s in (0, 1) for t in ("bn", "all")]
    models = [build(c) for c in cfgs]
    batch = Batch(torch.rand(len(cfgs), 32, 1, 28, 28, generator=torch.Generator().manual_seed(0)), None, Rows(range(4)))
    out = {}
    for grouped in (False, True):
        options = replace(EngineOptions.for_device("cpu"), grouped_conv=grouped)
        stack = FusedStack.from_models(models, [plan(m, c) for m, c in zip(models, cfgs)], options=options)
        logits = stack.forward(batch, training=True)
        logits.square().sum().backward()
        out[grouped] = (logits.detach(), {n: p.grad for n, p in stack.params.items() if p.requires_grad},
                        {n: b for n, b in stack.buffers.items()}, stack.forward(batch, training=False).detach())
    (l0, g0, b0, e0), (l1, g1, b1, e1) = out[False], out[True]
    torch.testing.assert_close(l1, l0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(e1, e0, rtol=1e-4, atol=1e-5)
    assert g1.keys() == g0.keys() and "blocks.0.op.weight" in g0
    for n in g0:  # float32 sums in another order: differences relative to the gradient's scale
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-3, atol=1e-5 * float(g0[n].abs().max()))
    for n in b0:
        torch.testing.assert_close(b1[n], b0[n], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("trainable", ["bn", "random", "out", "none", "gamma", "beta", "bn+out"])
def test_frozen_is_bit_identical(trainable):
    # momentum and weight decay must not move anything outside the trainable set
    cfg = small("frankle", trainable=trainable, weight_decay=5e-3, seed=1)
    before = build(cfg)
    p = plan(before, cfg)
    (r,) = train([cfg])
    after = dict(r.model.named_parameters())
    changed = 0
    for name, w0 in before.named_parameters():
        w1 = after[name]
        m = p.masks[name]
        if isinstance(m, torch.Tensor):
            assert torch.equal(w1[~m], w0[~m]), name
            changed += int((w1[m] != w0[m]).sum())
        elif not m:
            assert torch.equal(w1, w0), name
        else:
            changed += int((w1 != w0).sum())
    assert (changed > 0) == (trainable != "none")
    # BN running statistics are buffers: they still update in training mode
    assert not torch.equal(r.model.blocks[0].norm.running_mean, before.blocks[0].norm.running_mean)


def test_inference_mode_random_keeps_statistics():
    cfg = small(trainable="random", random_norm="inference")
    (r,) = train([cfg])
    assert torch.equal(r.model.blocks[0].norm.running_mean, torch.zeros(32))
    assert torch.equal(r.model.blocks[0].norm.running_var, torch.ones(32))


def test_bn_only_beats_chance_after_one_short_epoch():
    # 63 steps on 8,000 images; lr 0.1 so that gamma alone moves far enough in so few steps
    (r,) = train([small(width=256, subset=10000, trainable="bn", lr=0.1)])
    assert r.status == "finished" and r.epochs_run == 1 and r.trainable_params == 512
    assert r.test_accuracy > 0.3, r.test_accuracy  # chance is 0.1


def test_same_seed_same_numbers_other_seed_other_numbers():
    cfg = small(trainable="bn+out", max_epochs=2)
    a, b = train([cfg])[0], train([cfg])[0]
    assert a.history == b.history and a.test_accuracy == b.test_accuracy
    c = train([cfg.replace(seed=1)])[0]
    assert c.history != a.history


@pytest.mark.parametrize("model,sets", [("mlp", ("bn", "random", "all")),   # first layer trains: a batch per model
                                        ("mlp", ("bn", "bn+out", "out")),    # frozen: one batch per seed, shared
                                        ("mlp", ("bn", "random", "none")),   # random's entries: gathered gradients
                                        ("mlp", ("all", "bn", "bn+out", "random", "out", "none")),  # one stack (width 10)
                                        ("lenet5", ("bn", "bn+out"))])
def test_group_equals_runs_alone(model, sets):
    # seeds interleaved on purpose: the engine orders the stack (engine.stack_order) and returns results in input order
    cfgs = [small(model=model, trainable=t, seed=s, max_epochs=2) for t in sets for s in (1, 0)]
    together = train(cfgs)
    for cfg, rt in zip(cfgs, together):
        (alone,) = train([cfg])
        assert rt.config == cfg
        assert rt.epochs_run == alone.epochs_run
        for ht, ha in zip(rt.history, alone.history):
            assert ht["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-4)
            assert ht["val_loss"] == pytest.approx(ha["val_loss"], rel=1e-4)
        assert rt.test_accuracy == pytest.approx(alone.test_accuracy, abs=2e-3)


def textbook_epoch(model, opt, cfg, d):
    """One epoch of nn.Module + torch.optim.SGD on the batches the engine uses for cfg's seed."""
    perm = torch.randperm(len(d.y_train), generator=torch.Generator().manual_seed(cfg.seed))
    for s in range(0, len(perm), cfg.batch_size):
        idx = perm[s:s + cfg.batch_size]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(d.x_train[idx]), d.y_train[idx]).backward()
        opt.step()


def test_matches_textbook_pytorch_training():
    """The engine's `all` run equals nn.Module + torch.optim.SGD fed the same batches."""
    cfg = small("frankle", trainable="all", weight_decay=1e-3)
    (r,) = train([cfg])
    d = load(cfg.dataset, cfg.val_fraction, cfg.data_seed, cfg.subset)
    m = build(cfg).train()
    opt = torch.optim.SGD(m.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    textbook_epoch(m, opt, cfg, d)
    for (n, a), b in zip(m.named_parameters(), r.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=n)


def test_early_stopping_restores_best_and_stops():
    # a large lr makes validation loss get worse soon; patience 1 stops at the first bad epoch
    cfg = small(trainable="all", lr=0.5, max_epochs=8, patience=1)
    (r,) = train([cfg])
    vals = [h["val_loss"] for h in r.history]
    assert r.epochs_run < 8
    assert r.best_epoch == 1 + vals.index(min(vals)) and r.val_loss == min(vals)
    assert r.epochs_run == r.best_epoch + 1


def test_per_model_early_stopping_in_a_group():
    """Models of one stack stop at different epochs; each ends as it would alone, with its best weights."""
    cfgs = [small(trainable=t, seed=s, max_epochs=5, patience=1, lr=0.05) for s in (0, 1) for t in ("none", "all")]
    together = train(cfgs)
    assert len({r.epochs_run for r in together}) > 1  # they really stopped at different times
    for cfg, rt in zip(cfgs, together):
        (alone,) = train([cfg])
        assert rt.config == cfg
        assert rt.epochs_run == alone.epochs_run and rt.best_epoch == alone.best_epoch
        # `none` makes one pass (test_none_is_one_pass...); the others stop by patience or the cap
        assert rt.epochs_run in ((1,) if cfg.trainable == "none" else (rt.best_epoch + cfg.patience, cfg.max_epochs))
        for (n, a), b in zip(rt.model.state_dict().items(), alone.model.state_dict().values()):
            torch.testing.assert_close(a.float(), b.float(), rtol=1e-3, atol=1e-4, msg=n)


def test_bf16_autocast_trains():
    (r,) = train([small(width=256, subset=10000, trainable="bn", lr=0.1, precision="bf16")])
    (f,) = train([small(width=256, subset=10000, trainable="bn", lr=0.1)])
    assert r.test_accuracy > 0.3 and abs(r.test_accuracy - f.test_accuracy) < 0.05


def test_shared_first_layer_runs_once_per_seed_and_equals_per_model():
    """Models of one seed share their initial weights, whatever their set; where none trains the
    first layer's weight, the stack computes it once per row (seed) and each model gets exactly
    what its own first layer gives."""
    for model, last in (("mlp", "random"), ("lenet5", "none")):  # (LeNet-5's random trains conv weights through masks)
        cfgs = [small(model=model, trainable=t, seed=s) for s in (0, 1) for t in ("bn", "bn+out", "out", last)]
        models = [build(c) for c in cfgs]
        for m, c in zip(models, cfgs):
            same = models[0 if c.seed == 0 else 4]
            assert all(torch.equal(a.weight, b.weight) for (_, a, _), (_, b, _) in zip(m.units(), same.units()))
        stack = FusedStack.from_models(models, [plan(m, c) for m, c in zip(models, cfgs)])
        assert stack.shares_first_layer
        x = torch.rand(2, 16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        per_seed = Batch(x, None, Rows([0, 0, 0, 0, 1, 1, 1, 1]))
        assert per_seed.rows.first_model == [0, 4] and per_seed.rows.index is not None
        shared = stack.forward(per_seed, training=False)
        alone = torch.cat([FusedStack.from_models([m], [plan(m, c)]).forward(Batch(x[c.seed][None], None, Rows([0])), False)
                           for m, c in zip(models, cfgs)])
        torch.testing.assert_close(shared, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model,sets", [("mlp", ("bn", "out", "random")), ("lenet5", ("bn", "out"))])
def test_first_layer_cache_equals_streaming(model, sets):
    """The frozen first layer computed once for the whole data set gives the runs they give when it
    runs per batch (first_layer_cache_mb = 0), random's first-layer entries included; frozen
    weights stay bit-identical either way."""
    cfgs = [small(model=model, trainable=t, seed=s, max_epochs=2, subset=2000) for s in (0, 1) for t in sets]
    cached = train(cfgs, options=replace(EngineOptions.for_device("cpu"), first_layer_cache_mb=1e6))
    streamed = train(cfgs, options=replace(EngineOptions.for_device("cpu"), first_layer_cache_mb=0))
    for c, s in zip(cached, streamed):
        assert_same_training(c, s)
        first = build(c.config).blocks[0].op.weight
        frozen = ~plan(build(c.config), c.config).masks["blocks.0.op.weight"] if c.config.trainable == "random" else ...
        for r in (c, s):
            assert torch.equal(r.model.blocks[0].op.weight[frozen], first[frozen])


def test_first_layer_cache_is_used_only_where_it_applies():
    from bnonly.engine.loop import Training
    d = load("mnist", 0.2, 0, 2000)
    def group(*sets, options=EngineOptions.for_device("cpu"), **kw):
        cfgs = [small(trainable=t, seed=s, subset=2000, **kw) for s in (0, 1) for t in sets]
        return Training(cfgs, "cpu", None, options=options)
    g = group("bn", "out")
    assert g.first is not None and g.first.train.shape == (2, len(d.y_train), 32)
    assert g.first.val.shape == (2, len(d.y_val), 32) and g.first.test.shape == (2, 10000, 32)
    assert group("bn", "all").first is None            # the first layer trains
    assert group("bn", "random").first is not None     # random's entries are a correction to the shared layer
    assert group("bn", precision="bf16").first is None  # autocast would compute it differently
    small_budget = replace(EngineOptions.for_device("cpu"), first_layer_cache_mb=1)  # 2 seeds x 14,000 images x 32 floats > 1 MB
    assert group("bn", options=small_budget).first is None


def test_none_is_one_pass_of_statistics_then_evaluation():
    """`none` trains nothing: one epoch gives BatchNorm its running statistics, then it stops; its
    test accuracy is that of the random network with those statistics."""
    cfg = small(trainable="none", max_epochs=10, subset=2000)
    (r,) = train([cfg])
    assert r.epochs_run == 1 and r.best_epoch == 1 and r.status == "finished"
    m = build(cfg)
    assert all(torch.equal(a, b) for a, b in zip(m.parameters(), r.model.parameters()))  # nothing moved
    d = load(cfg.dataset, cfg.val_fraction, cfg.data_seed, cfg.subset)
    m.train()
    with torch.no_grad():
        for b in torch.randperm(len(d.y_train), generator=torch.Generator().manual_seed(cfg.seed)).split(cfg.batch_size):
            m(d.x_train[b])
        m.eval()
        acc = (m(d.x_test).argmax(1) == d.y_test).float().mean().item()
    assert acc == pytest.approx(r.test_accuracy, abs=1e-3)


def test_random_entries_train_as_a_masked_dense_weight_would():
    """`random` in an MLP: its entries are a sparse correction to the initial weights whose gradients
    are gathered (stacked.SparseEntries), never the dense weight gradient; it trains as nn.Module +
    SGD with the gradient masked does, frozen entries bit-identical."""
    cfg = small(trainable="random", subset=3000, lr=0.05)
    m = build(cfg)
    p = plan(m, cfg)
    stack = FusedStack.from_models([m], [p])
    # the first layer keeps its initial (the seed's) weight, so its dense part can be shared; its entries correct it
    assert set(stack.entries) == {"blocks.0.op.weight", "blocks.1.op.weight"}
    assert stack.shares_first_layer
    assert not stack.params["blocks.0.op.weight"].requires_grad and stack.params["blocks.0.op.weight:entries"].shape == (1, 32)
    (r,) = train([cfg])
    d = load(cfg.dataset, cfg.val_fraction, cfg.data_seed, cfg.subset)
    ref = build(cfg).train()
    rp = plan(ref, cfg)
    params = []
    for n, q in ref.named_parameters():
        mask = rp.masks[n]
        q.requires_grad_(mask is not False)
        if isinstance(mask, torch.Tensor):
            q.register_hook(lambda g, mask=mask: g * mask)
            params.append(q)
    textbook_epoch(ref, torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum), cfg, d)
    init = build(cfg)
    for (n, a), b, c in zip(ref.named_parameters(), r.model.parameters(), init.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5, msg=n)
        mask = rp.masks[n]
        if isinstance(mask, torch.Tensor):
            assert torch.equal(b[~mask], c[~mask]) and not torch.equal(b[mask], c[mask]), n


def test_random_group_whose_models_all_stop_at_once_and_random_in_bf16():
    """Regressions found in review: a stack emptied in one epoch (every model out of patience or
    diverged) and `random` under bf16 autocast both finish instead of raising."""
    cfgs = [small(trainable=t, seed=s, max_epochs=8, patience=1, lr=1e30) for s in (0, 1) for t in ("bn", "random")]
    rs = train(cfgs)
    assert all(r.status == "finished" for r in rs)
    assert max(r.epochs_run for r in rs) < 8  # the last models left by patience: the stack ended empty
    (r,) = train([small(trainable="random", precision="bf16", subset=1500)])
    assert r.status == "finished" and r.epochs_run == 1


@pytest.mark.parametrize("model", ["mlp", "lenet5"])
def test_evaluation_in_cache_sized_chunks_equals_one_pass(model):
    """On a CPU evaluate() passes cache-sized chunks (EngineOptions.eval_floats; 256 images for three
    LeNet-5s, 1,747 for three 100-wide MLPs): the same losses and accuracies as the whole set at once."""
    from bnonly.engine.loop import evaluate
    cfgs = [small(model=model, width=100, trainable=t, seed=0) for t in ("bn", "all", "out")]
    models = [build(c) for c in cfgs]
    stack = FusedStack.from_models(models, [plan(m, c) for m, c in zip(models, cfgs)])
    d = load("mnist", 0.2, 0, 3000)
    x, y = d.x_test[:4000], d.y_test[:4000]
    shape = tuple(x.shape[1:])
    assert stack.chunk_size(len(y), shape) == (256 if model == "lenet5" else 1747)
    assert stack.example_floats(shape) == (16 * 28 * 28 if model == "lenet5" else 100)  # conv: maps
    batch = Batch(x[None], y[None], Rows([0, 0, 0]))
    chunked, whole = evaluate(stack, batch, shape), evaluate(stack, batch, shape, chunk=len(y))
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-6, atol=0)
    assert torch.equal(chunked[1], whole[1])


def test_a_diverged_run_keeps_a_test_accuracy_from_its_best_weights():
    """A non-finite loss ends a run as `diverged`; it keeps the test accuracy of its best weights (its
    initial ones where no epoch improved on them), so the statistics can count it."""
    import math
    (r,) = train([small(trainable="all-nobn", lr=1e6, max_epochs=3)])
    assert r.status == "diverged" and math.isfinite(r.test_accuracy) and 0 <= r.test_accuracy <= 1

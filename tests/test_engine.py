import pytest
import torch

from bnonly.config import resolve
from bnonly.data import load
from bnonly.engine import train
from bnonly.models import build
from bnonly.stacked import Stack
from bnonly.trainable import plan

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
        stack = Stack.from_models([m], [plan(m, cfg)])
        x = torch.rand(64, 1, 28, 28)
        m.train()
        torch.testing.assert_close(stack.forward(x[None], training=True)[0], m(x), rtol=1e-4, atol=1e-4)
        for n, b in m.named_buffers():  # running statistics updated the same way
            if not n.endswith("num_batches_tracked"):
                torch.testing.assert_close(stack.buffers[n][0], b, rtol=1e-5, atol=1e-6)
        m.eval()
        torch.testing.assert_close(stack.forward(x[None], training=False)[0], m(x), rtol=1e-4, atol=1e-4)


def test_grouped_conv_path_equals_per_model_convs(monkeypatch):
    """The CUDA path (one grouped convolution for all models) computes what the CPU path computes."""
    from bnonly import stacked
    cfgs = [resolve("report", model="lenet5", trainable=t, seed=s) for s in (0, 1) for t in ("bn", "all")]
    models = [build(c) for c in cfgs]
    x = torch.rand(len(cfgs), 32, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    out = {}
    for grouped in (False, True):
        monkeypatch.setattr(stacked, "GROUPED_CONV", grouped)
        stack = Stack.from_models(models, [plan(m, c) for m, c in zip(models, cfgs)])
        logits = stack.forward(x, training=True)
        logits.square().sum().backward()
        out[grouped] = (logits.detach(), {n: p.grad for n, p in stack.params.items() if p.requires_grad},
                        {n: b for n, b in stack.buffers.items()}, stack.forward(x, training=False).detach())
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
                                        ("lenet5", ("bn", "gamma"))])
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
    """Models of one seed share their first layer; the stack computes it once per seed (one owner
    per seed) and each model gets exactly what its own first layer gives."""
    for model in ("mlp", "lenet5"):
        cfgs = [small(model=model, trainable=t, seed=s) for s in (0, 1) for t in ("bn", "bn+out", "out")]
        models = [build(c) for c in cfgs]
        stack = Stack.from_models(models, [plan(m, c) for m, c in zip(models, cfgs)])
        assert stack.first_layer_owners() == [0, 0, 0, 3, 3, 3]
        x = torch.rand(2, 16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        shared = stack.forward(x, training=False, shared=[(0, 0, 3), (1, 3, 6)])
        alone = stack.forward(x.repeat_interleave(3, 0), training=False)  # a batch per model, no sharing
        torch.testing.assert_close(shared, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", ["mlp", "lenet5"])
def test_first_layer_cache_equals_streaming(model, monkeypatch):
    """The frozen first layer computed once for the whole data set gives the runs they give when it
    runs per batch (FIRST_LAYER_CACHE_MB = 0); frozen weights stay bit-identical either way."""
    from bnonly import engine
    cfgs = [small(model=model, trainable=t, seed=s, max_epochs=2, subset=2000) for s in (0, 1) for t in ("bn", "out")]
    cached = train(cfgs)
    monkeypatch.setattr(engine, "FIRST_LAYER_CACHE_MB", 0)
    streamed = train(cfgs)
    for c, s in zip(cached, streamed):
        assert_same_training(c, s)
        first = build(c.config).blocks[0].op.weight
        assert torch.equal(c.model.blocks[0].op.weight, first) and torch.equal(s.model.blocks[0].op.weight, first)


def test_first_layer_cache_is_used_only_where_it_applies(monkeypatch):
    from bnonly import engine
    d = load("mnist", 0.2, 0, 2000)
    def group(*sets, **kw):
        cfgs = [small(trainable=t, seed=s, subset=2000, **kw) for s in (0, 1) for t in sets]
        return engine.Group(cfgs, "cpu", None)
    g = group("bn", "out")
    assert g.first is not None and g.first.train.shape == (2, len(d.y_train), 32)
    assert g.first.val.shape == (2, len(d.y_val), 32) and g.first.test.shape == (2, 10000, 32)
    assert group("bn", "all").first is None            # the first layer trains
    assert group("bn", "random").first is not None     # random's entries are a correction to the shared layer
    assert group("bn", precision="bf16").first is None  # autocast would compute it differently
    monkeypatch.setattr(engine, "FIRST_LAYER_CACHE_MB", 1)  # 2 seeds x 14,000 images x 32 floats > 1 MB
    assert group("bn").first is None


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
    stack = Stack.from_models([m], [p])
    # the first layer keeps its initial (the seed's) weight, so its dense part can be shared; its entries correct it
    assert set(stack.entries) == {"blocks.0.op.weight", "blocks.1.op.weight"}
    assert stack.first_layer_frozen and stack.first_has_entries
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


@pytest.mark.parametrize("model,norm,sets", [("mlp", "batchnorm", ("bn", "bn+out", "random", "out", "none")),
                                             ("mlp", "layernorm", ("bn", "random")),
                                             ("mlp", "affine", ("bn", "random")),
                                             ("lenet5", "batchnorm", ("bn", "gamma"))])
def test_seed_blocks_equal_one_block_of_per_model_weights(model, norm, sets, monkeypatch):
    """Where no model trains a layer's weights, each seed's models can run as a block of their own,
    every layer one product with the seed's shared weight (stacked.SEED_BLOCKS; by default on a
    CPU for wide layers only). Forced on, a group trains as it does with one block of per-model
    weights; frozen weights stay bit-identical and random's entries move."""
    from bnonly import stacked
    cfgs = [small(model=model, norm=norm, trainable=t, seed=s, max_epochs=2, subset=2000) for s in (0, 1) for t in sets]
    runs = {}
    for forced in (True, False):
        monkeypatch.setattr(stacked, "SEED_BLOCKS", forced)
        runs[forced] = train(cfgs)
    models = [build(c) for c in cfgs]
    stack = Stack.from_models(models, [plan(m, c) for m, c in zip(models, cfgs)])
    k = len(sets)
    monkeypatch.setattr(stacked, "SEED_BLOCKS", True)
    assert stack.seed_runs([(0, 0, k), (1, k, 2 * k)]) == [(0, 0, k), (1, k, 2 * k)]
    assert stack.seed_runs([(0, 0, 2 * k)]) == [(0, 0, k), (0, k, 2 * k)]  # one input row, two seeds' weights
    monkeypatch.setattr(stacked, "SEED_BLOCKS", False)
    assert stack.seed_runs([(0, 0, k), (1, k, 2 * k)]) is None
    for blocks, one, cfg in zip(runs[True], runs[False], cfgs):
        assert_same_training(blocks, one)
        init = build(cfg)
        p = plan(init, cfg)  # (random's plan sets its BN layers' gamma to 1)
        for (n, w1), w0 in zip(blocks.model.named_parameters(), init.parameters()):
            mask = p.masks[n]
            if mask is False:
                assert torch.equal(w1, w0), (cfg.trainable, n)
            elif isinstance(mask, torch.Tensor):
                assert torch.equal(w1[~mask], w0[~mask]) and not torch.equal(w1[mask], w0[mask]), n


def test_seed_blocks_are_not_used_where_they_do_not_pay(monkeypatch):
    """By default seed blocks serve wide layers on a CPU only, and never a stack that trains weights."""
    from bnonly import stacked
    assert stacked.SEED_BLOCKS is None
    def stack(width, sets=("bn", "random")):
        cfgs = [small(width=width, trainable=t, seed=s) for s in (0, 1) for t in sets]
        models = [build(c) for c in cfgs]
        return Stack.from_models(models, [plan(m, c) for m, c in zip(models, cfgs)])
    shared = [(0, 0, 2), (1, 2, 4)]
    assert stack(784).seed_runs(shared) == shared
    assert stack(400).seed_runs(shared) is None               # narrower: one block of per-model weights
    assert stack(784, ("bn", "all")).seed_runs(shared) is None  # `all` trains the weights
    monkeypatch.setattr(stacked, "SEED_BLOCK_MIN_WEIGHTS", 100)
    assert stack(32).seed_runs(shared) == shared


@pytest.mark.parametrize("model,sets,blocks", [("mlp", ("bn", "out", "none", "random"), True),
                                               ("mlp", ("bn", "out", "none", "random"), False),
                                               ("mlp", ("all", "out"), False),  # a batch per model
                                               ("lenet5", ("out", "bn", "none"), False)])
def test_frozen_trunks_run_without_their_backward_pass_and_train_as_before(model, sets, blocks, monkeypatch):
    """`out` and `none` train nothing before the head: the engine puts them last in their stack
    (engine.stack_order), and where stacked.FROZEN_TRUNKS asks for it (by default wide layers on a
    CPU) they run as a part whose trunk has no backward pass. Forced on, a group trains as it does
    with them in the one part; their trunks stay bit-identical."""
    from bnonly import stacked
    from bnonly.engine import stack_order
    monkeypatch.setattr(stacked, "SEED_BLOCKS", blocks)
    cfgs = [small(model=model, trainable=t, seed=s, max_epochs=2, subset=2000) for s in (0, 1) for t in sets]
    runs = {}
    for forced in (True, False):
        monkeypatch.setattr(stacked, "FROZEN_TRUNKS", forced)
        runs[forced] = train(cfgs)
    ordered = sorted(cfgs, key=stack_order)
    models = [build(c) for c in ordered]
    stack = Stack.from_models(models, [plan(m, c) for m, c in zip(models, ordered)])
    tail = [c.trainable in ("out", "none") for c in ordered]
    assert stack.frozen_from == tail.index(True) and all(tail[stack.frozen_from:])
    F_, M = stack.frozen_from, stack.size
    if "all" in sets:  # every model multiplies its own first layer: x holds a batch per model (Group.batches)
        x, shared = torch.rand(M, 16, 1, 28, 28, generator=torch.Generator().manual_seed(0)), None
    else:
        x = torch.rand(4, 16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        shared = [(0, 0, F_ // 2), (1, F_ // 2, F_), (2, F_, F_ + 2), (3, F_ + 2, M)]  # (rows by seed, as the engine's)
    gamma = stack.params["blocks.0.norm.weight"]
    for forced, connected in ((True, False), (False, True)):
        monkeypatch.setattr(stacked, "FROZEN_TRUNKS", forced)
        logits = stack.forward(x, training=True, shared=shared)
        g, = torch.autograd.grad(logits[F_:].sum(), gamma)
        assert bool(g[F_:].ne(0).any()) == connected  # split: nothing flows back into the tail's trunk
    for on, off, cfg in zip(runs[True], runs[False], cfgs):
        assert_same_training(on, off)
        if cfg.trainable in ("out", "none"):
            init = build(cfg)
            for (n, w1), w0 in zip(on.model.named_parameters(), init.parameters()):
                assert torch.equal(w1, w0) == (cfg.trainable == "none" or not n.startswith("head.")), n


def test_frozen_trunks_split_trains_each_run_as_alone_with_one_augmentation_per_seed(monkeypatch):
    """With `out` sorted after `bn`, a seed's models sit in two runs of the stack; they still read
    one gather and one augmentation per seed (engine.shared_runs), so each run of a group with the
    split forced on trains as it does alone, augmented batches included."""
    from bnonly import stacked
    from bnonly.engine import shared_runs
    assert shared_runs([0, 1, 0, 1]) == ([0, 1], [(0, 0, 1), (1, 1, 2), (0, 2, 3), (1, 3, 4)])
    assert shared_runs([0, 0, 1, 1, 0]) == ([0, 1], [(0, 0, 2), (1, 2, 4), (0, 4, 5)])
    monkeypatch.setattr(stacked, "FROZEN_TRUNKS", True)
    cfgs = [small(trainable=t, seed=s, max_epochs=2, subset=2000, augment=True) for s in (0, 1) for t in ("out", "bn")]
    for cfg, together in zip(cfgs, train(cfgs)):
        assert_same_training(together, train([cfg])[0])


@pytest.mark.parametrize("model", ["mlp", "lenet5"])
def test_evaluation_in_cache_sized_chunks_equals_one_pass(model):
    """On a CPU evaluate() passes cache-sized chunks (stacked.EVAL_FLOATS_CPU; 256 images for three
    LeNet-5s, 1,747 for three 100-wide MLPs): the same losses and accuracies as the whole set at once."""
    from bnonly.engine import evaluate
    cfgs = [small(model=model, width=100, trainable=t, seed=0) for t in ("bn", "all", "out")]
    models = [build(c) for c in cfgs]
    stack = Stack.from_models(models, [plan(m, c) for m, c in zip(models, cfgs)])
    d = load("mnist", 0.2, 0, 3000)
    x, y = d.x_test[:4000], d.y_test[:4000]
    assert stack.eval_chunk(len(y), tuple(x.shape[1:])) == (256 if model == "lenet5" else 1747)
    assert stack.example_floats(tuple(x.shape[1:])) == (16 * 28 * 28 if model == "lenet5" else 100)  # conv: maps
    chunked, whole = evaluate(stack, x, y), evaluate(stack, x, y, chunk=len(y))
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-6, atol=0)
    assert torch.equal(chunked[1], whole[1])


@pytest.mark.parametrize("sets,precision", [("all", "fp32"), ("all-nobn", "fp32"), ("all-nobn", "bf16")])
def test_batched_linear_gives_weight_gradients_in_the_weights_layout_and_trains_as_before(sets, precision, monkeypatch):
    """stacked.BatchedLinear (the `all` stacks' linear layers) hands every trained weight a
    gradient laid out as the weight [k, out, in] (autograd's batched matmul hands it on transposed),
    the same gradients as autograd's, and two seeds trained with it forced on and off train alike,
    under bf16 autocast too. (Without BatchNorm, a layer's bias and scale reach the loss: with it,
    a wrong bias gradient or output scale would go unseen.)"""
    from bnonly import stacked
    cfgs = [small(width=96, trainable=sets, seed=s, precision=precision) for s in (0, 1)]
    models = [build(c) for c in cfgs]
    x = load("mnist", 0.2, 0, 3000).x_train[:64].view(2, 32, -1)
    runs = {}
    for forced in (True, False):
        monkeypatch.setattr(stacked, "BATCHED_LINEAR", forced)
        stack = Stack.from_models(models, [plan(m, c) for m, c in zip(models, cfgs)])
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            loss = stack.forward(x, training=True).float().square().mean()
        names = [n for n in stack.params if n.startswith("blocks.")]
        grads = torch.autograd.grad(loss, [stack.params[n] for n in names])
        assert [g.is_contiguous() for n, g in zip(names, grads) if n.endswith("op.weight")] == [forced] * 2
        assert all(g.dtype == torch.float32 for g in grads)
        runs[forced] = (train(cfgs), grads)
    monkeypatch.setattr(stacked, "BATCHED_LINEAR", None)  # the default: weights of >= 2^13 entries (96 x 96 has 9,216)
    wide = Stack.from_models(models, [plan(m, c) for m, c in zip(models, cfgs)])
    narrow_cfgs = [c.replace(width=64) for c in cfgs]  # 64 x 64 = 4,096 entries
    narrow_models = [build(c) for c in narrow_cfgs]
    narrow = Stack.from_models(narrow_models, [plan(m, c) for m, c in zip(narrow_models, narrow_cfgs)])
    for st, used in ((wide, True), (narrow, False)):
        w = st.params["blocks.1.op.weight"]
        g, = torch.autograd.grad(st.forward(x, training=True).float().square().mean(), [w])
        assert g.is_contiguous() == used
    tol = dict(rtol=1e-5, atol=1e-7) if precision == "fp32" else dict(rtol=1e-2, atol=1e-4)
    for a, b in zip(runs[True][1], runs[False][1]):
        torch.testing.assert_close(a, b, **tol)
    for a, b in zip(runs[True][0], runs[False][0]):
        assert_same_training(a, b)

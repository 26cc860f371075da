"""Frankle et al.'s own setting: CIFAR ResNets and VGG, their preset, their random baseline, the
stack that trains them, augmentation and CIFAR-10's format (generated batches: CIFAR-10 itself is not
available here)."""
import pickle

import numpy as np
import pytest
import torch

from bnonly.engine import resident as tensors
from bnonly.registry import data
from bnonly.config.layers import resolve
from bnonly.engine.loop import train
from bnonly.registry.models import MODELS
from bnonly.registry.nets import build
from bnonly.engine.device import EngineOptions
from bnonly.engine.loop import stack_of
from bnonly.engine.stack import Batch, Rows
from bnonly.engine.functional import FunctionalStack
from bnonly.config.layers import load_sweep
from bnonly.engine.masks import plan

FASHION = data.FASHION_MNIST_DIR.is_dir()
needs_fashion = pytest.mark.skipif(not FASHION, reason="Debian package dataset-fashion-mnist not installed "
                                   "(apt-get install dataset-fashion-mnist)")


def bn_count(model: str, shape=(3, 32, 32)) -> int:
    cfg = resolve("frankle", model=model, trainable="bn")
    return plan(build(cfg, shape), cfg).count(build(cfg, shape))


def test_batchnorm_parameter_counts_are_the_papers():
    # Frankle, Schwab & Morcos: ResNet-14 1,120 and ResNet-110 8,288 BatchNorm parameters (gamma and beta)
    assert bn_count("resnet14") == 1120 and bn_count("resnet110") == 8288
    assert bn_count("resnet14x2") == 2240 and bn_count("resnet14x4") == 4480
    assert bn_count("resnet866") == 64736
    # VGG: 2 x (64 + 128 + 2 x 256 + 4 x 512) = 5,504; VGG-16: 8,448 (OpenLTH's cifar_vgg plans)
    assert bn_count("vgg11") == 5504 and bn_count("vgg16") == 8448
    # OpenLTH's parameter counts (its tests): ResNet-20 272,474, ResNet-110 1,730,714
    for name, n in (("resnet20", 272_474), ("resnet110", 1_730_714)):
        assert sum(p.numel() for p in build(resolve("frankle", model=name), (3, 32, 32)).parameters()) == n
    assert {f"resnet{n}" for n in (14, 20, 32, 56, 110, 218, 434, 866)} | {"vgg11", "vgg16", "resnet56x2"} <= set(MODELS)


def test_random_baseline_is_two_weights_per_output_channel():
    cfg = resolve("frankle", model="resnet14", trainable="random")
    model = build(cfg, (3, 32, 32))
    p = plan(model, cfg)
    assert p.count(model) == 1120
    convs = [(n, op) for n, op, _ in model.units()]
    assert len(convs) == 15
    for n, op in convs:
        m = p.masks[f"{n}.weight"]
        assert m.flatten(1).sum(1).tolist() == [2] * op.out_channels, n
    assert p.masks["head.weight"] is False
    # BatchNorm kept with gamma = 1, beta = 0, frozen
    assert all((norm.weight == 1).all() and (norm.bias == 0).all() for _, _, norm in model.units())


def test_frankle_preset_for_cifar_models():
    c = resolve("frankle", model="resnet56")
    assert (c.lr, c.momentum, c.weight_decay, c.batch_size, c.max_epochs, c.patience) == (0.1, 0.9, 1e-4, 128, 160, 0)
    assert (c.gamma_init, c.hidden_beta, c.augment, c.dataset, c.random_placement) == \
        ("uniform(0,1)", True, True, "cifar10", "per-unit")
    # OpenLTH's milestones 80ep, 120ep: 80 epochs at 0.1, 40 at 0.01, 40 at 0.001 (epochs counted from 1 here)
    assert [c.lr_at(e) for e in (1, 80, 81, 120, 121, 160)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert c.normalize and sum(c.lr_at(e) == pytest.approx(0.1) for e in range(1, 161)) == 80
    # the MLP keeps the frankle preset it had (initialisation only), and explicit values win
    m = resolve("frankle", model="mlp")
    assert (m.lr, m.patience, m.augment, m.dataset, m.normalize) == (0.01, 3, False, "mnist", False)
    # runs from before these fields keep their run_id (LATER_FIELDS), CIFAR-10 ones included
    assert resolve("report", dataset="cifar10", model="lenet5").run_id == "15f5fa6a93271a7c"
    assert resolve("frankle", model="resnet14", lr=0.05, dataset="fashion-mnist").lr == 0.05


def _stack_data(cfgs, shape=(3, 16, 16), batch=8):
    models = [build(c, shape) for c in cfgs]
    x = torch.rand(2, batch, *shape, generator=torch.Generator().manual_seed(0))
    return models, Batch(x, None, Rows([c.seed for c in cfgs]))


def test_chains_and_residual_networks():
    from bnonly.registry.nets import VGG, ResNet, is_chain
    assert is_chain(VGG(11)) and is_chain(build(resolve())) and not is_chain(ResNet(14))
    with pytest.raises(ValueError, match="one of 11, 16"):
        VGG(13)


def test_module_stack_of_one_computes_what_the_module_computes():
    for name in ("resnet14", "vgg11"):
        cfg = resolve("frankle", model=name, trainable="bn")
        (m,), batch = _stack_data([cfg], shape=(3, 32, 32))
        x = batch.x
        batch = Batch(x[:1], None, Rows([0]))
        stack = stack_of([m], [plan(m, cfg)])
        assert isinstance(stack, FunctionalStack)
        m.train()
        torch.testing.assert_close(stack.forward(batch, training=True)[0], m(x[0]), rtol=1e-4, atol=1e-4)
        for n, b in m.named_buffers():
            if not n.endswith("num_batches_tracked"):
                torch.testing.assert_close(stack.buffers[n][0], b, rtol=1e-5, atol=1e-6)
        m.eval()
        torch.testing.assert_close(stack.forward(batch, training=False)[0], m(x[0]), rtol=1e-4, atol=1e-4)


def test_vmap_path_equals_a_call_per_model():
    """The CUDA path (all models in one vmapped call: grouped convolutions) computes what the CPU path does."""
    from dataclasses import replace
    cfgs = [resolve("frankle", model="resnet14", trainable=t, seed=s) for s in (0, 1) for t in ("bn", "all", "random")]
    models, batch = _stack_data(cfgs)
    out = {}
    for vmap in (False, True):
        options = replace(EngineOptions.for_device("cpu"), vmap=vmap)
        stack = stack_of(models, [plan(m, c) for m, c in zip(models, cfgs)], options=options)
        logits = stack.forward(batch, training=True)
        logits.square().sum().backward()
        out[vmap] = (logits.detach(), {n: p.grad for n, p in stack.params.items() if p.requires_grad},
                     dict(stack.buffers), stack.forward(batch, training=False).detach())
    (l0, g0, b0, e0), (l1, g1, b1, e1) = out[False], out[True]
    torch.testing.assert_close(l1, l0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(e1, e0, rtol=1e-4, atol=1e-5)
    assert g1.keys() == g0.keys() and "stem.weight" in g0 and "blocks.2.shortcut.weight" in g0
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-3, atol=1e-5 * float(g0[n].abs().max()))
    for n in b0:
        torch.testing.assert_close(b1[n], b0[n], rtol=1e-5, atol=1e-6)


def test_augment_crops_and_flips_with_the_padding_value():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    fill = torch.tensor([-1.0, -2.0, -3.0])
    a = tensors.augment(x, fill, torch.Generator().manual_seed(0), pad=2)
    b = tensors.augment(x, fill, torch.Generator().manual_seed(0), pad=2)
    assert torch.equal(a, b) and a.shape == x.shape  # a function of the generator
    seen = set()
    for s in range(40):
        y = tensors.augment(x, fill, torch.Generator().manual_seed(s), pad=2)
        for i in range(2):
            padded = torch.nn.functional.pad(x[i] - fill.view(3, 1, 1), (2, 2, 2, 2)) + fill.view(3, 1, 1)
            windows = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                       if torch.equal(y[i], (lambda w: w.flip(2) if f else w)(padded[:, dy:dy + 6, dx:dx + 6]))]
            assert windows, "every output is a window of the padded image, flipped or not"
            seen.add(windows[0])
    assert len(seen) > 20  # offsets and flips vary


def write_cifar(tmp_path, n=200):
    """Generated batches in CIFAR-10's python format (data_batch_1..5, test_batch)."""
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, n)
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        x[:, :1024] = (labels * 25).astype(np.uint8)[:, None]  # the red channel tells the class
        with open(d / name, "wb") as fh:
            pickle.dump({b"data": x, b"labels": labels.tolist()}, fh)
    return tmp_path


def test_cifar_format_normalised_and_trained_with_the_preset(tmp_path):
    root = write_cifar(tmp_path)
    plain = tensors.load("cifar10", 0.1, 0, 0, "cpu", str(root))
    assert 0 <= float(plain.x_train.min()) and float(plain.x_train.max()) <= 1 and plain.fill.abs().max() == 0
    d = tensors.load("cifar10", 0.1, 0, 0, "cpu", str(root), normalize=True)
    assert d.input_shape == (3, 32, 32) and len(d.y_train) == 900
    mean, std = data.NORMALIZE["cifar10"]
    torch.testing.assert_close(d.fill, -torch.tensor(mean) / torch.tensor(std))
    raw = data.raw("cifar10", str(root))
    first = torch.from_numpy(raw.x_test[0]).float() / 255
    torch.testing.assert_close(d.x_test[0], (first - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1))
    cfgs = [resolve("frankle", model="resnet14", trainable=t, max_epochs=2, lr_drop_epochs="2") for t in ("bn", "random")]
    results = train(cfgs, data_dir=str(root))
    for r in results:  # no early stopping: every epoch runs, the last weights are kept
        assert r.epochs_run == 2 and r.best_epoch == 2 and [h["lr"] for h in r.history] == pytest.approx([0.1, 0.01])
        assert r.trainable_params == 1120 and 0 <= r.test_accuracy <= 1


@pytest.mark.parametrize("trainable", ["bn", "random"])
def test_frozen_is_bit_identical_in_a_resnet(tmp_path, trainable):
    root = write_cifar(tmp_path, n=60)
    cfg = resolve("frankle", model="resnet14", trainable=trainable, max_epochs=1, seed=3)
    before = build(cfg, (3, 32, 32))
    p = plan(before, cfg)
    (r,) = train([cfg], data_dir=str(root))
    after = dict(r.model.named_parameters())
    changed = 0
    for name, w0 in before.named_parameters():
        m = p.masks[name]
        if isinstance(m, torch.Tensor):
            assert torch.equal(after[name][~m], w0[~m]), name
            changed += int((after[name][m] != w0[m]).sum())
        elif not m:
            assert torch.equal(after[name], w0), name
        else:
            changed += int((after[name] != w0).sum())
    assert changed > 0


def test_resnet_group_equals_runs_alone(tmp_path):
    """Seeds interleaved, augmentation on, early stopping on: each run of the stack ends as it would alone."""
    root = str(write_cifar(tmp_path, n=80))
    cfgs = [resolve("frankle", model="resnet14", max_epochs=2, patience=1, trainable=t, seed=s)
            for t in ("bn", "all", "random") for s in (1, 0)]
    together = train(cfgs, data_dir=root)
    for cfg, rt in zip(cfgs, together):
        (alone,) = train([cfg], data_dir=root)
        assert rt.config == cfg and rt.epochs_run == alone.epochs_run
        for ht, ha in zip(rt.history, alone.history):
            assert ht["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-4)
            assert ht["val_loss"] == pytest.approx(ha["val_loss"], rel=1e-4)
        assert rt.test_accuracy == pytest.approx(alone.test_accuracy, abs=3e-3)


@needs_fashion
def test_resnet14_bn_only_trains_above_chance_on_fashion_mnist():
    """ResNet-14, BatchNorm only, 2,000 Fashion-MNIST images (1,800 train), Frankle's optimiser, 3 epochs."""
    cfgs = [resolve("frankle", model="resnet14", dataset="fashion-mnist", subset=2000, max_epochs=3, trainable=t)
            for t in ("bn", "none")]
    bn, none = train(cfgs)
    assert bn.trainable_params == 1120 and none.trainable_params == 0
    assert none.test_accuracy < 0.25            # the random network, BatchNorm statistics estimated
    assert bn.test_accuracy > 0.25               # chance is 10% (measured: 33.7%; none 8.0%)
    assert bn.test_accuracy > none.test_accuracy + 0.1


def test_frankle_study_config():
    from bnonly.config.layers import SweepConfig
    # a sweep that names no data set takes the preset's: CIFAR-10 for Frankle's models
    assert {c.dataset for c in SweepConfig(preset="frankle", models=["resnet20", "mlp"]).runs()} == {"cifar10", "mnist"}
    s = load_sweep("frankle")
    runs = s.runs()
    assert len(runs) == 4 * 4 * 3
    assert {r.model for r in runs} == {"resnet14", "resnet32", "resnet56", "resnet110"}
    assert {r.trainable for r in runs} == {"all", "bn", "bn+out", "random"}
    assert all(r.lr == 0.1 and r.max_epochs == 160 and r.augment and r.dataset == "cifar10" for r in runs)


def frankle_runs(gaps: dict, noise=(0.0, 0.01, -0.01), **kw):
    """Hand-made finished runs: per ResNet, bn at 0.5 + seed noise, random at bn - gap (paired by seed)."""
    runs = []
    for m, gap in gaps.items():
        for t in ("all", "bn", "random"):
            for s, e in enumerate(noise):
                c = resolve("frankle", model=m, trainable=t, seed=s, **kw)
                acc = {"all": 0.9, "bn": 0.5, "random": 0.5 - gap}[t] + e + (0.02 * s if t == "random" else 0.0)
                runs.append({"run_id": c.run_id, "config": c.__dict__, "status": "finished", "model": m, "trainable": t,
                             "seed": s, "width": c.width, "depth": c.depth, "test_accuracy": acc,
                             "epochs_run": c.max_epochs, "trainable_params": 1120, "seconds": 1.0})
    return runs


def test_frankle_claims_verdicts_for_chosen_accuracies():
    from bnonly.study.frankle import frankle_claims

    def verdicts(runs):
        return [c["verdict"] for c in frankle_claims(runs)]
    # per seed, bn - random = gap, gap - 2, gap - 4 points: (gap - 2) ± 5.0 points (t interval, n = 3)
    assert verdicts(frankle_runs({"resnet14": 0.2, "resnet110": 0.3})) == ["held", "held"]
    # F1 is judged at ResNet-110 and deeper ("sufficiently deep"); shallower ones are listed, not judged
    assert verdicts(frankle_runs({"resnet14": 0.3, "resnet110": 0.02}))[0] == "did not hold"   # 0 ± 5 at ResNet-110
    assert verdicts(frankle_runs({"resnet14": 0.3, "resnet110": 0.12}))[0] == "inconclusive"   # 10 ± 5 straddles 10
    deep = frankle_claims(frankle_runs({"resnet14": 0.02, "resnet110": 0.3}))[0]
    assert deep["verdict"] == "held" and "shallower than ResNet-110, not judged: resnet14: +0.0 ± 5.0 points" in deep["measured"]
    assert deep["label"] == "held at ResNet-110 of 110–866"
    assert verdicts(frankle_runs({"resnet14": 0.3, "resnet110": 0.2}))[1] == "did not hold"    # the gap shrinks
    # every deep ResNet must hold: one refuted among them refutes F1
    assert verdicts(frankle_runs({"resnet110": 0.3, "resnet218": 0.02}))[0] == "did not hold"
    # a store of ResNets shallower than 110 layers cannot test a claim about sufficiently deep ones
    shallow = frankle_claims(frankle_runs({"resnet14": 0.3, "resnet56": 0.3}))[0]
    assert shallow["verdict"] == "not testable at this depth" and "resnet56: +28.0 ± 5.0 points" in shallow["measured"]
    # a verdict rests on Frankle's protocol: an epoch cap or another data set is "not testable at this budget"
    capped = frankle_claims(frankle_runs({"resnet14": 0.2, "resnet110": 0.3}, max_epochs=10))
    assert [c["verdict"] for c in capped] == ["not testable at this budget"] * 2
    assert "stopped by max_epochs = 10" in capped[0]["measured"] and "rule gives 'held'" in capped[0]["measured"]
    other = frankle_claims(frankle_runs({"resnet14": 0.2, "resnet110": 0.3}, dataset="fashion-mnist"))
    assert other[0]["verdict"] == "not testable at this budget" and "dataset" in other[0]["measured"]
    for off in ({"lr_drop_factor": 0.5}, {"val_fraction": 0.5}, {"random_placement": "scattered"}, {"normalize": False}):
        assert frankle_claims(frankle_runs({"resnet110": 0.2}, **off))[0]["verdict"] == "not testable at this budget", off
    assert verdicts(frankle_runs({"resnet110": 0.2})) == ["held", "not measured"]


def test_report_puts_measured_next_to_published(tmp_path):
    from bnonly.reports.build import write_report
    # a second norm in the same study is another setting: reported apart, never pooled into the cells
    write_report(tmp_path, runs=frankle_runs({"resnet14": 0.2, "resnet110": 0.3})
                 + frankle_runs({"resnet14": 0.0}, norm="layernorm"))
    md = (tmp_path / "report.md").read_text()
    assert "## Frankle et al.'s CIFAR setting" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| resnet110 "))
    assert "1,120" in row and "50.0 ± " in row and "+28.0 ± 5.0" in row and "65.2" in row   # reproduction: 65.19%
    assert "82.0" not in row and "tensorflow/models#9174" in md and "placed at ResNet-866" in md
    assert "others_frozen" in md and "bnonly's hypothesis" in md


def test_module_stack_reestimates_statistics_as_the_plain_average():
    """Known answer: BatchNorm with momentum=None keeps the plain average of the batches' statistics."""
    import copy
    cfg = resolve("frankle", model="resnet14", trainable="bn")
    m = build(cfg, (3, 16, 16))
    batches = torch.rand(3, 16, 3, 16, 16, generator=torch.Generator().manual_seed(1)).unbind(0)
    ref = copy.deepcopy(m).train()
    for mod in ref.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None
            mod.reset_running_stats()
    with torch.no_grad():
        for xb in batches:
            ref(xb)
    stack = stack_of([m], [plan(m, cfg)])
    stack.reestimate_statistics(batches, Rows([0]))
    for n, b in ref.named_buffers():
        if not n.endswith("num_batches_tracked"):
            torch.testing.assert_close(stack.buffers[n][0], b, rtol=1e-5, atol=1e-6)
    assert all(mod.momentum == 0.1 for mod in stack.momentum_holders())  # restored

"""Normalization kinds (batchnorm, layernorm, affine) and the random baseline's allocation."""
import pytest
import torch

from bnonly.errors import ConfigError
from bnonly.config.layers import resolve
from bnonly.registry.nets import build
from bnonly.engine.stack import Batch, Rows
from bnonly.engine.fused import FusedStack
from bnonly.config.layers import load_sweep
from bnonly.engine.masks import plan


def counts(preset="report", **kw):
    cfg = resolve(preset, **{"model": "mlp", "width": 784, "depth": 4, **kw})
    m = build(cfg)
    p = plan(m, cfg)
    return p.count(m), p.by_layer(m)


@pytest.mark.parametrize("norm", ["batchnorm", "layernorm", "affine"])
@pytest.mark.parametrize("preset,per_layer", [("report", 784), ("frankle", 2 * 784)])
def test_bn_and_random_counts_under_each_norm_784x4(norm, preset, per_layer):
    assert counts(preset, norm=norm, trainable="bn")[0] == 4 * per_layer
    assert counts(preset, norm=norm, trainable="bn+out")[0] == 4 * per_layer + 7850
    for alloc, expected in [("even", [per_layer] * 4), ("proportional", [per_layer] * 4),
                            ("first", [4 * per_layer, 0, 0, 0]), ("last", [0, 0, 0, 4 * per_layer])]:
        total, layers = counts(preset, norm=norm, trainable="random", random_allocation=alloc)
        assert total == 4 * per_layer
        assert [layers[f"blocks.{i}.op"] for i in range(4)] == expected, alloc


def test_proportional_allocation_follows_layer_sizes():
    # 784 -> 100 -> 100 -> 100: weights 78,400 / 10,000 / 10,000; 300 entries (gamma only)
    cfg = resolve(width=100, depth=3, trainable="random", random_allocation="proportional")
    m = build(cfg)
    layers = plan(m, cfg).by_layer(m)
    got = [layers[f"blocks.{i}.op"] for i in range(3)]
    assert sum(got) == 300 and got[0] == 239 and sorted(got[1:]) == [30, 31]


@pytest.mark.parametrize("alloc,layer", [("first", 0), ("last", 2)])
def test_first_last_put_every_entry_in_that_layer(alloc, layer):
    cfg = resolve("frankle", width=64, depth=3, trainable="random", random_allocation=alloc)
    m = build(cfg)
    p = plan(m, cfg)
    for i in range(3):
        n = int(p.masks[f"blocks.{i}.op.weight"].sum())
        assert n == (3 * 128 if i == layer else 0)


def test_impossible_allocation_is_a_clear_error():
    cfg = resolve("frankle", width=10, depth=8, trainable="random", random_allocation="last")  # 160 > 100 weights
    with pytest.raises(ConfigError, match="random_allocation='last' asks hidden layer 7 for 160"):
        plan(build(cfg), cfg)


def test_affine_has_no_normalization():
    """With BatchNorm an example's output depends on the rest of its batch; with affine it does not."""
    x = torch.rand(32, 1, 28, 28)
    other = torch.rand(32, 1, 28, 28) * 3
    for norm, depends in (("batchnorm", True), ("layernorm", False), ("affine", False)):
        m = build(resolve(width=16, depth=2, norm=norm, trainable="bn")).train()
        a = m(x)[:8]
        b = m(torch.cat([x[:8], other[8:]]))[:8]
        assert (not torch.allclose(a, b, atol=1e-5)) == depends, norm


@pytest.mark.parametrize("model,norm", [("mlp", "layernorm"), ("mlp", "affine"), ("lenet5", "layernorm"),
                                        ("lenet5", "affine")])
def test_stack_matches_module_for_each_norm(model, norm):
    cfg = resolve("frankle", model=model, width=32, depth=2, norm=norm, trainable="bn+out")
    m = build(cfg).train()
    stack = FusedStack.from_models([m], [plan(m, cfg)])
    x = torch.rand(16, 1, 28, 28)
    torch.testing.assert_close(stack.forward(Batch(x[None], None, Rows([0])), training=True)[0], m(x), rtol=1e-4, atol=1e-4)


def test_sweep_grid_keys_norms_and_allocations():
    s = load_sweep("quick", ['norms=["batchnorm","affine","layernorm","none"]',
                             'random_allocations=["even","first","last","proportional"]',
                             'models=["mlp"]', "widths=[100]", "depths=[4]", "seeds=[0]",
                             'trainable=["all","all-nobn","bn","bn+out","random","out","none"]'])
    runs = s.runs()
    # per normalizing kind: all, bn, bn+out, out, none + random x 4 allocations; plus all-nobn;
    # with norm 'none' only out and none (all is all-nobn there)
    assert len(runs) == 3 * 9 + 1 + 2
    assert {c.random_allocation for c in runs if c.trainable != "random"} == {"even"}


def test_width_and_depth_beyond_the_report_grid():
    cfg = resolve(width=2048, depth=24, trainable="random")
    m = build(cfg)
    p = plan(m, cfg)
    assert p.count(m) == 2048 * 24 and len(m.blocks) == 24
    assert sum(q.numel() for q in m.parameters()) == 784 * 2048 + 23 * 2048 ** 2 + 2048 * 24 + 2048 * 10 + 10

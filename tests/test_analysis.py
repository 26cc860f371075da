"""What the affine parameters learn: dead units, ablation, the analysis in the report."""
import json

import torch

from bnonly.analysis import KS, ablation, dead_fraction
from bnonly.cli import main
from bnonly.config import resolve
from bnonly.data import load
from bnonly.engine import evaluate, train
from bnonly.models import build
from bnonly.stacked import Stack
from bnonly.trainable import plan


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
    x, y = d.x_test[:500], d.y_test[:500]
    smallest, rnd = ablation(r.model, cfg, x, y)
    _, acc = evaluate(Stack.from_models([r.model], [plan(build(cfg), cfg)]), x, y)
    assert KS[0] == 0 and KS[-1] == 100
    assert smallest[0] == float(acc[0]) == rnd[0]                     # k = 0: the model itself
    constant = int(r.model.head.bias.argmax())                         # k = 100: logits = head bias
    assert smallest[-1] == rnd[-1] == float((y == constant).double().mean())


def test_analyze_and_report_on_a_small_sweep(tmp_path, capsys):
    out = tmp_path / "a"
    base = ["--set", "widths=[16]", "--set", "depths=[1,2]", "--set", "seeds=[0,1]", "--set", "subset=2000",
            "--set", "max_epochs=2", "--set", 'models=["mlp"]', "--set", 'trainable=["bn","bn+out","all","random"]',
            "--set", "preset=frankle"]
    assert main(["sweep", "quick", "--out", str(out)] + base) == 0
    capsys.readouterr()
    assert main(["analyze", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "12 runs analyzed" in printed and "disables 25-33%" in printed  # random is not analyzed
    assert main(["report", str(out)]) == 0
    for f in ("gamma_hist_mlp_w16_d2.png", "gamma_hist_mlp_w16_d2.svg", "ablation_mlp_w16_d1.png", "report.json"):
        assert (out / f).stat().st_size > 0, f
    doc = json.loads((out / "report.json").read_text())
    assert {"claims", "claims_by_dataset", "mlp_table", "lenet_table", "sections", "gamma_analysis"} <= set(doc)
    assert len(doc["gamma_analysis"]["rows"]) == 2 * 3 and len(doc["gamma_analysis"]["runs"]) == 12
    assert "## What the affine parameters learn" in (out / "report.md").read_text()

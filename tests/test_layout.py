"""The layout's promises: no import cycles (imports inside functions counted), no private names
used across modules, and registries that every module reads (an unknown kind raises)."""
import ast
from pathlib import Path

import pytest
import torch
from torch import nn

from bnonly import norms, sets
from bnonly.config import ConfigError, resolve
from bnonly.models import MODELS, arch_name, build
from bnonly.stack_chain import ChainStack
from bnonly.trainable import parts, plan

PKG = Path(__file__).resolve().parents[1] / "src" / "bnonly"


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported bnonly module, names) for every relative import anywhere in the file, functions
    included; only `if TYPE_CHECKING:` imports (never executed) are left out."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:  # from .x import a, b
                out.append((node.module.split(".")[0], [a.name for a in node.names]))
            else:            # from . import x, y
                out += [(a.name, []) for a in node.names]
    return out


def test_no_import_cycles_counting_imports_inside_functions():
    modules = {p.stem for p in PKG.glob("*.py")}
    graph = {p.stem: {m for m, _ in _imports(p) if m in modules and m != p.stem} for p in PKG.glob("*.py")}
    graph["__init__"] = set()  # the package namespace imports its modules; none imports it back
    state = {}

    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path + [m, n]))
            if n not in state:
                visit(n, path + [m])
        state[m] = "done"
    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert "reporting" not in graph["questions"] | graph["analysis"] | graph["analysis_report"]
    assert "cli" not in graph["api"]  # the command line calls the API, never the reverse
    assert "sweep" not in graph["cluster"] and "cluster" not in graph["groups"]


def test_modules_of_one_concern_none_over_450_lines_and_three_benchmark_scripts():
    sizes = {p.name: len(p.read_text().splitlines()) for p in PKG.glob("*.py")}
    assert max(sizes.values()) <= 450, {n: k for n, k in sizes.items() if k > 450}
    scripts = [p.name for p in (PKG.parents[1] / "benchmarks").glob("*.py") if "__main__" in p.read_text()]
    assert sorted(scripts) == ["false_refutation.py", "op_costs.py", "speed.py"], scripts


def test_device_rules_are_options_not_module_switches():
    """What depends on the device is one EngineOptions field; no module holds a switch (an upper-case
    name bound to True, False or None) that a test would have to monkeypatch."""
    switches = []
    for p in PKG.glob("*.py"):
        for node in ast.parse(p.read_text()).body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant) \
                    and any(node.value.value is v for v in (True, False, None)):
                names = [t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                         if isinstance(t, ast.Name)]
                switches += [f"{p.name}: {n}" for n in names if n.isupper()]
    assert switches == []


def test_no_private_names_across_modules():
    offenders = []
    for p in PKG.glob("*.py"):
        for module, names in _imports(p):
            offenders += [f"{p.name}: {module}.{n}" for n in names if n.startswith("_") and n != "__version__"]
        for node in ast.walk(ast.parse(p.read_text())):  # module._name attribute access on a bnonly module
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr.startswith("_") \
                    and not node.attr.startswith("__") and node.value.id in {q.stem for q in PKG.glob("*.py")}:
                offenders.append(f"{p.name}: {node.value.id}.{node.attr}")
    assert offenders == []


@pytest.mark.parametrize("name", sets.NAMES)
def test_every_set_is_one_registry_entry(name):
    """Each set: help, colour, and a plan whose trained parameters are exactly its parts."""
    s = sets.SETS[name]
    assert s.help and s.color.startswith("#")
    for model_name in ("mlp", "resnet14"):  # a chain of blocks, and a residual network
        cfg = resolve("frankle", model=model_name, width=8, depth=2, trainable=name)
        model = build(cfg, (3, 8, 8))
        p, part = plan(model, cfg), parts(model)
        assert sum(v == "gamma" for v in part.values()) == (0 if s.without_norm else 2 if model_name == "mlp" else 15)
        for n, _ in model.named_parameters():
            m = p.masks[n]
            if s.random_entries:
                assert (isinstance(m, torch.Tensor) and part[n] == "hidden") or m is False
            else:
                assert m == (part[n] in s.parts), n
        assert s.trains_trunk == any(part[n] != "head" and (m is True or isinstance(m, torch.Tensor))
                                     for n, m in p.masks.items())
    if s.needs_norm:
        with pytest.raises(ConfigError, match="needs normalization"):
            resolve("frankle", trainable=name, norm="none")


def test_registry_order_and_colours_are_the_reports():
    assert sets.ordered(["none", "bn", "zzz", "all"]) == ["all", "bn", "none", "zzz"]
    assert sets.color("zzz") == "black" and len({s.color for s in sets.SETS.values()}) == len(sets.SETS)


def test_unknown_norm_layer_raises_in_the_batched_engine():
    cfg = resolve("frankle", width=8, depth=2, trainable="bn")
    model = build(cfg)
    assert [norms.kind_of(b.norm).name for b in model.blocks] == ["batchnorm", "batchnorm"]
    model.blocks[1].norm = nn.InstanceNorm1d(8, affine=True)  # a kind bnonly does not know
    with pytest.raises(TypeError, match="InstanceNorm1d is not a normalization kind"):
        ChainStack.from_models([model], [plan(build(cfg), cfg)])
    with pytest.raises(ValueError, match="unknown norm"):
        norms.norm_layer("groupnorm", 8, False, True, 0.1, 1e-5)


@pytest.mark.parametrize("kind", [k for k in norms.NAMES if k != "none"])
def test_every_norm_kind_builds_and_is_recognised(kind):
    layer = norms.norm_layer(kind, 6, conv=False, hidden_beta=False, momentum=0.1, eps=1e-5)
    assert norms.kind_of(layer).name == kind and layer.bias is None and layer.weight.shape == (6,)


def test_one_name_per_architecture():
    cfg = resolve(width=100, depth=2)
    assert arch_name(cfg) == arch_name(cfg.__dict__) == "mlp_w100_d2"
    assert arch_name({"model": "lenet5", "width": 784, "depth": 4}) == "lenet5"
    assert {"mlp", "lenet5", "resnet14", "vgg16"} <= set(MODELS) and MODELS["mlp"].sized and not MODELS["lenet5"].sized
    assert arch_name({"model": "resnet56x2", "width": 784, "depth": 4}) == "resnet56x2"

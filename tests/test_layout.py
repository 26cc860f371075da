"""The layout's promises: subpackages by role in one-way layers (no import goes up a layer; imports
inside functions counted), no import cycles, no private names used across modules, and registries
that every module reads (an unknown kind raises)."""
import ast
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from bnonly.registry import norms, sets
from bnonly.errors import ConfigError
from bnonly.config.layers import resolve
from bnonly.registry.models import MODELS, arch_name
from bnonly.registry.nets import build
from bnonly.engine.fused import FusedStack
from bnonly.engine.masks import parts, plan

PKG = Path(__file__).resolve().parents[1] / "src" / "bnonly"
# The layers, bottom first: a module may import its own layer and those below it, never one above.
LAYERS = (("errors", "files", "version"), ("registry",), ("config",), ("store",), ("engine",),
          ("sweeps", "study"), ("reports",), ("api",), ("cli", "__main__", "__init__"))
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def modules() -> dict[str, Path]:
    """'engine.loop' -> its file, for every module of the package (packages' __init__ as their name)."""
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)] = p
    return out


def package_of(name: str, is_package: bool) -> str:
    """The package a module's relative imports resolve against: 'bnonly.engine' for engine.loop."""
    if name == "__init__":
        return "bnonly"
    parts = name.split(".")
    return ".".join(["bnonly", *(parts if is_package else parts[:-1])])


def source_imports(name: str, source: str, is_package: bool = False) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """Every import of a bnonly module in a module's source, in any form, functions included: (the
    module imported, the names taken from it), and the dynamic imports (importlib's import_module,
    __import__) the layout refuses. Forms: `import bnonly.x.y [as z]`, `from bnonly.x import y`,
    `from .x import y`, `from . import x`, `from .. import x` (resolved by importlib.util.resolve_name).
    Only `if TYPE_CHECKING:` imports (never executed) are left out."""
    known = set(modules())
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    package = package_of(name, is_package)

    def inside(full: str) -> str | None:  # 'bnonly.engine.loop' -> 'engine.loop'; 'bnonly' -> '__init__'
        if full == "bnonly":
            return "__init__"
        return full[len("bnonly."):] if full.startswith("bnonly.") else None
    out, dynamic = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(target, []) for a in node.names if (target := inside(a.name)) is not None]
        elif isinstance(node, ast.ImportFrom):
            full = (importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level
                    else node.module)
            target = inside(full)
            if target is None:
                continue
            prefix = "" if target == "__init__" else target + "."
            submodules = [a.name for a in node.names if f"{prefix}{a.name}" in known]
            names = [a.name for a in node.names if a.name not in submodules]
            out += [(target, names)] if names else []
            out += [(f"{prefix}{n}", []) for n in submodules]
        elif isinstance(node, ast.Call):
            f = node.func
            called = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if called in ("import_module", "__import__"):
                dynamic.append(f"{name}: {called}() at line {node.lineno}")
    return out, dynamic


def imports(name: str, path: Path) -> list[tuple[str, list[str]]]:
    return source_imports(name, path.read_text(), path.name == "__init__.py")[0]


def graph(sources: dict[str, str] | None = None) -> dict[str, set[str]]:
    """module -> the bnonly modules it imports; `sources` replaces some modules' text (the self-tests)."""
    sources = sources or {}
    out = {}
    for m, p in modules().items():
        found, _ = source_imports(m, sources.get(m) or p.read_text(), p.name == "__init__.py")
        out[m] = {t for t, _ in found if t != m}
    return out


def layer_errors(g: dict[str, set[str]]) -> list[str]:
    """Every import that goes up a layer (the package's face, __init__, imports lazily: it is the top)."""
    return [f"{m} imports {t}" for m, ts in g.items() for t in ts
            if LEVEL[t.split(".")[0]] > LEVEL[m.split(".")[0]]]


def cycle(g: dict[str, set[str]]) -> list[str] | None:
    state = {}

    def visit(m, path):
        state[m] = "open"
        for n in sorted(g.get(m, ())):
            if state.get(n) == "open":
                return path + [m, n]
            if n not in state and (found := visit(n, path + [m])):
                return found
        state[m] = "done"
    return next((c for m in sorted(g) if m not in state and (c := visit(m, []))), None)


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower():
    g = graph()
    assert all(m.split(".")[0] in LEVEL for m in g), sorted(m for m in g if m.split(".")[0] not in LEVEL)
    assert layer_errors(g) == []
    assert "study" not in {t.split(".")[0] for m, ts in g.items() if m.startswith("sweeps") for t in ts}
    assert "sweeps" not in {t.split(".")[0] for m, ts in g.items() if m.startswith("study") for t in ts}


def test_the_graph_sees_every_import_form_in_the_package():
    """Edges the old parser missed: cli -> api (`from . import api`), cli -> files, store -> files."""
    g = graph()
    assert {"api", "files"} <= g["cli"] and "files" in g["store"], (g["cli"], g["store"])


def test_no_dynamic_imports_in_src():
    found = [d for m, p in modules().items() for d in source_imports(m, p.read_text(), p.name == "__init__.py")[1]]
    assert found == []


def injected(module: str, line: str) -> dict[str, set[str]]:
    """The graph with `line` added to the top of module's source text."""
    return graph({module: line + "\n" + modules()[module].read_text()})


@pytest.mark.parametrize("module,line,error", [
    ("errors", "from . import cli", "errors imports cli"),
    ("engine.loop", "from bnonly.reports.build import write_report", "engine.loop imports reports.build"),
    ("engine.loop", "import bnonly.reports.build", "engine.loop imports reports.build"),
    ("engine.loop", "from .. import api", "engine.loop imports api"),
    ("engine.loop", "from ..reports import build", "engine.loop imports reports.build"),
    ("store", "import bnonly.api as api", "store imports api"),
])
def test_the_layer_check_fails_on_every_form_of_an_upward_import(module, line, error):
    assert layer_errors(graph()) == []
    assert error in layer_errors(injected(module, line))


def test_the_checks_fail_on_a_cycle_and_on_a_dynamic_import():
    cyclic = injected("files", "from .store import Store")  # store imports files already
    assert cycle(cyclic) is not None and cycle(graph()) is None
    for line in ('importlib.import_module("bnonly.api")', '__import__("bnonly.api")'):
        _, dynamic = source_imports("engine.loop", line + "\n")
        assert dynamic and "engine.loop" in dynamic[0]
    # a function-level import is seen too
    inner = "def f():\n    from ..reports import figures\n    return figures\n"
    assert "engine.loop imports reports.figures" in layer_errors(injected("engine.loop", inner))


def test_modules_of_one_concern_none_over_450_lines_and_three_benchmark_scripts():
    sizes = {m: len(p.read_text().splitlines()) for m, p in modules().items()}
    assert max(sizes.values()) <= 450, {n: k for n, k in sizes.items() if k > 450}
    scripts = [p.name for p in (PKG.parents[1] / "benchmarks").glob("*.py") if "__main__" in p.read_text()]
    assert sorted(scripts) == ["error_rates.py", "op_costs.py", "speed.py"], scripts


def test_device_rules_are_options_not_module_switches():
    """What depends on the device is one EngineOptions field; no module holds a switch (an upper-case
    name bound to True, False or None) that a test would have to monkeypatch."""
    switches = []
    for p in PKG.rglob("*.py"):
        for node in ast.parse(p.read_text()).body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant) \
                    and any(node.value.value is v for v in (True, False, None)):
                names = [t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                         if isinstance(t, ast.Name)]
                switches += [f"{p.name}: {n}" for n in names if n.isupper()]
    assert switches == []


def test_no_private_names_across_modules():
    offenders = []
    stems = {m.split(".")[-1] for m in modules()}
    for m, p in modules().items():
        for module, names in imports(m, p):
            offenders += [f"{m}: {module}.{n}" for n in names if n.startswith("_") and n != "__version__"]
        for node in ast.walk(ast.parse(p.read_text())):  # module._name attribute access on a bnonly module
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr.startswith("_") \
                    and not node.attr.startswith("__") and node.value.id in stems:
                offenders.append(f"{m}: {node.value.id}.{node.attr}")
    assert offenders == []


@pytest.mark.parametrize("name", list(sets.SETS))
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
        FusedStack.from_models([model], [plan(build(cfg), cfg)])
    with pytest.raises(ValueError, match="unknown norm"):
        norms.norm_layer("groupnorm", 8, False, True, 0.1, 1e-5)


@pytest.mark.parametrize("kind", [k for k in norms.NORMS if k != "none"])
def test_every_norm_kind_builds_and_is_recognised(kind):
    layer = norms.norm_layer(kind, 6, conv=False, hidden_beta=False, momentum=0.1, eps=1e-5)
    assert norms.kind_of(layer).name == kind and layer.bias is None and layer.weight.shape == (6,)


def test_one_name_per_architecture():
    cfg = resolve(width=100, depth=2)
    assert arch_name(cfg) == arch_name(cfg.__dict__) == "mlp_w100_d2"
    assert arch_name({"model": "lenet5", "width": 784, "depth": 4}) == "lenet5"
    assert {"mlp", "lenet5", "resnet14", "vgg16"} <= set(MODELS) and MODELS["mlp"].sized and not MODELS["lenet5"].sized
    assert arch_name({"model": "resnet56x2", "width": 784, "depth": 4}) == "resnet56x2"


def test_help_and_usage_errors_load_no_torch():
    """`bnonly --help` and a usage error answer from the configuration layer alone."""
    import subprocess
    import sys
    code = ("import sys, bnonly.cli as c\n"
            "for argv in (['--help'], ['sweep', '--help'], ['train', '--width', 'x']):\n"
            "    try: c.main(argv)\n"
            "    except SystemExit: pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr

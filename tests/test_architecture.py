"""The package's import graph, read from the code (ast, function-level imports included): no
import cycle, no use of another unit's private names, and every import allowed by the layer table.

A *unit* is a top-level module (``score_sde/sde.py`` -> ``sde``) or subpackage
(``score_sde/sampling/`` -> ``sampling``). Adding a module: put its unit name in the group of
``ALLOWED`` it belongs to (a new SDE family next to ``sde``, a new sampler family next to
``sampling``, a helper with no package imports next to ``utils``), and the tests check the rest.
"""
import ast
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "score_sde"

# ------------------------------------------------------------------------------------------------
# the allowed dependencies, in one place: unit -> the units it may import (arrows point down)
# ------------------------------------------------------------------------------------------------
#: no package imports but each other: helpers, the atomic writer, file writers, quantisation
FOUNDATION = {"utils", "safe_pickle", "quantization", "io"}
#: the forward SDEs and their schedules
SDE_LAYER = {"sde", "schedules"}
#: the math on top of an SDE: exact scores, losses, solvers, likelihoods, networks
CORE = {"analytic", "losses", "sampling", "conditional", "likelihood", "models"}
#: the application layer and the two front ends that stand on it
APPLICATION = {"experiment", "controllable", "compare"}
FRONT_ENDS = {"cli", "demo"}

ALLOWED = {
    "utils": set(),
    "safe_pickle": set(),                     # a restricted unpickler: no package imports
    "quantization": set(),
    "io": {"utils"},
    "sde": FOUNDATION,
    "schedules": FOUNDATION | {"sde"},
    "analytic": FOUNDATION | SDE_LAYER,
    "losses": FOUNDATION | SDE_LAYER,
    "sampling": FOUNDATION | SDE_LAYER,       # solvers: no networks, training, data or CLI code
    "conditional": FOUNDATION | SDE_LAYER | {"sampling"},
    "likelihood": FOUNDATION | SDE_LAYER,
    "models": {"utils"} | SDE_LAYER,          # networks: the SDE layer and utilities only
    "data": FOUNDATION - {"io"},              # data imports only the utilities (and quantisation)
    "config": FOUNDATION | SDE_LAYER | CORE | {"data"},
    "training": FOUNDATION | SDE_LAYER | CORE | {"data"},
    "evaluation": FOUNDATION | SDE_LAYER | CORE | {"data"},
    "interop": FOUNDATION | SDE_LAYER | CORE | {"config", "training"},
    "builders": {"config"},                   # deprecated alias of config
    "experiment": FOUNDATION | SDE_LAYER | CORE | {"data", "config", "training", "evaluation", "interop"},
    "classifier": FOUNDATION | SDE_LAYER | {"models"},   # the noise-conditional classifier for guidance
    "controllable": FOUNDATION | SDE_LAYER | CORE | {"data", "config", "training", "evaluation", "experiment",
                                                     "classifier"},
    "compare": FOUNDATION | SDE_LAYER | CORE | {"data", "config", "evaluation", "experiment"},
    "demo": FOUNDATION | APPLICATION | {"config"},
    "cli": FOUNDATION | APPLICATION | {"config", "demo"},
    "__main__": {"cli"},
    "__init__": None,                         # the package facade re-exports anything
}
#: what solvers must never import, whatever the table says
SOLVER_FORBIDDEN = {"models", "training", "data", "cli", "demo", "experiment", "config", "evaluation"}


# ------------------------------------------------------------------------------------------------
# reading the graph
# ------------------------------------------------------------------------------------------------
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _package(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]


def _imports_of_node(node, package):
    """``(target module, imported name or None, line)`` for the package imports of one import node."""
    if isinstance(node, ast.Import):
        for a in node.names:
            if a.name.split(".")[0] == "score_sde":
                yield a.name, None, node.lineno
        return
    if node.level:
        base = package.split(".")
        base = ".".join(base[:len(base) - (node.level - 1)])
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module or ""
    if base.split(".")[0] != "score_sde":
        return
    for a in node.names:
        sub = f"{base}.{a.name}"
        yield (sub, None, node.lineno) if sub in MODULES else (base, a.name, node.lineno)


def _tree(module: str):
    path = MODULES[module]
    return ast.parse(path.read_text(), str(path))


def _imports(module: str):
    """Every import of the package in ``module``, at any depth (function-level imports too)."""
    for node in ast.walk(_tree(module)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield from _imports_of_node(node, _package(module))


def _private_attribute_uses(module: str):
    """``alias._name`` where ``alias`` is bound to a package module by an import in ``module``."""
    tree = _tree(module)
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "score_sde" and a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            for (target, name, _), a in zip(_imports_of_node(node, _package(module)), node.names):
                if name is None:                 # a module bound to a name
                    aliases[a.asname or a.name] = target
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            yield aliases[node.value.id], node.attr, node.lineno


EDGES = {m: list(_imports(m)) for m in MODULES}


# ------------------------------------------------------------------------------------------------
# the checks
# ------------------------------------------------------------------------------------------------
def test_every_unit_is_placed_in_the_table():
    unknown = sorted({unit(m) for m in MODULES} - set(ALLOWED))
    assert not unknown, (f"modules {unknown} are not in the layer table: add each to ALLOWED in "
                         f"tests/test_architecture.py (next to the units of its layer: FOUNDATION, SDE_LAYER, "
                         f"CORE, ...), with the units it may import")


def test_imports_follow_the_layers():
    bad = []
    for m, edges in EDGES.items():
        allowed = ALLOWED.get(unit(m))
        if allowed is None:
            continue
        for target, _, line in edges:
            u = unit(target)
            if u != unit(m) and u not in allowed:
                bad.append(f"{MODULES[m].relative_to(PKG.parent)}:{line} imports {target} ({unit(m)} -> {u})")
    assert not bad, "imports against the layer table (tests/test_architecture.py ALLOWED):\n" + "\n".join(bad)


def test_solvers_import_no_networks_training_data_or_cli():
    bad = [f"{m} imports {t}" for m, edges in EDGES.items() if unit(m) == "sampling"
           for t, _, _ in edges if unit(t) in SOLVER_FORBIDDEN]
    assert not bad, bad


def test_no_import_cycle():
    graph = {m: sorted({t for t, _, _ in edges if t in MODULES and t != m}) for m, edges in EDGES.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_layer_table_itself_has_no_cycle():
    units = [u for u, a in ALLOWED.items() if a is not None]
    order, seen = [], set()

    def visit(u, path):
        assert u not in path, f"ALLOWED has a cycle: {' -> '.join(path + [u])}"
        if u in seen:
            return
        for v in sorted(ALLOWED.get(u) or ()):
            if v in ALLOWED and ALLOWED[v] is not None:
                visit(v, path + [u])
        seen.add(u)
        order.append(u)

    for u in units:
        visit(u, [])


def test_no_private_names_across_units():
    bad = []
    for m, edges in EDGES.items():
        for target, name, line in edges:
            if unit(target) == unit(m):
                continue
            private_module = any(p.startswith("_") and not p.startswith("__") for p in target.split("."))
            if private_module or (name and name.startswith("_") and not name.startswith("__")):
                bad.append(f"{MODULES[m].relative_to(PKG.parent)}:{line} imports {target}.{name or ''}")
        for target, attr, line in _private_attribute_uses(m):
            if unit(target) != unit(m):
                bad.append(f"{MODULES[m].relative_to(PKG.parent)}:{line} uses {target}.{attr}")
    assert not bad, "private names used across units:\n" + "\n".join(bad)


# ------------------------------------------------------------------------------------------------
# the checker checks: each rule fails on the bug it guards against
# ------------------------------------------------------------------------------------------------
def test_the_checks_catch_what_they_guard(tmp_path, monkeypatch):
    """Feed the readers a fake package with a cycle, an upward import, a private name and an
    unknown unit; every check must object."""
    fake = tmp_path / "score_sde"
    (fake / "sampling").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "utils.py").write_text("from . import sde\n")                       # utils -> sde: upward
    (fake / "sde.py").write_text("def f():\n    from .utils import _hidden\n")  # cycle + private
    (fake / "sampling" / "__init__.py").write_text("from ..models import Net\n")
    (fake / "models.py").write_text("import score_sde.sde as s\nx = s._secret\n")
    (fake / "gizmo.py").write_text("")
    here = sys.modules[__name__]
    monkeypatch.setattr(here, "PKG", fake)
    mods = {_module_name(p): p for p in sorted(fake.rglob("*.py"))}
    monkeypatch.setattr(here, "MODULES", mods)
    monkeypatch.setattr(here, "EDGES", {m: list(_imports(m)) for m in mods})
    for check in (test_every_unit_is_placed_in_the_table, test_imports_follow_the_layers,
                  test_solvers_import_no_networks_training_data_or_cli, test_no_import_cycle,
                  test_no_private_names_across_units):
        with pytest.raises(AssertionError):
            check()
    with pytest.raises(AssertionError, match="add each to ALLOWED"):
        test_every_unit_is_placed_in_the_table()

"""The package's own import graph: no import from a lower layer to a higher one, no circle between modules.

The layer order is read from docs/architecture.md, so the page and this test cannot drift apart."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "autoprune"
LAYERS_DOC = ROOT / "docs" / "architecture.md"

# (importer, imported) module pairs allowed to break the rules, each with why. Keep it empty.
ALLOWED: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _owner(name: str, modules: dict[str, Path]) -> str:
    """The module a dotted import name lands in (``autoprune.engine.call_model`` -> ``autoprune.engine``)."""
    while name not in modules:
        name = name.rpartition(".")[0]
    return name


def import_graph() -> dict[str, set[str]]:
    """Module -> the autoprune modules it imports anywhere in its body (functions and TYPE_CHECKING included)."""
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
                names = [f"{base}.{alias.name}" for alias in node.names]
            for name in names:
                if name == "autoprune" or name.startswith("autoprune."):
                    target = _owner(name, modules)
                    if target != module:
                        graph[module].add(target)
        graph.setdefault(module, set())
    return dict(graph)


def layers() -> dict[str, int]:
    """Unit (``config``, ``_registry``, ``__init__``) -> its layer, from the block in docs/architecture.md."""
    found = {}
    for number, units in re.findall(r"^layer (\d+): (.+)$", LAYERS_DOC.read_text(), flags=re.MULTILINE):
        for unit in units.split():
            found[unit] = int(number)
    return found


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_every_unit_of_the_package_has_a_layer():
    known = layers()
    assert "config" in known and known["config"] < known["evaluate"] < known["study"] < known["cli"]
    missing = sorted({unit_of(m) for m in import_graph()} - set(known))
    assert not missing, f"docs/architecture.md gives no layer to {missing}"


def test_no_module_imports_from_a_higher_layer():
    known = layers()
    upward = []
    for module, targets in sorted(import_graph().items()):
        for target in sorted(targets):
            a, b = unit_of(module), unit_of(target)
            if a != b and known[a] <= known[b] and (module, target) not in ALLOWED:
                upward.append(f"{module} (layer {known[a]}) imports {target} (layer {known[b]})")
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_no_modules_import_each_other_in_a_circle():
    cycles = [c for c in _cycles(import_graph()) if not all(pair in ALLOWED for pair in zip(c, c[1:], strict=False))]
    assert not cycles, f"import circles: {cycles}"


def test_the_checks_see_a_circle_and_an_upward_import():
    # The walk itself: a graph with a circle is caught, and a real upward import would be seen.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    graph = import_graph()
    assert "autoprune.engine" in graph["autoprune.metrics"]  # imports inside the module body are found
    assert "autoprune.config" in graph["autoprune.evaluate._runtime"]


def test_building_a_config_loads_neither_the_engine_nor_the_evaluator():
    import subprocess
    import sys

    code = (
        "import sys; from autoprune.config import config_from_dict; "
        "config_from_dict({'name': 'n', 'output': 'o', 'model': {'builtin': 'vgg_small'}}); "
        "print(sorted(m for m in ('autoprune.engine', 'autoprune.evaluate', 'autoprune.study', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"

"""Layering you can draw: the framework-neutral core (rsport) below the model trees (torch_ref,
paddle_impl) below the tools (convert, align, deploy, test_tipc); no import cycles.

The graph is read from the source (every import statement, module level and inside functions),
so a lazy import that closes a cycle fails here even if no test happens to execute it.
"""
import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rsport", "torch_ref", "paddle_impl", "convert", "align", "deploy", "test_tipc")
# Which of our packages each package may import (itself always).
ALLOWED = {
    "rsport": set(),
    "torch_ref": {"rsport"},
    "paddle_impl": {"rsport"},
    "convert": {"rsport"},
    "align": {"rsport"},
    "deploy": {"rsport", "torch_ref", "paddle_impl"},
    "test_tipc": {"rsport", "paddle_impl", "deploy"},
}
FRAMEWORKS = {"torch_ref": {"paddle", "paddleseg"}, "paddle_impl": {"torch"}, "rsport": set()}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known=None) -> set[str]:
    """Every module an import statement in ``path`` names (absolute form). ``from pkg import x``
    names ``pkg.x`` where that is a module in ``known``, else ``pkg`` (x is then an attribute of
    the package: a dependency on its ``__init__``)."""
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if known is None or full in known else base)
                if known is None:
                    found.add(base)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    edges = defaultdict(set)
    for name, path in files.items():
        for target in imports_of(path, files):
            if target in files and target != name:
                edges[name].add(target)
        edges[name]  # noqa: B018 - every module is a node
    return edges, files


def test_packages_import_only_the_layers_below():
    edges, files = graph()
    bad = []
    for name, targets in edges.items():
        top = name.split(".")[0]
        for target in targets:
            if target.split(".")[0] not in ALLOWED[top] | {top}:
                bad.append(f"{name} -> {target}")
    assert not bad, "imports against the layering (core < model trees < tools):\n" + "\n".join(sorted(bad))


@pytest.mark.parametrize("package", sorted(FRAMEWORKS))
def test_trees_do_not_import_the_other_framework(package):
    bad = []
    for path in (ROOT / package).rglob("*.py"):
        for target in imports_of(path):
            if target.split(".")[0] in FRAMEWORKS[package]:
                bad.append(f"{module_name(path)} imports {target}")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    """Tarjan's strongly connected components over the module graph: every component is one module."""
    edges, _ = graph()
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in list(edges):
        if node not in index:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_a_lazy_cycle(tmp_path):
    """The graph includes imports inside functions (the old convert.core -> torch_ref ->
    convert.core cycle was one)."""
    (tmp_path / "a.py").write_text("def f():\n    from b import g\n")
    assert "b.g" in imports_of(tmp_path / "a.py") and "b" in imports_of(tmp_path / "a.py")

"""The shape of the package, as docs/architecture.md describes it: imports run one way.

Every import of a pigeon module is read from the source (type-checking imports included), so
a cycle that only mypy would follow still fails here, and so does a pigeon import hidden in a
function body (it hides a dependency from the reader and from this check).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pigeon

SRC = Path(pigeon.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The pigeon modules an import statement names (``from a import b`` may name the module
    ``a.b``; both ``a`` and ``a.b`` count when ``a.b`` is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "pigeon"]
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, base]) if base else ".".join(package)
    if base.split(".")[0] != "pigeon":
        return []
    return [base, *(f"{base}.{a.name}" for a in node.names)]


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                is_package = path.name == "__init__.py"
                found.update(m for m in imported(node, name, is_package) if m in modules)
        found.discard(name)
        edges[name] = found
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


def is_package_init_of(parent: str, child: str) -> bool:
    # A package's __init__ re-exporting its own modules is not a cycle a reader trips on:
    # the modules never import the package back (checked below as an ordinary edge).
    return child.startswith(parent + ".")


def test_the_modules_of_pigeon_import_each_other_in_one_direction_only() -> None:
    edges = graph()
    for name, targets in edges.items():
        # ``from pigeon.backends.redis import x`` inside pigeon.backends.redis.backend names
        # its own package: count only real module-to-module edges, not a package to itself.
        edges[name] = {t for t in targets if not is_package_init_of(t, name)}
    assert cycles(edges) == []


def test_no_function_imports_a_pigeon_module() -> None:
    hidden: list[str] = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom) and imported(
                    node, module_name(path), path.name == "__init__.py"
                ):
                    hidden.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert hidden == []

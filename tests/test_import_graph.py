"""The import graph of the product code has no circles, and protocol/ never imports upward.

Every import counts, also the ones inside functions: a lazy import still ties two modules together and the
next refactor turns it into an import-time failure. A module's own parent packages are left out (Python loads
them first in any case).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("protocol", "backend", "installer")


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _resolve(name: str, modules: dict) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, is_package: bool, modules: dict) -> set[str]:
    package = module if is_package else module.rpartition(".")[0]
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            deps.update(filter(None, (_resolve(alias.name, modules) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                full = f"{source}.{alias.name}"
                target = full if full in modules else _resolve(source, modules)
                if target:
                    deps.add(target)
    parents = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    return deps - parents - {module}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, is_pkg, modules) for name, (path, is_pkg) in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
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


def test_product_code_has_no_import_circle():
    assert _cycles(import_graph()) == []


def test_protocol_imports_nothing_from_the_backend():
    graph = import_graph()
    upward = {name: sorted(d for d in deps if d.startswith("backend")) for name, deps in graph.items()}
    assert {name: deps for name, deps in upward.items() if name.startswith("protocol") and deps} == {}


def test_the_installer_imports_only_the_standard_library_at_import_time():
    """install.py runs on the system Python before the venv exists: its package may import the standard library
    and itself at module level; the project's own packages (protocol, for the self-check) only inside functions."""
    import sys

    allowed = set(sys.stdlib_module_names) | {"installer", "__future__"}
    found = {}
    for path in [ROOT / "install.py", *sorted((ROOT / "installer").glob("*.py"))]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [] if node.level else [node.module or ""]
            else:
                continue
            bad = [name for name in names if name.split(".")[0] not in allowed]
            if bad:
                found[path.name] = bad
    assert found == {}
    graph = import_graph()
    assert not any(
        dep.startswith("backend")
        for name, deps in graph.items()
        if name.startswith("installer")
        for dep in deps
    )


def test_the_checker_sees_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]

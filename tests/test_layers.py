"""The layout is the architecture: tl_core's layers (``tl_core.LAYERS``) import only downwards, no module
imports itself back through others, the engine never imports the app, and pages sit on top.

Every import counts: module level, inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tl_core

ROOT = Path(__file__).resolve().parents[1]
MAX_TOP_LEVEL_MODULES = 12


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    files = [
        *ROOT.glob("tl_core/**/*.py"),
        *ROOT.glob("tl_app/**/*.py"),
        *ROOT.glob("pages/*.py"),
        ROOT / "streamlit_app.py",
    ]
    return {_module_name(path): path for path in files}


SOURCES = _sources()


def _imports(name: str, path: Path) -> set[str]:
    """Every first-party module ``name`` imports (a package's ``from pkg import module`` names the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in SOURCES else base)
    return {module for module in found if module.split(".")[0] in ("tl_core", "tl_app", "pages", "streamlit")}


GRAPH = {name: _imports(name, path) for name, path in SOURCES.items()}


def _layer(module: str) -> int:
    """Position in the stack: tl_core's layers first, then tl_app, then pages and the router."""
    top = module.split(".")
    if top[0] == "tl_core":
        if len(top) == 1:
            return 0  # the package itself re-exports TLError only
        for index, names in enumerate(tl_core.LAYERS):
            if top[1] in names:
                return index
        raise AssertionError(f"{module} is in no layer of tl_core.LAYERS: add its package or module there")
    return len(tl_core.LAYERS) + (0 if top[0] == "tl_app" else 1)


def test_every_tl_core_module_belongs_to_a_layer():
    for module in SOURCES:
        if module.startswith("tl_core."):
            _layer(module)


def test_no_import_reaches_up_a_layer():
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if target in SOURCES and _layer(target) > _layer(module)
    )
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_the_engine_never_imports_the_app_or_streamlit():
    leaks = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if module.startswith("tl_core")
        for target in targets
        if not target.startswith("tl_core")
    )
    assert not leaks, leaks


def test_pages_import_no_other_page():
    crossings = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if module.startswith("pages.")
        for target in targets
        if target.startswith("pages.")
    )
    assert not crossings, crossings


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH.get(node, ()):
            if target not in SOURCES or target == node:
                continue
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
                found.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    assert _cycles() == []


def test_cycle_finder_sees_a_cycle_through_a_function_level_import(monkeypatch):
    monkeypatch.setitem(GRAPH, "tl_core.errors", GRAPH["tl_core.errors"] | {"tl_core.workspace"})
    assert ["tl_core.errors", "tl_core.workspace"] in _cycles()


def test_few_modules_directly_in_tl_core():
    top = sorted(path.name for path in (ROOT / "tl_core").glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


@pytest.mark.parametrize("layer", [name for names in tl_core.LAYERS for name in names])
def test_every_layer_named_exists(layer):
    assert (ROOT / "tl_core" / layer).is_dir() or (ROOT / "tl_core" / f"{layer}.py").is_file(), layer

"""The layers point one way: core <- wiring (defs) <- application (app) <- faces (cli, demo, the Bento service), and
the package's imports (those inside functions included) form no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import mlops_assets

PACKAGE = Path(mlops_assets.__file__).parent

# What each layer may never import (a prefix of a module name).
FORBIDDEN = {
    "mlops_assets.core": ("mlops_assets.defs", "mlops_assets.app", "mlops_assets.cli", "mlops_assets.demo"),
    "mlops_assets.spec": ("mlops_assets.defs", "mlops_assets.app", "mlops_assets.cli", "mlops_assets.demo"),
    "mlops_assets.settings": ("mlops_assets.",),
    "mlops_assets.defs": ("mlops_assets.app", "mlops_assets.cli", "mlops_assets.demo", "mlops_assets.serving"),
    "mlops_assets.definitions": ("mlops_assets.app", "mlops_assets.cli", "mlops_assets.demo"),
    "mlops_assets.app": ("mlops_assets.cli", "mlops_assets.demo", "mlops_assets.serving"),
    "mlops_assets.serving": ("mlops_assets.defs", "mlops_assets.app", "mlops_assets.cli", "mlops_assets.demo"),
    "mlops_assets.demo": ("mlops_assets.cli", "mlops_assets.defs", "mlops_assets.definitions"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every mlops_assets module `path` imports, at any depth of the file (inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("mlops_assets")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_no_layer_imports_one_above_it() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        for layer, forbidden in FORBIDDEN.items()
        if module == layer or module.startswith(f"{layer}.")
        for target in targets
        if target.startswith(forbidden) and not (layer == "mlops_assets.settings" and target == module)
    ]
    assert wrong == []


def test_the_imports_form_no_cycle() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target] if target in path else [node, target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []

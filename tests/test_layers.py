"""The import contract: ``aura_core``'s subpackages form layers, each importing only from those below it.

Every import counts, at the top of a file, inside a function or under ``TYPE_CHECKING``: a
lazy import is still a dependency, and a circle through one is still a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "aura_core"
# Lowest first. A module may import from its own layer and from the layers before it.
LAYERS = ("errors", "base", "model", "method", "runtime", "analysis", "evaluation", "cli", "__init__", "__main__")
OUTSIDE = ("streamlit", "studio", "pages", "benchmarks", "studies", "app")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, wherever in the file (names imported from a package count as modules)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def _layer(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    if key not in LAYERS:
        raise AssertionError(f"{module} is in no layer: add its subpackage to LAYERS")
    return LAYERS.index(key)


def test_every_module_imports_only_its_own_layer_and_those_below() -> None:
    upward = [
        f"{module} → {target}"
        for module, targets in sorted(_graph().items())
        for target in sorted(targets)
        if target != "aura_core" and _layer(target) > _layer(module)
    ]
    assert not upward, "imports against the layers: " + "; ".join(upward)


def test_no_import_circle() -> None:
    graph = _graph()
    graph = {m: {t for t in targets if t != "aura_core"} for m, targets in graph.items() if m != "aura_core"}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import circle: " + " → ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            if not target.endswith(".__init__") and target in graph:
                visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


@pytest.mark.parametrize("outside", OUTSIDE)
def test_the_library_never_imports_the_app_or_the_tooling(outside: str) -> None:
    users = sorted(
        _module_name(p) for p in PACKAGE.rglob("*.py") if any(m == outside or m.startswith(f"{outside}.") for m in _imports(p))
    )
    assert not users, f"aura_core imports {outside}: {users}"


def test_studio_never_imports_the_pages() -> None:
    users = sorted(p.name for p in (ROOT / "studio").rglob("*.py") if any(m.split(".")[0] == "pages" for m in _imports(p)))
    assert not users, f"studio imports pages: {users}"


def test_the_readme_layout_names_every_subpackage() -> None:
    layout = (ROOT / "README.md").read_text().split("## Layout", 1)[1]
    missing = [p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file() and f"{p.name}/" not in layout]
    assert not missing, f"README's Layout misses {missing}"


def test_the_contract_catches_an_upward_import(tmp_path: Path) -> None:
    lower = tmp_path / "lower.py"
    lower.write_text("def f():\n    from aura_core.evaluation.protocol import evaluate\n")
    assert "aura_core.evaluation.protocol" in _imports(lower)
    assert _layer("aura_core.evaluation.protocol") > _layer("aura_core.base.files")

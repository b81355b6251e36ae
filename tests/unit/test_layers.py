"""The package layout holds: no import cycles, and no layer imports one above it.

Read from the source with `ast` (every import, module level or inside a function), so a
new module is checked the day it lands.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "rawproxy"

# Which rawproxy packages each package may import (besides itself). Lower layers never
# import higher ones; see docs/architecture.md.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "translate": {"core"},
    "kimi": {"core"},
    "server": set(),
    "upstream": {"core"},
    "store": {"core"},
    "proxy": {"core", "translate", "kimi", "server", "upstream", "store"},
    "simulator": {"core", "server"},
    "service": {"core", "translate", "kimi", "server", "upstream", "store", "proxy", "simulator"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The rawproxy modules `path` imports, resolved to absolute dotted names."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "rawproxy")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "rawproxy":
                continue
            found.add(target)
            for alias in node.names:  # `from . import kimi` imports a module
                candidate = f"{target}.{alias.name}"
                if _exists(candidate):
                    found.add(candidate)
    # A module's own ancestor packages are imported before it in any case: not an edge.
    return {m for m in found if _exists(m) and not (name + ".").startswith(m + ".")}


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_package_has_a_layer_and_a_docstring():
    for init in PACKAGE.glob("*/__init__.py"):
        layer = init.parent.name
        assert layer in ALLOWED, f"rawproxy/{layer}/ is a package no layer rule names"
        assert ast.get_docstring(ast.parse(init.read_text())), f"rawproxy/{layer}/__init__.py says nothing of its job"
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert not loose, f"modules outside any layer: {loose}"


def test_no_layer_imports_one_above_it():
    wrong = []
    for module, imported in _graph().items():
        layer = _layer(module)
        if layer not in ALLOWED:
            continue  # rawproxy/__init__ and __main__: the entry points
        for target in imported:
            other = _layer(target)
            if other and other != layer and other not in ALLOWED[layer]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_cycle_check_sees_a_cycle(tmp_path, monkeypatch):
    """The checker itself: two modules importing each other are reported."""
    pkg = tmp_path / "rawproxy" / "core"
    pkg.mkdir(parents=True)
    (tmp_path / "rawproxy" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text('"""x"""')
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("from .a import thing\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", tmp_path / "rawproxy")
    with pytest.raises(pytest.fail.Exception, match="import cycle: rawproxy.core.a -> rawproxy.core.b -> rawproxy.core.a"):
        test_no_import_cycles()

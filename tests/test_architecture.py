"""The house rules, checked: the core imports no HTTP and no builtin plugin, the HTTP layer stays thin, and
builtin plugins reach the core only through the hooks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_CORE = ("vidax_http", "vidax_plugins", "falcon", "gunicorn")


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("path", sorted((ROOT / "vidax_core").rglob("*.py")), ids=lambda p: p.name)
def test_core_imports_no_http_and_no_builtin_plugin(path):
    bad = [(line, mod) for line, mod in imports(path) if mod.split(".")[0] in FORBIDDEN_IN_CORE]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_builtin_plugins_are_named_not_imported():
    from vidax_core.plugins import DEFAULT_PLUGINS

    modules = {p.stem for p in (ROOT / "vidax_plugins").glob("*.py")} - {"__init__", "comfyui_common"}
    assert {d.rsplit(".", 1)[1] for d in DEFAULT_PLUGINS} == modules


@pytest.mark.parametrize("path", sorted((ROOT / "vidax_http" / "resources").glob("*.py")), ids=lambda p: p.name)
def test_http_responders_stay_thin(path):
    """A responder that grows past a dozen lines is doing the core's work."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    fat = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("on_"):
            body = node.body[1:] if ast.get_docstring(node) else node.body
            lines = body[-1].end_lineno - body[0].lineno + 1
            if lines > 12:
                fat.append(f"{node.name}: {lines} lines")
    assert not fat, f"{path.name}: {fat}"


def test_http_package_has_no_business_imports():
    """vidax_http talks to the core through the Vidax facade and error types only."""
    allowed = {"vidax_core", "vidax_core.errors"}
    for path in (ROOT / "vidax_http").rglob("*.py"):
        for line, mod in imports(path):
            if mod.startswith("vidax_core"):
                assert mod in allowed, f"{path.relative_to(ROOT)}:{line} imports {mod}"

"""The pure workflow core imports neither nats nor asyncio (static ast walk)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3] / "ebind" / "workflow"
PURE = ["state.py", "ref.py", "graph.py", "placement.py", "debug.py", "types.py", "resubmit.py"]
FORBIDDEN = {"nats", "asyncio"}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("name", PURE)
def test_pure_module_imports_no_io(name: str) -> None:
    assert not imported_roots(ROOT / name) & FORBIDDEN


@pytest.mark.parametrize("name", PURE)
def test_pure_module_imports_only_pure_ebind_modules(name: str) -> None:
    # ebind.wire: the task wire types (msgspec structs, no IO), for the stored-time type.
    # ebind._printable: one pure text function (control characters shown as "?").
    allowed = {
        "ebind._printable",
        "ebind.errors",
        "ebind.retry",
        "ebind.wire",
        "ebind.workflow.types",
        "ebind.workflow.ref",
    }
    allowed |= {"ebind.workflow.state"}
    tree = ast.parse((ROOT / name).read_text())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {m for m in mods if m.startswith("ebind")} <= allowed

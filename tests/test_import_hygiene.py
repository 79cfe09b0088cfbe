"""`import ebind` stays light; the pure core (L0) imports neither nats nor asyncio."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
FORBIDDEN_AT_IMPORT = (
    "click",
    "uvloop",
    "prometheus_client",
    "opentelemetry",
    "ebind.cli",
    "ebind.contrib",
)
L0 = [
    "ebind/errors.py",
    "ebind/wire.py",
    "ebind/retry.py",
    "ebind/signature.py",
    "ebind/registry.py",
    "ebind/codec.py",
    "ebind/schedule.py",
    "ebind/workflow/types.py",
    "ebind/workflow/state.py",
    "ebind/workflow/ref.py",
    "ebind/workflow/placement.py",
    "ebind/workflow/graph.py",
    "ebind/workflow/proof.py",
]
EXISTING_L0 = [p for p in L0 if (ROOT / p).exists()]


def test_import_ebind_pulls_in_no_edges() -> None:
    code = (
        "import sys, ebind\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_AT_IMPORT!r} "
        f"or any(m == f or m.startswith(f + '.') for f in {FORBIDDEN_AT_IMPORT!r})]\n"
        "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == ""


def test_import_ebind_does_not_configure_structlog() -> None:
    code = "import structlog, ebind; print(structlog.is_configured())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "False"


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_core_l0_modules_exist() -> None:
    assert set(L0[:7]) <= set(EXISTING_L0)


@pytest.mark.parametrize("module", EXISTING_L0)
def test_l0_module_imports_neither_nats_nor_asyncio(module: str) -> None:
    assert _imported_roots(ROOT / module) & {"nats", "asyncio"} == set()

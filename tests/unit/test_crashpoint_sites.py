"""Every named crash point has a call site in the library, and every call site a name."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

from ebind.crashpoints import POINTS

EBIND = Path(__file__).resolve().parents[2] / "ebind"


def _call_sites() -> Counter[str]:
    sites: Counter[str] = Counter()
    for path in EBIND.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "crashpoint"
            ):
                arg = node.args[0] if node.args else None
                assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), (
                    f"{path}:{node.lineno}: a crash point is named by a string literal"
                )
                sites[arg.value] += 1
    return sites


def test_every_point_is_reached_somewhere() -> None:
    sites = _call_sites()
    assert sorted(p for p in POINTS if not sites[p]) == []


def test_every_call_site_names_a_known_point() -> None:
    assert sorted(set(_call_sites()) - set(POINTS)) == []

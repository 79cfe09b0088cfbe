"""Run a user's test module with ``pytest_plugins = ["ebind.testing"]`` through pytester."""

from __future__ import annotations

import pytest

USER_APP = """
import pytest

import ebind

app = ebind.App("user")


@app.task(name="user.add")
async def add(a: int, b: int) -> int:
    return a + b
"""
"""The head of every user module: a module-level App with one task, as a project has."""


def run_user_tests(pytester: pytest.Pytester, tests: str, *, passed: int) -> None:
    """Run ``USER_APP + tests`` in a subprocess with the plugin on; all ``passed`` must pass."""
    pytester.makeconftest('pytest_plugins = ["ebind.testing"]\n')
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_user=USER_APP + tests)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", timeout=90)
    result.assert_outcomes(passed=passed)

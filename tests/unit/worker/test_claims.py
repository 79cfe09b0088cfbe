"""Claims: own ids always included, normalisation, callable sources re-read."""

from __future__ import annotations

import pytest

from ebind.errors import InvalidName
from ebind.worker.claims import Claims, normalize_claims


def test_normalize_always_includes_own_ids() -> None:
    assert normalize_claims([], "w1") == {"w1", "worker:w1"}


def test_normalize_trims_and_drops_empties_and_duplicates() -> None:
    assert normalize_claims([" gpu ", "", "gpu", "  "], "w1") == {"w1", "worker:w1", "gpu"}


def test_normalize_treats_a_bare_string_as_one_claim() -> None:
    assert "gpu" in normalize_claims("gpu", "w1")


def test_normalize_rejects_non_strings_with_a_clear_error() -> None:
    with pytest.raises(InvalidName, match="claims must be strings"):
        normalize_claims([3], "w1")  # type: ignore[list-item]


async def test_callable_claims_are_re_read() -> None:
    current = ["a"]
    claims = Claims(lambda: list(current), "w1")
    assert claims.dynamic
    assert "a" in await claims.refresh()
    current[:] = ["b"]
    got = await claims.refresh()
    assert "b" in got and "a" not in got


async def test_async_callable_claims() -> None:
    async def source() -> list[str]:
        return ["gpu"]

    assert "gpu" in await Claims(source, "w1").refresh()


async def test_refresh_error_keeps_previous_set_unless_strict() -> None:
    state = {"fail": False}

    def source() -> list[str]:
        if state["fail"]:
            raise RuntimeError("registry down")
        return ["a"]

    claims = Claims(source, "w1")
    await claims.refresh()
    state["fail"] = True
    assert "a" in await claims.refresh()
    with pytest.raises(RuntimeError):
        await claims.refresh(strict=True)

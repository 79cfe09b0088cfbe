"""Registry: names and aliases, all-or-nothing collision checks."""

from __future__ import annotations

import pytest
import sig_samples as s

from ebind.errors import InvalidArguments
from ebind.registry import Registry
from ebind.signature import inspect_handler


def test_register_and_get_by_name_and_alias() -> None:
    reg = Registry()
    spec = inspect_handler(s.resize, name="img.resize", aliases=["old.resize"])
    reg.register(spec)
    assert reg.get("img.resize") is spec and reg.get("old.resize") is spec
    assert "old.resize" in reg and "nope" not in reg and reg.get("nope") is None
    assert reg.names() == ["img.resize", "old.resize"] and list(reg) == reg.names()
    assert reg.primary_names() == ["img.resize"] and len(reg) == 2


def test_duplicate_name_is_rejected() -> None:
    reg = Registry()
    reg.register(inspect_handler(s.fetch_user, name="a"))
    with pytest.raises(InvalidArguments, match=r"task name 'a' is already registered as name"):
        reg.register(inspect_handler(s.resize, name="a"))


def test_alias_colliding_with_a_name_is_rejected_without_partial_registration() -> None:
    reg = Registry()
    reg.register(inspect_handler(s.fetch_user, name="a"))
    with pytest.raises(InvalidArguments, match=r"'a' is already registered.*aliases="):
        reg.register(inspect_handler(s.resize, name="b", aliases=["a"]))
    assert "b" not in reg


def test_name_colliding_with_an_alias_names_the_owner() -> None:
    reg = Registry()
    reg.register(inspect_handler(s.fetch_user, name="a", aliases=["x"]))
    with pytest.raises(InvalidArguments, match=r"'x' is already registered as an alias of 'a'"):
        reg.register(inspect_handler(s.resize, name="x"))

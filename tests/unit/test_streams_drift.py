"""A connect against streams ebind created itself finds nothing to update."""

from __future__ import annotations

from ebind.streams import _drift, _stream_configs


def test_the_servers_default_duplicate_window_is_no_drift() -> None:
    for want in _stream_configs(1):
        # what the server reports back: the unset window filled in with its 2-minute default
        have = want.evolve(duplicate_window=want.duplicate_window or 120.0)
        assert _drift(have, want) == {}, want.name


def test_a_window_ebind_sets_is_still_compared() -> None:
    want = next(c for c in _stream_configs(1) if c.duplicate_window)
    have = want.evolve(duplicate_window=want.duplicate_window + 1)
    assert _drift(have, want) == {"duplicate_window": want.duplicate_window}

"""A connect against streams ebind created itself finds nothing to update."""

from __future__ import annotations

from ebind.streams import _stream_configs, operator_differences, stream_additions


def test_the_servers_default_duplicate_window_is_no_drift() -> None:
    for want in _stream_configs(1):
        # what the server reports back: the unset window filled in with its 2-minute default
        have = want.evolve(duplicate_window=want.duplicate_window or 120.0)
        assert stream_additions(have, want) == {}, want.name


def test_a_window_an_operator_changed_is_kept_not_reverted() -> None:
    want = next(c for c in _stream_configs(1) if c.duplicate_window)
    have = want.evolve(duplicate_window=want.duplicate_window + 1)
    assert stream_additions(have, want) == {}
    assert "duplicate_window" in operator_differences(have, want)

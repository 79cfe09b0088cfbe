"""Secret redaction processor and configure() validation."""

from __future__ import annotations

import logging

import pytest

from ebind.errors import InvalidArguments
from ebind.logging import configure, redact, redact_secrets


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nats://u:secret@h:4222", "nats://u:***@h:4222"),
        ("nats://tok3n@h:4222", "nats://***@h:4222"),
        ("tls://a:b@x, nats://c:d@y", "tls://a:***@x, nats://c:***@y"),
        ("nats://h:4222", "nats://h:4222"),
        ("no url here", "no url here"),
    ],
)
def test_redact_masks_url_credentials(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_processor_masks_secret_keys_and_nested_urls() -> None:
    event = {
        "event": "x",
        "password": "hunter2",
        "token": "t",
        "servers": ["nats://u:p@h"],
        "url": "nats://u:p@h",
        "n": 3,
    }
    out = redact_secrets(None, "info", dict(event))
    assert out == {
        "event": "x",
        "password": "***",
        "token": "***",
        "servers": ["nats://u:***@h"],
        "url": "nats://u:***@h",
        "n": 3,
    }


def test_configure_rejects_unknown_format_and_level() -> None:
    with pytest.raises(InvalidArguments, match="log format must be 'console' or 'json'"):
        configure(format="xml")
    with pytest.raises(InvalidArguments, match="unknown log level 'loud'"):
        configure(level="loud")


def test_level_check_follows_the_configured_level_and_reuses_the_bound_logger() -> None:
    import io

    from ebind.logging import get_logger

    log = get_logger("ebind.test-level")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        configure("json", "warning", stream=io.StringIO())
        assert not log.is_enabled_for(logging.INFO) and log.is_enabled_for(logging.ERROR)
        bound = log._target()
        assert log.is_enabled_for(logging.WARNING) and log._target() is bound  # not rebound
        configure("json", "debug", stream=io.StringIO())  # a new configuration is seen at once
        assert log.is_enabled_for(logging.INFO)
    finally:  # leave the process's logging as it was for the next test
        root.handlers[:] = handlers
        root.setLevel(level)

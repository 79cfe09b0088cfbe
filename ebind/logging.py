"""structlog configuration for the CLI and worker entry points, and secret redaction.

Library code only calls ``structlog.get_logger``; :func:`configure` is called by entry points
(``ebind worker``, the CLI), never at import time. :func:`redact_secrets` is a processor that
masks credentials in URLs, registered secrets and secret-named keys.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, Literal
from urllib.parse import quote

import structlog

from ebind.errors import InvalidArguments

__all__ = [
    "MIN_SECRET_LEN",
    "SECRET_KEYS",
    "configure",
    "redact",
    "redact_secrets",
    "register_secret",
]

SECRET_KEYS = frozenset(
    {
        "password",
        "pass",
        "token",
        "auth_token",
        "secret",
        "nkeys_seed",
        "nkeys_seed_str",
        "user_credentials",
        "creds",
        "signing_key",
    }
)
"""Event keys whose values are always masked."""
MASK = "***"
MIN_SECRET_LEN = 4
"""Registered secrets shorter than this are not masked literally (they would mask common text)."""

_SCHEME = r"[A-Za-z][A-Za-z0-9+.-]*://"
# The userinfo of a URL runs to the last "@" of its token, because a password typed
# unencoded may itself hold "@", ":", "/", "#" or "%"; the token ends at whitespace, a
# quote, or where the next URL of a comma-separated list begins.
_URL_USERINFO = re.compile(
    rf"(?P<scheme>{_SCHEME})(?P<userinfo>(?:(?!,{_SCHEME})[^\s'\"<>])*)@"
    rf"(?P<rest>(?:(?!,{_SCHEME})[^\s@'\"<>])*)"
)
_known: set[str] = set()
_known_lock = threading.Lock()
_pattern: re.Pattern[str] | None = None
_ordered: tuple[str, ...] = ()


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears in later log lines and CLI errors, whatever it holds.

    The connection code registers every password and token it uses, so even a secret that
    no URL pattern can find (one holding spaces, say) never reaches a log. Values shorter
    than :data:`MIN_SECRET_LEN` are ignored.
    """
    global _pattern, _ordered
    if not value or len(value) < MIN_SECRET_LEN:
        return
    # The forms a secret takes once quoted by repr(), JSON or a URL are masked too.
    forms = {value, repr(value)[1:-1], json.dumps(value)[1:-1], quote(value, safe="")}
    with _known_lock:
        if forms <= _known:
            return
        _known.update(f for f in forms if len(f) >= MIN_SECRET_LEN)
        # Longest first, so a secret containing another is masked whole.
        ordered = tuple(sorted(_known, key=len, reverse=True))
        _pattern = re.compile("|".join(re.escape(v) for v in ordered))
        _ordered = ordered


def _mask_userinfo(match: re.Match[str]) -> str:
    user, sep, _ = match.group("userinfo").partition(":")
    masked = f"{user}:{MASK}" if sep else MASK
    return f"{match.group('scheme')}{masked}@{match.group('rest')}"


def redact(text: str) -> str:
    """Mask URL credentials and every registered secret in ``text``.

    ``nats://u:secret@host`` → ``nats://u:***@host``; ``nats://tok@host`` →
    ``nats://***@host``; a password holding ``@`` or ``:`` is masked whole.
    """
    pattern = _pattern
    # Substring tests are much cheaper than the alternation, and most lines hold no secret.
    if pattern is not None and any(v in text for v in _ordered):
        text = pattern.sub(MASK, text)
    if "@" in text and "://" in text:
        text = _URL_USERINFO.sub(_mask_userinfo, text)
    return text


def _redact_value(key: str, value: Any) -> Any:
    if key.lower() in SECRET_KEYS and value is not None:
        return MASK
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return type(value)(_redact_value("", v) for v in value)
    return value


def redact_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Processor for structlog: mask URL credentials and values of secret-named keys."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _redact_value(key, value)
    return event_dict


def configure(
    format: Literal["console", "json"] | str = "console", level: str | int = "info"
) -> None:
    """Configure structlog for a process entry point (console for people, json for machines)."""
    if isinstance(level, str):
        numeric = logging.getLevelName(level.upper())
        if not isinstance(numeric, int):
            raise InvalidArguments(
                f"unknown log level {level!r}; use debug, info, warning or error"
            )
        level = numeric
    if format not in ("console", "json"):
        raise InvalidArguments(f"log format must be 'console' or 'json', got {format!r}")
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )

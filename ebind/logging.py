"""structlog configuration for the CLI and worker entry points, and secret redaction.

Library code only calls ``structlog.get_logger``; :func:`configure` is called by entry points
(``ebind worker``, the CLI), never at import time. :func:`redact_secrets` is a processor that
masks credentials in URLs and secret-named keys (RELIABILITY §4.1).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

from ebind.errors import InvalidArguments

__all__ = ["SECRET_KEYS", "configure", "redact", "redact_secrets"]

SECRET_KEYS = frozenset(
    {"password", "pass", "token", "auth_token", "secret", "nkeys_seed", "user_credentials", "creds"}
)
"""Event keys whose values are always masked."""
MASK = "***"
# scheme://user:password@  and  scheme://token@
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^@/\s]+)@")


def _mask_userinfo(match: re.Match[str]) -> str:
    userinfo = match.group("userinfo")
    user, sep, _ = userinfo.partition(":")
    masked = f"{user}:{MASK}" if sep else MASK
    return f"{match.group('scheme')}{masked}@"


def redact(text: str) -> str:
    """``nats://u:secret@host`` → ``nats://u:***@host``; ``nats://tok@host`` → ``nats://***@host``."""
    return _URL_USERINFO.sub(_mask_userinfo, text)


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

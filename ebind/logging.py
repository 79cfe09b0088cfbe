"""Logging as a Python library does it, the CLI's log setup, and secret redaction.

Library code logs through :func:`get_logger`. Until the application (or the ``ebind``
command line) configures structlog, every event becomes a standard :mod:`logging` record
on the ``ebind.*`` logger it names, so the usual rules hold: nothing below WARNING is
shown unless the application asks for it, nothing is ever written to stdout, and Django's
``LOGGING``, log shippers and Sentry see ordinary records whose message reads
``event key=value ...`` and whose ``event`` and ``ebind`` attributes hold the event name and
its key-values. An application that configures structlog itself gets ebind's events
through its own configuration instead.

:func:`configure` is for entry points (``ebind worker``, every CLI command): it routes
structlog through the standard library too (``structlog.stdlib.LoggerFactory`` and
``ProcessorFormatter``) with one stderr handler on the root logger. :func:`redact_secrets`
is a processor that masks credentials in URLs, registered secrets and secret-named keys.
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
    "LibraryLogger",
    "configure",
    "get_logger",
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


def _plain(value: Any) -> str:
    text = str(value)
    return repr(value) if isinstance(value, str) and (not text or " " in text) else text


def _to_record(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Final processor of the library route: arguments for a plain stdlib logging call."""
    event = str(event_dict.pop("event", ""))
    exc_info = event_dict.pop("exc_info", None)
    stack_info = bool(event_dict.pop("stack_info", False))
    fields = dict(event_dict)
    text = " ".join([event, *(f"{k}={_plain(v)}" for k, v in fields.items())])
    # "%s" keeps a "%" inside a value from being read as a format directive.
    kwargs: dict[str, Any] = {"extra": {"event": event, "ebind": fields}}
    if exc_info:
        kwargs["exc_info"] = exc_info
    if stack_info:
        kwargs["stack_info"] = True
    return ("%s", text), kwargs


_LIBRARY_CHAIN: list[Any] = [
    structlog.stdlib.filter_by_level,  # a disabled level costs one check, not a render
    structlog.contextvars.merge_contextvars,
    redact_secrets,
    _to_record,
]


_STRUCTLOG_CONFIG = getattr(structlog, "_config")  # noqa: B009 - no public accessor


def _config_key() -> tuple[Any, ...]:
    """Structlog's current configuration objects (compared by identity, see ``_current``).

    The objects themselves are kept, not their ``id()``: an id can be reused by a new
    object once the old one is freed (a test's fresh logger factory), which would make a
    stale logger look current.
    """
    config: Any = _STRUCTLOG_CONFIG._CONFIG
    return (
        config.is_configured,
        config.default_processors,
        config.logger_factory,
        config.default_wrapper_class,
        config.default_context_class,
    )


def _current(key: tuple[Any, ...] | None) -> bool:
    """Whether ``key`` (from ``_config_key``) still names structlog's configuration."""
    # Compared in place, without building a new key: asked on every log call and level
    # check, where building and zipping tuples cost more than the check it guards.
    if key is None:
        return False
    config: Any = _STRUCTLOG_CONFIG._CONFIG
    return (
        key[0] is config.is_configured
        and key[1] is config.default_processors
        and key[2] is config.logger_factory
        and key[3] is config.default_wrapper_class
        and key[4] is config.default_context_class
    )


class LibraryLogger:
    """A logger for library code: stdlib records until structlog is configured, then structlog.

    The choice is made on every call, so an application may configure structlog (or
    ``structlog.testing.capture_logs``) after ebind was imported.
    """

    __slots__ = ("_bound", "_context", "_key", "_name")

    def __init__(self, name: str, context: dict[str, Any] | None = None) -> None:
        self._name = name
        self._context = context or {}
        self._key: tuple[Any, ...] | None = None
        self._bound: Any = None

    def _target(self) -> Any:
        # Rebinding costs microseconds per call, so the bound logger is kept for as long
        # as structlog's configuration stays the same (configure() replaces its objects).
        if _current(self._key):
            return self._bound
        key = _config_key()
        if structlog.is_configured():
            bound = structlog.get_logger(self._name).bind(**self._context)
        else:
            bound = structlog.wrap_logger(
                logging.getLogger(self._name),
                processors=_LIBRARY_CHAIN,
                wrapper_class=structlog.stdlib.BoundLogger,
                context_class=dict,
            ).bind(**self._context)
        self._key, self._bound = key, bound
        return bound

    def bind(self, **values: Any) -> LibraryLogger:
        """A logger that adds ``values`` to every event."""
        return LibraryLogger(self._name, {**self._context, **values})

    def new(self, **values: Any) -> LibraryLogger:
        """A logger with only ``values`` as its context."""
        return LibraryLogger(self._name, dict(values))

    def unbind(self, *keys: str) -> LibraryLogger:
        """A logger without ``keys`` in its context."""
        return LibraryLogger(self._name, {k: v for k, v in self._context.items() if k not in keys})

    try_unbind = unbind

    def is_enabled_for(self, level: int) -> bool:
        """Whether an event at ``level`` (a logging number) would be written at all."""
        # The cached target, so a check costs no rebinding (the worker asks once per task).
        check = getattr(self._target(), "is_enabled_for", None)
        return True if check is None else bool(check(level))

    def __getattr__(self, method: str) -> Any:
        return getattr(self._target(), method)

    def __repr__(self) -> str:
        return f"<LibraryLogger {self._name} {self._context!r}>"


def get_logger(name: str, **initial_values: Any) -> Any:
    """The logger library code uses: ``get_logger("ebind.worker").info("event", key=value)``."""
    return LibraryLogger(name, initial_values or None)


_HANDLER_MARK = "_ebind_cli_handler"


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise InvalidArguments(f"unknown log level {level!r}; use debug, info, warning or error")
    return numeric


def colour_wanted(stream: Any) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (any non-empty value)."""
    import os

    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def configure(
    format: Literal["console", "json"] | str = "console",
    level: str | int = "info",
    *,
    stream: Any = None,
) -> None:
    """Set up logging for a process entry point: one stderr handler, console or json lines.

    structlog is routed through the standard library, so ebind's events, the
    application's own stdlib records and those of its dependencies share one handler,
    level and format. Calling it again replaces the handler it installed before.
    """
    number = _level_number(level)
    if format not in ("console", "json"):
        raise InvalidArguments(f"log format must be 'console' or 'json', got {format!r}")
    out = stream if stream is not None else sys.stderr
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if format == "json"
        else structlog.dev.ConsoleRenderer(colors=colour_wanted(out))
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *shared,
            structlog.stdlib.ExtraAdder(),
            structlog.processors.format_exc_info,
            redact_secrets,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)

"""Settings from an object, a module or the environment, in the spirit of Celery's config.

``app.config_from_object("myproject.settings")`` reads every ``EBIND_*`` attribute of the
module (Django's ``settings`` works the same: ``app.config_from_object("django.conf:settings")``);
``app.config_from_object({"nats_url": ..., "worker_concurrency": 8})`` takes a mapping whose
keys may omit the prefix and any case; ``app.config_from_env()`` reads ``EBIND_*`` variables.
The names are the environment variables' names, so one list documents both:

- connection: ``EBIND_NATS_URL``, ``EBIND_CONNECT_WAIT``, ``EBIND_PUBLISH_TIMEOUT`` and the
  credential and TLS settings ``EBIND_NATS_USER`` ... ``EBIND_NATS_TLS_HOSTNAME``;
- retention: ``EBIND_RETENTION_TASKS`` / ``_RESULTS`` / ``_DEAD_LETTERS`` / ``_DAG_HISTORY``;
- worker: ``EBIND_WORKER_CONCURRENCY``, ``_ACK_WAIT``, ``_SHUTDOWN_GRACE``, ``_CLAIMS``,
  ``_QUEUES``, ``_SCHEDULER``, ``_HEALTH_PORT``, ``_HEALTH_HOST``, ``_POOL`` (thread or process) and
  ``_POOL_SIZE`` (the process pool's children). ``EBIND_WORKER_PROCESSES`` (worker
  processes) is read by ``ebind worker --processes`` only: an App cannot fork itself.

Durations take seconds or ``30s`` / ``15m`` / ``2h`` / ``7d``. Parsing is pure
(:func:`parse_settings`); :func:`apply_settings` sets them on an App that is not connected.
An unknown name in an object or mapping is an error naming it (a typo would otherwise be
ignored in silence); unknown ``EBIND_*`` environment variables belong to other parts of
ebind and are left alone.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ebind.connection import ENV as CONNECTION_ENV
from ebind.errors import InvalidArguments
from ebind.retention import Retention, parse_duration

__all__ = [
    "DEFAULT_CONNECT_WAIT",
    "PREFIX",
    "SETTINGS",
    "Settings",
    "apply_settings",
    "connect_wait_setting",
    "load_object",
    "parse_settings",
    "settings_of",
]

PREFIX = "EBIND_"
DEFAULT_CONNECT_WAIT = 10.0
"""Seconds ``App.connect`` keeps trying to reach a server before it reports it unreachable."""


def connect_wait_setting(value: float | None, environ: Mapping[str, str] | None = None) -> float:
    """The connect wait: ``value``, else ``$EBIND_CONNECT_WAIT``, else the default (10 s).

    Raises:
        InvalidArguments: not a duration >= 0.
    """
    if value is None:
        env = os.environ if environ is None else environ
        raw = env.get(PREFIX + "CONNECT_WAIT")
        return _duration(PREFIX + "CONNECT_WAIT", raw) if raw else DEFAULT_CONNECT_WAIT
    return _duration("connect_wait", value)


def _duration(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidArguments(f"{name} must be a duration such as 30 or '30s', got {value!r}")
    seconds = (
        float(value) if isinstance(value, int | float) else parse_duration(str(value), what=name)
    )
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidArguments(f"{name} must be a finite duration >= 0, got {value!r}")
    return seconds


def _count(name: str, value: Any) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or number < 1:
        raise InvalidArguments(f"{name} must be a whole number >= 1, got {value!r}")
    return number


def _port(name: str, value: Any) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else -1
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise InvalidArguments(f"{name} must be a port number 0-65535, got {value!r}")
    return number


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InvalidArguments(f"{name} must be true or false, got {value!r}")


def _kind(value: Any) -> str:
    """What ``value`` is, never what it holds (settings may carry passwords and tokens)."""
    if isinstance(value, str):
        return "a blank string" if not value.strip() else "a string"
    return f"a {type(value).__name__}"


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArguments(f"{name} must be a non-empty string, got {_kind(value)}")
    return value.strip()


def _urls(name: str, value: Any) -> str | list[str]:
    """One server URL, or a list of them (a cluster's seeds); never echoed in an error."""
    if isinstance(value, list | tuple):
        if not value or not all(isinstance(u, str) and u.strip() for u in value):
            held = ", ".join(sorted({_kind(u) for u in value})) or "nothing"
            raise InvalidArguments(
                f"{name} must be a URL string or a non-empty list of URL strings, got "
                f"a {type(value).__name__} of {held}"
            )
        return [u.strip() for u in value]
    return _text(name, value)


def _pool(name: str, value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("thread", "process"):
        raise InvalidArguments(f"{name} must be 'thread' or 'process', got {value!r}")
    return text


def _names(name: str, value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise InvalidArguments(f"{name} must be a list of names or 'a,b', got {value!r}")
    return [i.strip() for i in items if i.strip()]


def _queues(name: str, value: Any) -> list[str]:
    from ebind.errors import InvalidName
    from ebind.queues import check_queue

    queues = _names(name, value)
    try:
        return [check_queue(q) for q in queues]
    except InvalidName as exc:
        raise InvalidArguments(f"{name}: {exc}") from None


# name (lowercase, no prefix) -> (section, key in that section, parser)
_Parser = Callable[[str, Any], Any]
SETTINGS: dict[str, tuple[str, str, _Parser]] = {
    "nats_url": ("app", "nats_url", _urls),
    "connect_wait": ("app", "connect_wait", _duration),
    "publish_timeout": ("app", "publish_timeout", _duration),
    **{
        env.removeprefix(PREFIX).lower(): ("connection", key, _text)
        for key, env in CONNECTION_ENV.items()
    },
    **{f"retention_{f}": ("retention", f, _duration) for f in Retention.__struct_fields__},
    "worker_concurrency": ("worker", "concurrency", _count),
    "worker_prefetch": ("worker", "prefetch", _count),
    "worker_ack_wait": ("worker", "ack_wait", _duration),
    "worker_shutdown_grace": ("worker", "shutdown_grace", _duration),
    "worker_claims": ("worker", "claims", _names),
    "worker_queues": ("worker", "queues", _queues),
    "worker_scheduler": ("worker", "scheduler", _flag),
    "worker_health_port": ("worker", "health_port", _port),
    "worker_health_host": ("worker", "health_host", _text),
    "worker_pool": ("worker", "pool", _pool),
    "worker_pool_size": ("worker", "processes", _count),  # the Worker's name for it
}
"""Every setting name (lowercase, without ``EBIND_``) → where it goes and how it is read."""


@dataclass(frozen=True)
class Settings:
    """Parsed settings, by section; only what was given is present."""

    app: dict[str, Any] = field(default_factory=dict)
    connection: dict[str, str] = field(default_factory=dict)
    retention: dict[str, float] = field(default_factory=dict)
    worker: dict[str, Any] = field(default_factory=dict)


def parse_settings(values: Mapping[str, Any], *, strict: bool = True) -> Settings:
    """Read ``values`` (names with or without ``EBIND_``, any case) into :class:`Settings`.

    ``None`` values count as not given. With ``strict`` an unknown name is an error.

    Raises:
        InvalidArguments: an unknown name (strict) or a value of the wrong form, naming it.
    """
    out = Settings()
    unknown: list[str] = []
    for raw_name, value in values.items():
        name = raw_name.lower().removeprefix(PREFIX.lower())
        spec = SETTINGS.get(name)
        if spec is None:
            unknown.append(raw_name)
            continue
        if value is None:
            continue
        section, key, parse = spec
        getattr(out, section)[key] = parse(PREFIX + name.upper(), value)
    if strict and unknown:
        raise InvalidArguments(
            f"unknown ebind setting(s) {sorted(unknown)}; known: "
            + ", ".join(PREFIX + n.upper() for n in SETTINGS)
        )
    return out


def load_object(target: object | str) -> object:
    """``"pkg.module"`` or ``"pkg.module:attr"`` imported; anything else returned as is.

    Raises:
        InvalidArguments: the module cannot be imported or has no such attribute.
    """
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidArguments(f"cannot import settings module {module_name!r}: {exc}") from exc
    for part in filter(None, attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise InvalidArguments(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


def settings_of(obj: object) -> Mapping[str, Any]:
    """The settings an object holds: a mapping as is, else its ``EBIND_*`` attributes."""
    if isinstance(obj, Mapping):
        return obj
    return {name: getattr(obj, name) for name in dir(obj) if name.startswith(PREFIX)}


def apply_settings(app: Any, settings: Settings) -> None:
    """Set ``settings`` on ``app`` (not connected): later calls override earlier ones.

    Raises:
        InvalidArguments: the App is already connected (the settings would not apply).
    """
    if getattr(app, "is_connected", False):
        raise InvalidArguments("configure the App before it connects; it is connected already")
    if "nats_url" in settings.app:
        from ebind.app import resolve_servers

        app.servers = resolve_servers(settings.app["nats_url"])
    if "connect_wait" in settings.app:
        app.connect_wait = settings.app["connect_wait"]
    if "publish_timeout" in settings.app:
        if settings.app["publish_timeout"] <= 0:
            raise InvalidArguments("EBIND_PUBLISH_TIMEOUT must be > 0 seconds")
        app.publish_timeout = settings.app["publish_timeout"]
    if settings.connection:
        from ebind.connection import ConnectionSettings, nats_options

        app.override_connection(nats_options(ConnectionSettings(**settings.connection)))
    if settings.retention:
        import msgspec

        app.retention = msgspec.structs.replace(app.retention, **settings.retention)
    app.worker_options.update(settings.worker)

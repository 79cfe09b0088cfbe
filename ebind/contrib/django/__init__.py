"""Django integration: settings-based configuration and task discovery from installed apps.

.. code-block:: python

    # mysite/settings.py
    INSTALLED_APPS = [..., "ebind.contrib.django", "shop"]
    EBIND = {"NAME": "mysite", "NATS_URL": os.environ.get("EBIND_NATS_URL", "nats://127.0.0.1:4222")}

    # mysite/ebind_app.py  (run a worker with: ebind worker -A mysite.ebind_app:app)
    from ebind.contrib.django import app_from_settings, setup

    app = app_from_settings("mysite.settings")
    setup()  # django.setup(): imports shop/tasks.py and every other installed app's tasks.py

    # shop/tasks.py
    from mysite.ebind_app import app

    @app.task(name="shop.total")
    def total(prices: list[int]) -> int: ...

Settings come from the ``EBIND`` dict (keys in :data:`SETTING_KEYS`) and a top-level
``EBIND_NATS_URL``; what neither sets falls back to the App's own defaults (the
``EBIND_NATS_URL`` environment variable, then ``nats://127.0.0.1:4222``). Views enqueue
through the blocking API: ``total.sync.delay([3, 4]).get(timeout=10)``.

The App is created before ``django.setup()`` on purpose: installed apps' ``tasks.py``
import it while Django populates its registry, so it must already exist.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Iterable, Mapping
from typing import Any

from ebind.app import App
from ebind.errors import EbindError
from ebind.logging import get_logger

__all__ = [
    "SETTING_KEYS",
    "SettingsError",
    "app_from_settings",
    "app_options",
    "autodiscover",
    "setup",
    "task_modules",
]

log = get_logger("ebind.contrib.django")

SETTING_KEYS: Mapping[str, str] = {
    "NAME": "name",
    "NATS_URL": "nats_url",
    "CLIENT_ID": "client_id",
    "REPLICAS": "replicas",
    "PUBLISH_TIMEOUT": "publish_timeout",
}
"""Key of the ``EBIND`` settings dict → keyword argument of :class:`ebind.App`."""

_UNSET: Any = object()


class SettingsError(EbindError, ValueError):
    """The Django settings for ebind are malformed (the message names the setting)."""


def _check_value(key: str, value: Any) -> None:
    if key == "NATS_URL":
        ok = isinstance(value, str) or (
            isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        )
        want = "a URL string or a list of URL strings"
    elif key in ("NAME", "CLIENT_ID"):
        ok, want = isinstance(value, str), "a string"
    elif key == "REPLICAS":
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    else:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        want = "a number of seconds"
    if not ok:
        raise SettingsError(f"settings.EBIND[{key!r}] must be {want}, got {value!r}")


def app_options(ebind: Any = _UNSET, nats_url: Any = _UNSET) -> dict[str, Any]:
    """The ``App(...)`` keyword arguments for ``settings.EBIND`` and ``settings.EBIND_NATS_URL``.

    Pass what the settings hold and leave out what they do not define.

    Raises:
        SettingsError: ``EBIND`` is not a dict, names an unknown key, holds a value of the
            wrong type, or disagrees with ``EBIND_NATS_URL``.
    """
    given: dict[str, Any] = {}
    if ebind is not _UNSET:
        if not isinstance(ebind, Mapping):
            raise SettingsError(f"settings.EBIND must be a dict, got {type(ebind).__name__}")
        for key, value in ebind.items():
            if key not in SETTING_KEYS:
                known = ", ".join(sorted(SETTING_KEYS))
                raise SettingsError(f"settings.EBIND has unknown key {key!r} (known: {known})")
            _check_value(key, value)
            given[key] = value
    if nats_url is not _UNSET:
        _check_value("NATS_URL", nats_url)
        if "NATS_URL" in given and given["NATS_URL"] != nats_url:
            raise SettingsError(
                "settings.EBIND_NATS_URL and settings.EBIND['NATS_URL'] disagree; set one of them"
            )
        given["NATS_URL"] = nats_url
    return {SETTING_KEYS[key]: value for key, value in given.items()}


def task_modules(app_names: Iterable[str], module: str = "tasks") -> list[str]:
    """The module each installed app would hold its tasks in (``shop`` → ``shop.tasks``)."""
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise SettingsError(f"task module name must be a dotted Python name, got {module!r}")
    return [f"{name}.{module}" for name in app_names]


def _settings(settings_module: str | None) -> Any:
    if settings_module is not None:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    try:
        from django.conf import settings
    except ImportError as exc:
        raise ImportError("ebind.contrib.django needs Django: pip install django") from exc
    return settings


def app_from_settings(settings_module: str | None = None, **overrides: Any) -> App:
    """An :class:`ebind.App` configured from Django's settings (``overrides`` win).

    ``settings_module`` becomes ``DJANGO_SETTINGS_MODULE`` unless that is already set, so a
    worker started with ``ebind worker -A mysite.ebind_app:app`` finds the project's settings.
    """
    settings = _settings(settings_module)
    found = {
        name: getattr(settings, attr)
        for name, attr in (("ebind", "EBIND"), ("nats_url", "EBIND_NATS_URL"))
        if hasattr(settings, attr)
    }
    options = {**app_options(**found), **overrides}
    return App(**options)


def setup(settings_module: str | None = None) -> None:
    """Point ``DJANGO_SETTINGS_MODULE`` at the project and run ``django.setup()`` once.

    Does nothing when Django's app registry is populated or being populated (a process that
    already set Django up, or this call made from an installed app's import).
    """
    _settings(settings_module)
    import django
    from django.apps import apps

    if apps.ready or apps.loading:
        return
    django.setup()


def autodiscover(module: str = "tasks") -> list[str]:
    """Import ``<app>.<module>`` of every installed Django app that has one; returns their names.

    An app without such a module is skipped; an error raised while importing one that
    exists propagates (a broken ``tasks.py`` must not pass unnoticed).
    """
    from django.apps import apps

    names = [config.name for config in apps.get_app_configs()]
    imported = []
    for candidate in task_modules(names, module):
        if importlib.util.find_spec(candidate) is None:
            continue
        importlib.import_module(candidate)
        imported.append(candidate)
    log.debug("django.autodiscovered", modules=imported)
    return imported

"""The Django app config: list ``"ebind.contrib.django"`` in ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig

from ebind.contrib.django import autodiscover

__all__ = ["EbindConfig"]


class EbindConfig(AppConfig):  # type: ignore[misc]  # Django ships no type information
    """Imports every installed app's ``tasks.py`` once Django's app registry is ready."""

    name = "ebind.contrib.django"
    label = "ebind"
    verbose_name = "ebind"

    def ready(self) -> None:
        """Discover the tasks so a worker of the project knows every handler."""
        autodiscover()

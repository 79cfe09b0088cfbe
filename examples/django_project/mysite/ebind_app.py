"""The project's ebind App; a worker runs with ``ebind worker -A mysite.ebind_app:app``."""

from __future__ import annotations

from ebind.contrib.django import app_from_settings, setup

# Created before django.setup(): the installed apps' tasks.py import it while Django loads.
app = app_from_settings("mysite.settings")
setup()

"""Settings of the example Django project (no database: the views only talk to ebind)."""

from __future__ import annotations

import os

SECRET_KEY = "example-project-only"  # a real project reads this from its environment
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
ROOT_URLCONF = "mysite.urls"
INSTALLED_APPS = [
    "ebind.contrib.django",  # imports every installed app's tasks.py at django.setup()
    "shop",
]
MIDDLEWARE: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

EBIND = {
    "NAME": "django-demo",
    "NATS_URL": os.environ.get("EBIND_NATS_URL", "nats://127.0.0.1:4222"),
    "PUBLISH_TIMEOUT": 5.0,
}

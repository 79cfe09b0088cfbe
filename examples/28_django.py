"""Django: settings-based configuration, tasks discovered from installed apps, sync views.

The project lives in ``examples/django_project/``: ``mysite/settings.py`` configures ebind
with an ``EBIND`` dict, ``INSTALLED_APPS`` lists ``ebind.contrib.django`` (which imports
every installed app's ``tasks.py``), ``mysite/ebind_app.py`` holds the App and
``shop/views.py`` enqueues through the blocking API. The worker is
``ebind worker -A mysite.ebind_app:app``, which loads the Django project. Driven by
Django's test client.

# expect: discovered: ['shop.tasks']
# expect: registered: ['shop.place_order', 'shop.total']
# expect: app from settings: django-demo, publish_timeout 5.0
# expect: GET /total/?prices=250,750&discount=10 -> 200 {'total': 900}
# expect: GET /total/?prices=1,x -> 400 prices must be comma-separated integers, got '1,x'
# expect: GET /total/?prices=1&discount=150 -> 422 bad_input: discount 150% is not 0..100
# expect: GET /orders/?customer=ada&prices=100,200 -> 202 task id
# expect: GET /orders/<id>/ -> 200 {'status': 'order for ada: 2 items, 300 cents'}
# expect: GET /orders/*/ -> 400
# expect: bad settings: settings.EBIND has unknown key 'URL'
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ebind.logging
from ebind.contrib.django import SettingsError, app_options
from ebind.embed import start_node

PROJECT = Path(__file__).resolve().parent / "django_project"


def main() -> None:
    ebind.logging.configure(level="warning")
    with start_node() as node:
        os.environ["EBIND_NATS_URL"] = node.client_url  # read by mysite/settings.py
        cmd = [sys.executable, "-m", "ebind", "worker", "-A", "mysite.ebind_app:app"]
        cmd += ["--log-level", "error", "--concurrency", "4"]
        worker = subprocess.Popen(
            cmd,
            cwd=PROJECT,
            env={**os.environ, "PYTHONPATH": str(PROJECT)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sys.path.insert(0, str(PROJECT))
        try:
            run_requests()
        finally:
            worker.terminate()
            worker.wait(30)
    try:
        app_options({"URL": "nats://x"})
    except SettingsError as exc:
        print("bad settings:", str(exc).split(" (")[0])


def run_requests() -> None:
    from ebind.contrib.django import autodiscover, setup

    setup("mysite.settings")  # what a WSGI module or manage.py does
    from django.test import Client
    from mysite.ebind_app import app

    print("discovered:", autodiscover())
    print("registered:", sorted(n for n in app.registry.names() if n.startswith("shop.")))
    print(f"app from settings: {app.name}, publish_timeout {app.publish_timeout}")
    client = Client()
    try:
        for path in (
            "/total/?prices=250,750&discount=10",
            "/total/?prices=1,x",
            "/total/?prices=1&discount=150",
        ):
            resp = client.get(path)
            body = resp.json()
            print(f"GET {path} -> {resp.status_code}", body.get("error", body))

        resp = client.get("/orders/?customer=ada&prices=100,200")
        task_id = resp.json()["task_id"]
        print(f"GET /orders/?customer=ada&prices=100,200 -> {resp.status_code} task id")
        resp = client.get(f"/orders/{task_id}/")
        print(f"GET /orders/<id>/ -> {resp.status_code}", resp.json())
        print("GET /orders/*/ ->", client.get("/orders/*/").status_code)
    finally:
        app.sync.close()


if __name__ == "__main__":
    main()

"""Flask: an app factory with the ebind App, a view that enqueues and returns the result.

The factory points the App at the URL from Flask's config and connects once through the
blocking API (a wrong URL fails at start, not on the first request). Views call
``task.sync.delay(...).get(timeout=)``: every request thread shares that one connection.
The worker is a separate ``ebind worker -A 29_flask:app`` process. Driven by Flask's test
client.

# expect: GET /add?a=2&b=3 -> 200 {'result': 5}
# expect: 6 concurrent requests -> [200, 200, 200, 200, 200, 200]
# expect: GET /add?a=x&b=3 -> 400 a must be an integer, got 'x'
# expect: GET /add?a=-1&b=3 -> 422 bad_input: negative input: -1
# expect: GET /divide?a=1&b=0 -> 422 handler: ZeroDivisionError: division by zero
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from flask import Flask, current_app, jsonify, request

import ebind
import ebind.logging
from ebind.app import resolve_servers
from ebind.embed import start_node

app = ebind.App("flask-demo")


@app.task(name="flask_demo.add")
def add(a: int, b: int) -> int:
    if a < 0 or b < 0:
        raise ebind.NonRetryable(f"negative input: {min(a, b)}", kind="bad_input")
    return a + b


@app.task(name="flask_demo.divide", retry=ebind.RetryPolicy.none())
def divide(a: int, b: int) -> float:
    return a / b


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The Flask app factory: ebind is configured from the Flask config and connected once."""
    web = Flask(__name__)
    web.config.update(config or {})
    if url := web.config.get("EBIND_NATS_URL"):
        app.servers = resolve_servers(url)
    app.sync.connect()  # fail at start on a wrong URL or credentials
    web.extensions["ebind"] = app

    def int_arg(name: str) -> int:
        raw = request.args.get(name, "")
        try:
            return int(raw)
        except ValueError:
            raise BadInput(f"{name} must be an integer, got {raw!r}") from None

    @web.get("/add")
    def add_view() -> Any:
        return jsonify(result=add.sync.delay(int_arg("a"), int_arg("b")).get(timeout=10))

    @web.get("/divide")
    def divide_view() -> Any:
        return jsonify(result=divide.sync.delay(int_arg("a"), int_arg("b")).get(timeout=10))

    @web.errorhandler(BadInput)
    def bad_input(exc: BadInput) -> Any:
        return jsonify(error=str(exc)), 400

    @web.errorhandler(ebind.TaskFailed)
    def task_failed(exc: ebind.TaskFailed) -> Any:
        current_app.logger.info("task %s failed: %s", exc.task_id, exc.error.kind)
        return jsonify(error=f"{exc.error.kind}: {exc.error.message}"), 422

    @web.errorhandler(ebind.TaskTimeout)
    def task_timeout(exc: ebind.TaskTimeout) -> Any:
        return jsonify(error=str(exc)), 504

    return web


class BadInput(ValueError):
    """A query parameter that is not what the view needs."""


def main() -> None:
    ebind.logging.configure(level="warning")
    here = Path(__file__).resolve().parent
    with start_node() as node:
        cmd = [sys.executable, "-m", "ebind", "worker", "-A", f"{Path(__file__).stem}:app"]
        cmd += ["--nats", node.client_url, "--log-level", "error", "--concurrency", "8"]
        worker = subprocess.Popen(
            cmd,
            cwd=here,
            env={**os.environ, "PYTHONPATH": str(here)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            web = create_app({"EBIND_NATS_URL": node.client_url, "TESTING": True})
            client = web.test_client()

            resp = client.get("/add?a=2&b=3")
            print(f"GET /add?a=2&b=3 -> {resp.status_code}", resp.get_json())

            codes: dict[int, int] = {}

            def call(i: int) -> None:
                r = web.test_client().get(f"/add?a={i}&b={i}")
                codes[i] = r.status_code if r.get_json() == {"result": 2 * i} else -1

            threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            print("6 concurrent requests ->", [codes[i] for i in range(6)])

            for path in ("/add?a=x&b=3", "/add?a=-1&b=3", "/divide?a=1&b=0"):
                resp = client.get(path)
                print(f"GET {path} -> {resp.status_code}", resp.get_json()["error"])
        finally:
            app.sync.close()
            worker.terminate()
            worker.wait(30)


if __name__ == "__main__":
    main()

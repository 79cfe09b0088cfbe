"""The blocking API: enqueue and wait from plain (non-async) code, as a Django or Flask view does.

``task.sync.delay(...)`` returns a SyncResult whose ``get(timeout=)`` blocks for the typed
result, like Celery's ``add.delay(...).get()``. The App connects once, on a background
thread, and every thread of the process shares that connection. A sync handler running in
the worker's thread pool can enqueue and wait the same way (it uses the worker's own
connection). Workflows have the basics too: ``app.sync.submit(dag)``, ``app.sync.result``,
``app.sync.signal``. The worker here is a separate ``ebind worker`` process.

# expect: view: 2 + 3 = 5
# expect: 8 threads got: [0, 2, 4, 6, 8, 10, 12, 14]
# expect: sync handler waited on another task: 43
# expect: failed as TaskFailed: bad_input: no user 'nobody'
# expect: timed out as TaskTimeout: True
# expect: dag step: 30
# expect: after signal: 31
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import ebind
import ebind.logging
from ebind.embed import start_node
from ebind.workflow import DAG, signal_ref

app = ebind.App("sync-demo")


@app.task(name="demo.add")
async def add(a: int, b: int) -> int:
    return a + b


@app.task(name="demo.answer")
def answer(n: int) -> int:
    # A plain def runs in the worker's thread pool; waiting here does not block its loop.
    return add.sync.delay(n, 1).get(timeout=30)


@app.task(name="demo.lookup")
def lookup(user: str) -> str:
    raise ebind.NonRetryable(f"no user {user!r}", kind="bad_input")


@app.task(name="demo.slow")
def slow() -> str:
    time.sleep(2)
    return "late"


def view(a: int, b: int) -> str:
    """What a Flask or Django view would do: enqueue, wait, render."""
    total = add.sync.delay(a, b).get(timeout=30)
    return f"{a} + {b} = {total}"


def main() -> None:
    ebind.logging.configure(level="warning")
    here = Path(__file__).resolve().parent
    with start_node() as node:
        app.servers = [node.client_url]
        cmd = [sys.executable, "-m", "ebind", "worker", "-A", f"{Path(__file__).stem}:app"]
        cmd += ["--nats", node.client_url, "--log-level", "warning"]
        worker = subprocess.Popen(
            cmd,
            cwd=here,
            env={**os.environ, "PYTHONPATH": str(here)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            print("view:", view(2, 3))

            results: dict[int, int] = {}

            def request(i: int) -> None:
                results[i] = add.sync.delay(i, i).get(timeout=30)

            threads = [threading.Thread(target=request, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            print(f"{len(threads)} threads got:", [results[i] for i in range(8)])

            print("sync handler waited on another task:", answer.sync.delay(42).get(timeout=30))

            try:
                lookup.sync.delay("nobody").get(timeout=30)
            except ebind.TaskFailed as exc:
                print(f"failed as TaskFailed: {exc.error.kind}: {exc.error.message}")
            try:
                slow.sync.delay().get(timeout=0.5)
            except ebind.TaskTimeout:
                print("timed out as TaskTimeout:", True)

            dag = DAG()
            first = dag.step("first", add, 10, 20)
            dag.step("second", add, first.ref(), signal_ref("bump"))
            app.sync.submit(dag)
            print("dag step:", app.sync.result(dag.id, first, timeout=30))
            app.sync.signal(dag.id, "bump", 1)
            print("after signal:", app.sync.result(dag.id, "second", timeout=30))
        finally:
            app.sync.close()
            worker.terminate()
            worker.wait(30)


if __name__ == "__main__":
    main()

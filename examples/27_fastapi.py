"""FastAPI: the App connects in the lifespan, endpoints enqueue and await results.

One endpoint enqueues and answers at once with the task id; another awaits that task's
result by id (from any request, any process of the same client id). A plain ``def``
endpoint, which FastAPI runs in its thread pool, uses the blocking API and shares the
lifespan's connection. The worker runs in-process here, started by the lifespan too; in
production it is a separate ``ebind worker -A yourapp:app``. Driven by FastAPI's
``TestClient`` (httpx, no socket).

# expect: POST /add -> 202 task id
# expect: GET /result -> 200 {'task_id': 'same', 'result': 5}
# expect: GET /add-sync -> 200 {'result': 42}
# expect: GET /result of a failing task -> 422 bad_input: negative input: -1
# expect: GET /result of an unknown task -> 504 no result within 0.3 s
# expect: GET /result with a wildcard id -> 400 InvalidName
# expect: lifespan closed the App: True
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from pydantic import BaseModel

import ebind
import ebind.logging
from ebind.embed import start_node
from ebind.errors import InvalidName

app = ebind.App("fastapi-demo")


@app.task(name="fastapi_demo.add")
async def add(a: int, b: int) -> int:
    if a < 0 or b < 0:
        raise ebind.NonRetryable(f"negative input: {min(a, b)}", kind="bad_input")
    return a + b


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    # One connection for the whole web process, opened before the first request.
    async with app:
        worker = app.worker(concurrency=8, scheduler=False)
        running = asyncio.create_task(worker.run())
        try:
            yield
        finally:
            await worker.stop()
            await running


api = FastAPI(lifespan=lifespan)


class AddRequest(BaseModel):
    a: int
    b: int


@api.post("/add", status_code=202)
async def enqueue_add(req: AddRequest) -> dict[str, str]:
    fut = await add.delay(req.a, req.b)
    # The token proves the caller enqueued it: only this task's own answer is taken then.
    return {"task_id": fut.id, "token": fut.token}


@api.get("/result/{task_id}")
async def result(task_id: str, wait: float = 10.0, token: str | None = None) -> dict[str, object]:
    try:
        fut = app.future(task_id, token=token)
        value = await fut.result(timeout=wait)
    except InvalidName as exc:
        raise HTTPException(400, f"InvalidName: {exc}") from exc
    except ebind.TaskFailed as exc:
        raise HTTPException(422, f"{exc.error.kind}: {exc.error.message}") from exc
    except ebind.TaskTimeout as exc:
        raise HTTPException(504, f"no result within {wait} s") from exc
    return {"task_id": task_id, "result": value}


@api.get("/add-sync")
def add_sync(a: int, b: int) -> dict[str, int]:
    # A plain def runs in FastAPI's thread pool: the blocking call is handed to the
    # lifespan's loop and uses its connection (nothing connects per request).
    return {"result": add.sync.delay(a, b).get(timeout=10)}


def main() -> None:
    ebind.logging.configure(level="warning")
    with start_node() as node:
        app.servers = [node.client_url]
        with TestClient(api) as client:
            resp = client.post("/add", json={"a": 2, "b": 3})
            task_id, token = resp.json()["task_id"], resp.json()["token"]
            print(f"POST /add -> {resp.status_code} task id" if task_id else "no id")

            resp = client.get(f"/result/{task_id}", params={"token": token})
            body = resp.json()
            same = "same" if body["task_id"] == task_id else body["task_id"]
            print(f"GET /result -> {resp.status_code}", {"task_id": same, "result": body["result"]})

            resp = client.get("/add-sync", params={"a": 40, "b": 2})
            print(f"GET /add-sync -> {resp.status_code}", resp.json())

            failing = client.post("/add", json={"a": -1, "b": 2}).json()["task_id"]
            resp = client.get(f"/result/{failing}")
            print(f"GET /result of a failing task -> {resp.status_code}", resp.json()["detail"])

            resp = client.get("/result/no-such-task", params={"wait": 0.3})
            print(f"GET /result of an unknown task -> {resp.status_code}", resp.json()["detail"])

            resp = client.get("/result/*")
            detail = resp.json()["detail"]
            print(f"GET /result with a wildcard id -> {resp.status_code}", detail.split(":")[0])
        print("lifespan closed the App:", app._nc is None)


if __name__ == "__main__":
    main()

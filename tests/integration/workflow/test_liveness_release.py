"""A step retried on another worker leaves nothing behind in the first worker's liveness."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from wf_app import app as shared_app

from ebind import Context, RetryPolicy
from ebind.app import App
from ebind.streams import KV_LEASES, b64_token
from ebind.workflow import DAG

_attempts: list[str] = []
T = TypeVar("T")


async def settled(
    read: Callable[[], Awaitable[T]], accept: Callable[[T], bool], within: float
) -> T:
    """Read until ``accept`` holds or ``within`` seconds pass; the last value read."""
    deadline = asyncio.get_running_loop().time() + within
    value = await read()
    while not accept(value) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        value = await read()
    return value


@shared_app.task(
    name="wfl.not_on_a",
    retry=RetryPolicy(initial_interval=0.1, backoff_coefficient=1.0, maximum_attempts=50),
)
async def not_on_a(ctx: Context) -> str:
    _attempts.append(ctx.worker_id)
    if ctx.worker_id == "a":
        raise RuntimeError("worker a cannot run this step")
    return ctx.worker_id


async def listed_steps(app: App, worker_id: str) -> list[str] | None:
    """The steps ``worker_id``'s liveness record lists (None: no record)."""
    from nats.js.errors import KeyNotFoundError

    kv = await app.js.key_value(KV_LEASES)
    try:
        entry = await kv.get(f"alive.{b64_token(worker_id)}")
    except KeyNotFoundError:
        return None
    steps: list[str] = msgspec.json.decode(entry.value or b"{}").get("steps", [])
    return steps


async def test_step_failing_on_a_and_retried_on_b_leaves_no_entry_in_as_record(
    app: App, start_worker: Any
) -> None:
    _attempts.clear()
    a = await start_worker("a")
    dag = DAG(id="retried-elsewhere")
    step = dag.step("s", not_on_a)
    await dag.submit(app.workflow)

    async def attempts_on_a() -> int:
        return _attempts.count("a")

    assert await settled(attempts_on_a, lambda n: n >= 2, 10) >= 2  # retried at least once on a
    await start_worker("b")
    assert await app.workflow.result(dag.id, step, timeout=30) == "b"
    # Released steps stay listed until their redelivery was due plus a grace (1 s here).
    listed = await settled(lambda: listed_steps(app, "a"), lambda v: v == [], 10)
    assert listed == [], f"worker a still announces {listed} after the step finished on b"
    assert a._hook.announced("a") == []
    assert not a._hook._claims

"""Middleware: wrap every task attempt, see the final outcome, and log one line per attempt.

A middleware is ``mw(next_handler) -> handler``; the first in the list is the outermost and
ebind's ``recover`` is always innermost, so middlewares see handler failures as
``AttemptError`` with a kind. Whether a failed attempt is retried or dead-lettered is decided
after the chain, so a middleware that wants the final outcome registers a listener.

# expect: audit: audited.double attempt 1 -> succeeded
# expect: audit: audited.flaky attempt 1 -> retrying (handler)
# expect: audit: audited.flaky attempt 2 -> succeeded
# expect: audit: audited.broken attempt 1 -> dead_lettered (handler)
# expect: double(21) = 42, flaky() = ok, broken failed: handler
# expect: canonical log lines: 4
"""

from __future__ import annotations

import asyncio

import structlog.testing

import ebind
from ebind.context import Context
from ebind.embed import start_node
from ebind.wire import TaskEnvelope, TaskError
from ebind.worker import Handler, add_outcome_listener, log_middleware

app = ebind.App("middleware")
audit: list[str] = []


def audit_middleware(next_handler: Handler) -> Handler:
    """Record every attempt's final outcome (a metrics middleware would do the same)."""

    async def handler(ctx: Context, env: TaskEnvelope) -> bytes:
        def done(outcome: str, error: TaskError | None) -> None:
            kind = f" ({error.kind})" if error else ""
            audit.append(f"{ctx.name} attempt {ctx.attempt} -> {outcome}{kind}")

        add_outcome_listener(ctx, done)
        return await next_handler(ctx, env)

    return handler


@app.task(name="audited.double")
async def double(n: int) -> int:
    return n * 2


calls = 0


@app.task(name="audited.flaky", retry=ebind.RetryPolicy(initial_interval=0.05, maximum_attempts=3))
async def flaky() -> str:
    global calls
    calls += 1
    if calls == 1:
        raise ConnectionError("first call fails")
    return "ok"


@app.task(name="audited.broken", retry=ebind.RetryPolicy.none())
def broken() -> None:
    raise RuntimeError("always")


async def main() -> None:
    # Capture structlog output (instead of printing it) to count the canonical lines.
    with structlog.testing.capture_logs() as logs, start_node() as node:
        app.servers = [node.client_url]
        async with app:
            worker = app.worker(middleware=[audit_middleware, log_middleware], scheduler=False)
            running = asyncio.create_task(worker.run())
            try:
                await worker.wait_ready()
                a = await (await double.delay(21)).result(timeout=10)
                b = await (await flaky.delay()).result(timeout=10)
                try:
                    await (await broken.delay()).result(timeout=10)
                    c = "no error?"
                except ebind.TaskFailed as exc:
                    c = exc.error.kind
            finally:
                await worker.stop()
                await running
    for line in audit:
        print("audit:", line)
    print(f"double(21) = {a}, flaky() = {b}, broken failed: {c}")
    lines = [e for e in logs if str(e["event"]).startswith("task.")]
    print("canonical log lines:", len(lines))


if __name__ == "__main__":
    asyncio.run(main())

"""Task options end to end: retries, countdown, deadlines, targets and the dead-letter queue.

# expect: flaky succeeded on attempt 3
# expect: countdown result: 2
# expect: deadline passed: deadline
# expect: ran on: gpu-1
# expect: dead letter: payments.charge nonretryable-card
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import ebind
import ebind.logging
from ebind.embed import start_node

app = ebind.App("guide")


# --8<-- [start:retry]
@app.task(
    name="flaky",
    retry=ebind.RetryPolicy(initial_interval=0.05, maximum_attempts=5),
    timeout=30,  # seconds one attempt may run
)
def flaky(ctx: ebind.Context) -> int:
    if ctx.attempt < 3:
        raise ConnectionError("upstream busy")  # retried after 0.05 s, then 0.1 s
    return ctx.attempt


@app.task(name="payments.charge", dont_retry=[KeyError])
async def charge(card: str) -> str:
    if card.startswith("bad"):
        raise ebind.NonRetryable("card refused", kind="nonretryable-card")  # no retry
    return "ok"


# --8<-- [end:retry]


@app.task
async def double(x: int) -> int:
    return 2 * x


@app.task(name="render")
def render(ctx: ebind.Context) -> str:
    return ctx.worker_id


async def main() -> None:
    ebind.logging.configure(level="error")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            # --8<-- [start:worker]
            worker = app.worker(concurrency=4, claims=["gpu-1"], scheduler=False)
            # --8<-- [end:worker]
            running = asyncio.create_task(worker.run())
            try:
                await run_examples(worker.worker_id)
            finally:
                await worker.stop()
                await running


async def run_examples(worker_id: str) -> None:
    """The producer side, as the tasks page shows it."""
    # --8<-- [start:call]
    attempt = await (await flaky.delay()).result(timeout=10)
    print(f"flaky succeeded on attempt {attempt}")

    later = await double.apply_async(args=(1,), countdown=0.5)  # runs no earlier than 0.5 s
    print("countdown result:", await later.result(timeout=10))
    at = datetime.now(UTC) + timedelta(seconds=0.2)
    await double.apply_async(args=(2,), eta=at)  # or an aware datetime

    # A task that cannot start before its deadline is dead-lettered with kind `deadline`.
    late = await double.apply_async(args=(3,), countdown=1, deadline=0.5)
    try:
        await late.result(timeout=10)
    except ebind.TaskFailed as exc:
        print("deadline passed:", exc.error.kind)

    # Only a worker that claims "gpu-1" runs this one.
    placed = await render.apply_async(target="gpu-1")
    print("ran on:", "gpu-1" if await placed.result(timeout=10) == worker_id else "?")

    try:
        await (await charge.delay("bad-4242")).result(timeout=10)
    except ebind.TaskFailed:
        letter = (await app.dlq.list())[-1]
        assert letter.task is not None
        print("dead letter:", letter.task.name, letter.entry.error.kind)
    # --8<-- [end:call]


if __name__ == "__main__":
    asyncio.run(main())

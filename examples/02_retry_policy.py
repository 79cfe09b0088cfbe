"""Retry policies: a flaky task succeeds on its third attempt; a NonRetryable one fails at once.

# expect: flaky succeeded after 3 attempts
# expect: strict failed with kind invalid_input: order -1 is not valid
# expect: dont_retry: ValueError failed once, kind handler
# expect: dead letters: 2
"""

from __future__ import annotations

import asyncio

import ebind
import ebind.logging
from ebind.embed import start_node

app = ebind.App("retries")
attempts: dict[str, int] = {}


@app.task(retry=ebind.RetryPolicy(initial_interval=0.2, maximum_attempts=5))
def flaky(ctx: ebind.Context, key: str) -> int:
    attempts[key] = ctx.attempt
    if ctx.attempt < 3:
        raise ConnectionError("temporary outage")
    return ctx.attempt


@app.task
def strict(order: int) -> None:
    raise ebind.NonRetryable(f"order {order} is not valid", kind="invalid_input")


@app.task(dont_retry=(ValueError,))
def picky(value: str) -> int:
    return int(value)


async def main() -> None:
    ebind.logging.configure(level="error")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            worker = app.worker(concurrency=4, scheduler=False)
            running = asyncio.create_task(worker.run())
            try:
                n = await (await flaky.delay("a")).result(timeout=20)
                print(f"flaky succeeded after {n} attempts")
                try:
                    await (await strict.delay(-1)).result(timeout=10)
                except ebind.TaskFailed as exc:
                    print(f"strict failed with kind {exc.error.kind}: {exc.error.message}")
                try:
                    await (await picky.delay("x")).result(timeout=10)
                except ebind.TaskFailed as exc:
                    print(f"dont_retry: ValueError failed once, kind {exc.error.kind}")
                for _ in range(50):
                    letters = await app.dlq.list()
                    if len(letters) == 2:
                        break
                    await asyncio.sleep(0.1)
                print("dead letters:", len(letters))
            finally:
                await worker.stop()
                await running


if __name__ == "__main__":
    asyncio.run(main())

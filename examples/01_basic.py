"""Basic tasks: register handlers, run a worker in-process, enqueue and await typed results.

Starts its own embedded nats-server, so it needs nothing running.

# expect: local call: 5
# expect: add(2, 3) = 5
# expect: greet -> hello, Ada (task greet, attempt 1)
# expect: user: User(id='u1', name='User u1')
# expect: by name: 42
"""

from __future__ import annotations

import asyncio

import msgspec

import ebind
import ebind.logging
from ebind.embed import start_node

app = ebind.App("basic")


class User(msgspec.Struct):
    id: str
    name: str


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task(name="greet")
def greet(ctx: ebind.Context, who: str) -> str:
    # Sync handlers run in the worker's thread pool; the Context tells them about the task.
    return f"hello, {who} (task {ctx.name}, attempt {ctx.attempt})"


@app.task
async def fetch_user(user_id: str) -> User:
    return User(id=user_id, name=f"User {user_id}")


async def main() -> None:
    ebind.logging.configure(level="warning")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            print("local call:", await add(2, 3))
            worker = app.worker(concurrency=4, scheduler=False)
            running = asyncio.create_task(worker.run())
            try:
                fut = await add.delay(2, 3)
                print("add(2, 3) =", await fut.result(timeout=10))
                print("greet ->", await (await greet.delay("Ada")).result(timeout=10))
                user = await (await fetch_user.delay(user_id="u1")).result(timeout=10)
                print("user:", repr(user))
                name = add.name  # producers without the code enqueue by name
                print("by name:", await (await app.enqueue(name, 40, 2)).result(timeout=10))
            finally:
                await worker.stop()
                await running


if __name__ == "__main__":
    asyncio.run(main())

import asyncio

from tasks import add, app, greet


async def main() -> None:
    async with app:
        fut = await add.delay(2, 3)  # returns once the server has stored the task
        print("add(2, 3) =", await fut.result(timeout=10))  # typed: int
        print(await (await greet.delay("Ada")).result(timeout=10))


asyncio.run(main())

# From sync code (a Django view, a script): no event loop, one shared connection.
print("sync:", add.sync.delay(40, 2).get(timeout=10))
